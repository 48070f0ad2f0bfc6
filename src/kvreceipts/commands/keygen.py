"""``kvreceipts keygen``: a new Ed25519 key pair for signed checkpoints, in the key formats
of Go's ``golang.org/x/mod/sumdb/note``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from kvreceipts.commands.output import Output
from kvreceipts.errors import InputError, UsageError

__all__ = ["keygen"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts keygen audit.example.com -o audit
  kvreceipts keygen team-kv -o keys/team-kv > team-kv.vkey

Writes PREFIX.key (the signer key, mode 0600: keep it secret) and PREFIX.pub (the verifier
key: publish it). Never overwrites: if either file exists, nothing is written (exit 2).
"""


def _create(path: Path, text: str, mode: int) -> None:
    """Write a new file that must not exist yet, with exactly ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def keygen(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The key's name, as signatures will carry it (e.g. the signing host or team): "
            "no spaces, no '+'.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="PREFIX",
            help="Write PREFIX.key (signer key, mode 0600) and PREFIX.pub (verifier key).",
            show_default=False,
            dir_okay=False,
        ),
    ],
) -> None:
    """Make an Ed25519 key pair for signed checkpoints (Go sumdb/note key formats).

    Prints the verifier key on stdout. PREFIX.key holds
    PRIVATE+KEY+<name>+<key id>+<base64> and PREFIX.pub <name>+<key id>+<base64>: give the
    .key file to simulate/watch --sign-key, and the .pub file to whoever verifies.
    Exit status: 0 written, 2 a file exists or cannot be written (nothing is written then).
    """
    from kvreceipts.proofs import note
    from kvreceipts.proofs.errors import FormatError

    out = Output()
    try:
        signer = note.generate(name)
    except FormatError as exc:
        raise UsageError(f"NAME: {exc}") from None
    key_path = Path(f"{output}.key")
    pub_path = Path(f"{output}.pub")
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise InputError("exists; keygen never overwrites a key (nothing was written)",
                             path=str(path))  # fmt: skip
    try:
        _create(key_path, signer.key_string + "\n", 0o600)
    except OSError as exc:
        raise InputError(f"cannot create the key file: {exc.strerror}",
                         path=str(key_path)) from None  # fmt: skip
    try:
        _create(pub_path, signer.verifier.key_string + "\n", 0o644)
    except OSError as exc:
        key_path.unlink()  # made a moment ago by this command: leave nothing half done
        raise InputError(f"cannot create the verifier key file: {exc.strerror} (nothing was "
                         "written)", path=str(pub_path)) from None  # fmt: skip
    out.write(f"{signer.verifier.key_string}\n".encode())
    out.flush()
    from rich.markup import escape

    out.note(escape(f"key {signer.verifier.label}: signer key in {key_path} (mode 0600, keep "
                    f"it secret), verifier key in {pub_path} (publish it)"))  # fmt: skip
