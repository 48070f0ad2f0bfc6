"""``kvreceipts keygen`` and ``kvreceipts verify-proof`` as a user (and an attacker) runs
them, with bundles built here from a run's real lines. (Go builds and checks bundles in
test_proofs_go.py; the lead's ``prove`` gets end-to-end tests of its own.)
"""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner, Result

from kvreceipts.cli import app
from kvreceipts.proofs import bundle, checkpoint, note
from kvreceipts.proofs.merkle import (
    consistency_proof_of,
    inclusion_proof_of,
    leaf_hash,
    root_of,
)

if TYPE_CHECKING:
    from pathlib import Path

runner = CliRunner()


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def flat(text: str) -> str:
    """Text as one line: rich wraps tables and verdicts at the console's width."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """One run's sealed lines, without their newlines: the leaves of its tree."""
    result = run("simulate", "--requests", "400", "--capacity-mb", "64", "-q", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    out = result.stdout.splitlines()
    assert len(out) > 20
    return out


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    result = run("keygen", "audit.example", "-o", str(tmp_path / "audit"))
    assert result.exit_code == 0, result.stderr
    return tmp_path / "audit.key", tmp_path / "audit.pub"


def _signer(key: Path) -> note.Signer:
    return note.parse_signer(key.read_text())


def _signed(lines: list[str], size: int, signer: note.Signer, run_id: str | None = None) -> str:
    run_id = run_id or json.loads(lines[0])["run_id"]
    root = root_of(leaf_hash(line.encode()) for line in lines[:size])
    return checkpoint.sign_checkpoint(
        checkpoint.Checkpoint(bundle.origin_for(run_id), size, root), signer)  # fmt: skip


def _proof(lines: list[str], index: int, signer: note.Signer, **changes: Any) -> dict[str, Any]:
    hashes = [leaf_hash(line.encode()) for line in lines]
    document = bundle.proof_bundle(
        run_id=json.loads(lines[0])["run_id"], record=lines[index], leaf_index=index,
        tree_size=len(lines), inclusion=inclusion_proof_of(hashes, index),
        checkpoint=_signed(lines, len(lines), signer))  # fmt: skip
    return document | changes


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def _verify(path: Path, pub: Path, *extra: str) -> Result:
    return run("verify-proof", str(path), "--vkey", str(pub), *extra)


# --- keygen ---


def test_keygen_writes_a_secret_key_and_a_public_one(keys: tuple[Path, Path]) -> None:
    key, pub = keys
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = note.parse_signer(key.read_text())
    assert key.read_text() == signer.key_string + "\n"
    assert pub.read_text() == signer.verifier.key_string + "\n"
    assert signer.name == "audit.example"


def test_keygen_prints_the_verifier_key_as_data(tmp_path: Path) -> None:
    result = run("keygen", "k", "-o", str(tmp_path / "k"))
    assert result.stdout == (tmp_path / "k.pub").read_text()
    assert "PRIVATE" not in flat(result.stdout)
    assert "k.key" in result.stderr


@pytest.mark.parametrize("existing", ["k.key", "k.pub"])
def test_keygen_never_overwrites_and_writes_nothing_when_it_refuses(
    tmp_path: Path, existing: str
) -> None:
    (tmp_path / existing).write_text("precious\n")
    result = run("keygen", "k", "-o", str(tmp_path / "k"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "never overwrites" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert (tmp_path / existing).read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]
    assert result.stdout == ""


def test_keygen_refuses_bad_names_and_missing_directories(tmp_path: Path) -> None:
    for name in ("a b", "a+b", ""):
        result = run("keygen", name, "-o", str(tmp_path / "k"))
        assert result.exit_code == 2, name
        assert result.stderr.startswith("error: ")
    result = run("keygen", "k", "-o", str(tmp_path / "no" / "such" / "k"))
    assert result.exit_code == 2
    assert "cannot create" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- verify-proof: valid ---


@pytest.mark.needs("receipts")  # its run is simulated
def test_a_valid_proof_prints_the_receipt_and_exits_0(
    tmp_path: Path, lines: list[str], keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    signer = _signer(key)
    for index in (0, 1, len(lines) // 2, len(lines) - 1):
        path = _write(tmp_path / "p.json", _proof(lines, index, signer))
        result = _verify(path, pub)
        assert result.exit_code == 0, result.stdout + result.stderr
        record = json.loads(lines[index])
        assert f"seq {index:,}" in flat(result.stdout)
        assert record["kind"] in flat(result.stdout)
        assert f"in run {record['run_id']}'s tree of {len(lines):,} records" in flat(result.stdout)
        assert "signed by audit.example+" in flat(result.stdout)
        as_json = _verify(path, pub, "--format", "json")
        assert as_json.exit_code == 0
        document = json.loads(as_json.stdout)
        assert document["valid"] is True
        assert document["record"] == record
        assert (document["leaf_index"], document["tree_size"]) == (index, len(lines))
        assert document["origin"] == f"kvreceipts/run/{record['run_id']}"
        assert document["signer"] == signer.verifier.label


@pytest.mark.needs("receipts")  # its run is simulated
def test_a_session_bundle_proves_each_record(
    tmp_path: Path, lines: list[str], keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    signer = _signer(key)
    hashes = [leaf_hash(line.encode()) for line in lines]
    picked = [1, 2, 7, len(lines) - 2]
    document = bundle.session_bundle(
        run_id=json.loads(lines[0])["run_id"], tree_size=len(lines),
        checkpoint=_signed(lines, len(lines), signer), session_id="chat-1",
        proofs=[(lines[i], i, inclusion_proof_of(hashes, i)) for i in picked])  # fmt: skip
    path = _write(tmp_path / "s.json", document)
    result = _verify(path, pub, "-f", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    got = json.loads(result.stdout)
    assert [p["leaf_index"] for p in got["proofs"]] == picked
    assert [p["record"] for p in got["proofs"]] == [json.loads(lines[i]) for i in picked]
    table = _verify(path, pub)
    assert table.exit_code == 0
    assert "4 proven receipts" in flat(table.stdout)
    # One edited record among them fails the whole bundle, and says which.
    document["proofs"][2]["record"] = document["proofs"][2]["record"].replace('"seq":', '"seq": ')
    result = _verify(_write(path, document), pub)
    assert result.exit_code == 1
    assert "proofs[2] (leaf 7)" in flat(result.stdout)


@pytest.mark.needs("receipts")  # its run is simulated
def test_a_consistency_bundle_checks_against_the_older_note(
    tmp_path: Path, lines: list[str], keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    signer = _signer(key)
    hashes = [leaf_hash(line.encode()) for line in lines]
    run_id = json.loads(lines[0])["run_id"]
    old, new = 9, len(lines)
    document = bundle.consistency_bundle(
        run_id=run_id, old_size=old, new_size=new,
        consistency=consistency_proof_of(hashes, old),
        checkpoint=_signed(lines, new, signer))  # fmt: skip
    path = _write(tmp_path / "c.json", document)
    old_note = _write(tmp_path / "old.note", _signed(lines, old, signer))
    result = _verify(path, pub, "--old-checkpoint", str(old_note))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"tree of {old:,} records" in flat(result.stdout)
    got = json.loads(_verify(path, pub, "--old-checkpoint", str(old_note), "-f", "json").stdout)
    assert (got["valid"], got["old_size"], got["new_size"]) == (True, old, new)
    # A rewritten history: the old note signs a tree whose leaf 3 differs.
    rewritten = [*lines[:3], lines[3].replace('"seq":3', '"seq":3 '), *lines[4:]]
    _write(old_note, _signed(rewritten, old, signer))
    result = _verify(path, pub, "--old-checkpoint", str(old_note))
    assert result.exit_code == 1
    assert "old root" in flat(result.stdout)
    # The old note of another size, another run, another key.
    twin = note.generate("audit.example")
    for other, why in [(_signed(lines, old + 1, signer), "old_size"),
                       (_signed(lines, old, signer, run_id="other"), "not of this run"),
                       (_signed(lines, old, twin), "no verifiable")]:  # fmt: skip
        result = _verify(path, pub, "--old-checkpoint", str(_write(old_note, other)))
        assert result.exit_code == 1, why
        assert why in flat(result.stdout)
    # Without --old-checkpoint, or with it on an inclusion bundle: unusable (2).
    assert _verify(path, pub).exit_code == 2
    proof = _write(tmp_path / "p.json", _proof(lines, 1, signer))
    assert _verify(proof, pub, "--old-checkpoint", str(old_note)).exit_code == 2
    result = _verify(path, pub, "--old-checkpoint", str(_write(old_note, "not a note")))
    assert result.exit_code == 2
    assert "not a signed note" in result.stderr


# --- verify-proof: attackers (exit 1, saying what failed) ---


def _attack(tmp_path: Path, pub: Path, document: Any, why: str) -> None:
    result = _verify(_write(tmp_path / "a.json", document), pub)
    assert result.exit_code == 1, (why, result.stdout, result.stderr)
    assert "INVALID" in flat(result.stdout)
    assert why in flat(result.stdout), result.stdout
    as_json = _verify(tmp_path / "a.json", pub, "-f", "json")
    assert as_json.exit_code == 1
    got = json.loads(as_json.stdout)
    assert got["valid"] is False
    assert why in got["reason"]


@pytest.mark.needs("receipts")  # its run is simulated
def test_attacks_are_invalid(tmp_path: Path, lines: list[str], keys: tuple[Path, Path]) -> None:
    key, pub = keys
    signer = _signer(key)
    index = len(lines) // 2
    good = _proof(lines, index, signer)
    # An edited record.
    record = good["record"].replace('"kind":"', '"kind":"x', 1)
    _attack(tmp_path, pub, good | {"record": record}, "does not lead to the root")
    # An edited path hash.
    path = list(good["inclusion"])
    path[1] = ("0" if path[1][0] != "0" else "1") + path[1][1:]
    _attack(tmp_path, pub, good | {"inclusion": path}, "does not lead to the root")
    # A wrong index (the record proven as another leaf), and one past the tree.
    _attack(tmp_path, pub, good | {"leaf_index": index + 1}, "inclusion")
    _attack(tmp_path, pub, good | {"leaf_index": len(lines)}, "not in a tree")
    # Another leaf's record under this leaf's valid path.
    other = _proof(lines, index + 1, signer)
    _attack(tmp_path, pub, other | {"record": lines[index]}, "does not lead to the root")
    # A checkpoint signed by another key, and by a key with the right name but another id.
    stranger = note.generate("someone.else")
    _attack(tmp_path, pub, good | {"checkpoint": _signed(lines, len(lines), stranger)},
            "no verifiable signatures")  # fmt: skip
    twin = note.generate("audit.example")
    _attack(tmp_path, pub, good | {"checkpoint": _signed(lines, len(lines), twin)},
            "same name but another id")  # fmt: skip
    # A truncated note; a note whose body was edited under the signature.
    _attack(tmp_path, pub, good | {"checkpoint": good["checkpoint"][:-20]}, "malformed note")
    edited = good["checkpoint"].replace(f"\n{len(lines)}\n", f"\n{len(lines) + 1}\n")
    _attack(tmp_path, pub, good | {"checkpoint": edited}, "invalid signature")
    # The checkpoint of another size, or of another run, under a valid signature.
    _attack(tmp_path, pub, good | {"checkpoint": _signed(lines, len(lines) - 1, signer)},
            "tree_size")  # fmt: skip
    _attack(tmp_path, pub, good | {"checkpoint": _signed(lines, len(lines), signer, "x")},
            "not of this run")  # fmt: skip
    # A record of another run, or whose seq is not its leaf: a valid tree, a wrong claim.
    forged = [line.replace('"seq":', '"seq":1') if i == 2 else line
              for i, line in enumerate(lines)]  # fmt: skip
    _attack(tmp_path, pub, _proof(forged, 2, signer), "leaf_index 2")


# --- verify-proof: unusable input (exit 2, one line) ---


def _unusable(result: Result, why: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.splitlines()) == 1
    assert why in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.needs("receipts")  # its run is simulated
def test_unusable_input_is_one_line_and_exit_2(
    tmp_path: Path, lines: list[str], keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    good = _write(tmp_path / "p.json", _proof(lines, 3, _signer(key)))
    _unusable(_verify(good, key), "signer (private) key")  # a swapped .key and .pub
    _unusable(_verify(good, tmp_path / "nothere.pub"), "not found")
    _unusable(_verify(tmp_path / "nothere.json", pub), "not found")
    _unusable(_verify(good, _write(tmp_path / "bad.pub", "audit.example+1234+AAAA")),
              "malformed verifier key")  # fmt: skip
    _unusable(_verify(_write(tmp_path / "x.json", "{not json"), pub), "not JSON")
    _unusable(_verify(_write(tmp_path / "x.json", "[]"), pub), "not a proof bundle")
    _unusable(_verify(_write(tmp_path / "x.json", '{"format": "other/1"}'), pub), "format")
    document = json.loads(good.read_text())
    for changes, why in [
        ({"leaf_index": True}, "leaf_index: expected an integer, found a boolean"),
        ({"leaf_index": -1}, "leaf_index: -1 is out of range"),
        ({"tree_size": 1.0}, "tree_size: expected an integer"),
        ({"inclusion": ["AB" * 32]}, "inclusion[0]: expected 64 lowercase hex"),
        ({"inclusion": "00"}, "inclusion: expected an array"),
        ({"record": {"seq": 3}}, "record: expected a string"),
        ({"record": document["record"] + "\n"}, "one line"),
        ({"checkpoint": None}, "checkpoint: expected a string, found null"),
        ({"extra": 1}, "unknown field 'extra'"),
        ({"run_id": "a b"}, "run_id"),
    ]:
        _unusable(_verify(_write(tmp_path / "x.json", document | changes), pub), why)
    del document["tree_size"]
    _unusable(_verify(_write(tmp_path / "x.json", document), pub), "missing field 'tree_size'")
    text = good.read_text()
    _unusable(_verify(_write(tmp_path / "x.json", text[:-1] + ', "run_id": "y"}'), pub),
              "appears twice")  # fmt: skip
    _unusable(
        _verify(
            _write(tmp_path / "x.json", text.replace('"leaf_index": 3', '"leaf_index": NaN')), pub
        ),
        "NaN",
    )


@pytest.mark.needs("receipts")  # its run is simulated
def test_the_independent_check_in_the_docs_works(
    tmp_path: Path, lines: list[str], keys: tuple[Path, Path]
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    docs = Path(__file__).parent.parent / "docs" / "proofs.md"
    text = docs.read_text(encoding="utf-8").partition("<!-- independent-check -->\n```python\n")[2]
    program = _write(tmp_path / "check.py", text.partition("```")[0])
    key, pub = keys
    signer = _signer(key)

    def check(document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = _write(tmp_path / "b.json", document)
        return subprocess.run([sys.executable, str(program), str(path), str(pub)],
                              capture_output=True, text=True, check=False)  # fmt: skip

    for index in (0, 5, len(lines) - 1):
        good = _proof(lines, index, signer)
        done = check(good)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"valid: {lines[index]}\n"
        edited = good["record"].replace('"seq":', '"seq": ')
        assert check(good | {"record": edited}).returncode != 0
        assert check(good | {"leaf_index": index ^ 1}).returncode != 0
        twin = note.generate("audit.example")
        stranger = check(good | {"checkpoint": _signed(lines, len(lines), twin)})
        assert "not signed by this key" in stranger.stderr


def test_key_files_are_read_for_commands(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from kvreceipts.errors import InputError
    from kvreceipts.proofs.keyfiles import read_signer, read_verifier

    key, pub = keys
    assert read_signer(key).verifier == read_verifier(pub)
    with pytest.raises(InputError, match=r"audit\.pub: this is a verifier \(public\) key"):
        read_signer(pub)
    with pytest.raises(InputError, match=r"audit\.key: this is a signer \(private\) key") as exc:
        read_verifier(key)
    secret = key.read_text().strip().split("+", 4)[4]  # PRIVATE+KEY+name+id+base64 (has "+")
    assert secret not in str(exc.value)
    with pytest.raises(InputError, match="not found"):
        read_signer(tmp_path / "none.key")
    (tmp_path / "bin.pub").write_bytes(b"\xff")
    with pytest.raises(InputError, match="not UTF-8"):
        read_verifier(tmp_path / "bin.pub")
