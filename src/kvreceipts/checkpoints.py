"""How a run publishes its Merkle tree: checkpoint records and signed notes.

A checkpoint names the run's tree by its size and root. Signed, it is a C2SP signed note
over a C2SP ``tlog-checkpoint`` body whose origin names the run, so a third party holding
only the signer's public key can check it (``kvreceipts verify --vkey``, ``verify-proof``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kvreceipts.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.proofs.merkle import Frontier
    from kvreceipts.proofs.note import Signer

__all__ = ["Checkpoints", "make_checkpoints", "origin"]

log = logging.getLogger("kvreceipts.kv.receipts")


def origin(run_id: str) -> str:
    """The checkpoint origin of a run (:func:`kvreceipts.proofs.bundle.origin_for`)."""
    from kvreceipts.proofs.bundle import origin_for  # only a signed run needs the formats

    return origin_for(run_id)


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """What a run does with its tree: sign it, write it every ``every`` records, and hand
    each signed note to ``publish`` (e.g. ``--checkpoint-out``).
    """

    signer: Signer | None = None
    every: int = 0
    """Write a ``checkpoint`` record once this many records followed the last one (0:
    only the close record states the tree)."""
    publish: Callable[[str], None] | None = None

    def note(self, run_id: str, size: int, root: bytes) -> str | None:
        """The signed note of the run's tree at ``size`` (``None`` without a signer)."""
        if self.signer is None:
            return None
        from kvreceipts.proofs.checkpoint import Checkpoint, sign_checkpoint

        return sign_checkpoint(Checkpoint(origin(run_id), size, root), self.signer)

    def state(self, run_id: str, tree: Frontier) -> tuple[int, str, str | None]:
        """What a record sealed next states of ``tree``: its size, hex root, signed note."""
        size, root = tree.size, tree.root()
        return size, root.hex(), self.note(run_id, size, root)

    def share(self, note: str | None) -> bool:
        """Hand a signed note to :attr:`publish`; ``False`` if that failed (logged)."""
        if note is None or self.publish is None:
            return True
        try:
            self.publish(note)
        except Exception:
            log.warning("publishing the checkpoint failed", exc_info=True)
            return False
        return True


def _publisher(path: Path) -> Callable[[str], None]:
    """Write each note to ``path`` atomically: a reader sees the old note or the new one."""

    def publish(note: str) -> None:
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(note)
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    return publish


def make_checkpoints(
    sign_key: str | Path | None, every: int, out: str | Path | None
) -> Checkpoints | None:
    """The checkpoints a command's ``--sign-key``, ``--checkpoint-every`` and
    ``--checkpoint-out`` ask for (``None``: the defaults, an unsigned root in the close).
    """
    if out is not None and sign_key is None:
        raise UsageError("--checkpoint-out keeps signed checkpoints: give --sign-key too")
    if sign_key is None and not every:
        return None
    signer = None
    if sign_key is not None:
        from kvreceipts.proofs.keyfiles import read_signer

        signer = read_signer(sign_key)
    publish = None
    if out is not None:
        target = Path(out)
        if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
            raise UsageError(f"--checkpoint-out {out}: its directory does not exist or "
                             "cannot be written")  # fmt: skip
        publish = _publisher(target)
    return Checkpoints(signer=signer, every=every, publish=publish)
