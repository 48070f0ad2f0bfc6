"""Receipts anyone can check: signed checkpoints in real runs, ``verify --vkey``, ``prove`` and
``verify-proof`` end to end, and an attacker without the signer key trying each way round them.

The attacker here is the strongest one SHA-256 allows: after an edit it recomputes every
digest *and* every Merkle root, so only the Ed25519 signature can catch it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from kvreceipts.chain import canonical, chain_digest
from kvreceipts.checkpoints import origin
from kvreceipts.cli import app
from kvreceipts.proofs import note
from kvreceipts.proofs.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from kvreceipts.proofs.merkle import (
    Frontier,
    RangeCover,
    check_consistency,
    check_inclusion,
    leaf_hash,
)
from kvreceipts.schema import ZERO_DIGEST

pytestmark = pytest.mark.needs("receipts")

runner = CliRunner()


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    signer = note.generate("kvreceipts-test-signer")
    (folder / "k.key").write_text(signer.key_string + "\n")
    (folder / "k.pub").write_text(signer.verifier.key_string + "\n")
    return folder / "k.key", folder / "k.pub"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    path = tmp_path_factory.mktemp("run") / "signed.jsonl"
    result = run("simulate", "-q", "-f", "json", "-o", str(path), "--sign-key", str(keys[0]),
                 "--checkpoint-every", "100")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def attacker_reseal(edited: list[dict[str, Any]]) -> bytes:
    """Recompute every digest, every tree_size/root and close.head: what anyone can do to a
    SHA-256 run. Signed notes are kept as they were (forging one needs the signer key).
    """
    out, prev, tree = [], ZERO_DIGEST, Frontier()
    for record in edited:
        body = {k: v for k, v in record.items() if k != "digest"}
        if body["kind"] in ("checkpoint", "close"):
            body["tree_size"], body["root"] = tree.size, tree.root().hex()
        if body["kind"] == "close":
            body["head"] = prev
        payload = canonical(body)
        digest = chain_digest(prev, payload)
        line = payload[:-1] + b',"digest":"%b"}' % digest.encode()
        tree.append(leaf_hash(line))
        out.append(line + b"\n")
        prev = digest
    return b"".join(out)


def verify_json(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run("verify", str(path), "--format", "json", *args)
    return result.exit_code, json.loads(result.stdout)


def checks(report: dict[str, Any]) -> set[str]:
    return {v["check"] for v in report["violations"]}


# -- a genuine signed run -----------------------------------------------------------------


def test_a_signed_run_verifies_with_its_public_key(signed: Path, keys: tuple[Path, Path]) -> None:
    code, report = verify_json(signed, "--vkey", str(keys[1]))
    assert code == 0, report["violations"]
    assert report["signatures"] == "verified"
    assert report["authentication"] == "signed"
    kinds = report["kinds"]
    assert kinds["checkpoint"] >= 5  # every 100 records
    assert report["checkpoints"] == kinds["checkpoint"] + kinds["close"]
    # Without the key the verdict says the signatures were not checked.
    code, report = verify_json(signed)
    assert code == 0
    assert report["signatures"] == "unchecked"
    text = run("verify", str(signed))
    assert "not checked" in text.stdout
    assert "--vkey" in text.stdout


def test_each_checkpoint_signs_the_tree_of_the_records_before_it(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    verifier = note.parse_verifier(keys[1].read_text().strip())
    lines = signed.read_bytes().splitlines()
    tree, seen = Frontier(), 0
    for line in lines:
        record = orjson.loads(line)
        if record["kind"] in ("checkpoint", "close"):
            checkpoint, _ = open_checkpoint(record["checkpoint"], [verifier])
            assert checkpoint.origin == origin(record["run_id"])
            assert checkpoint.size == record["tree_size"] == record["seq"] == tree.size
            assert checkpoint.root == tree.root() == bytes.fromhex(record["root"])
            seen += 1
        tree.append(leaf_hash(line))
    assert seen == len([r for r in records(signed) if r["kind"] in ("checkpoint", "close")])


def test_checkpoint_out_keeps_the_newest_note(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    out, note_file = tmp_path / "r.jsonl", tmp_path / "latest.note"
    result = run("simulate", "-q", "-f", "json", "-o", str(out), "--sign-key", str(keys[0]),
                 "--checkpoint-out", str(note_file))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert note_file.read_text() == records(out)[-1]["checkpoint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.note", "r.jsonl"]  # no temp left


# -- an attacker without the signer key ---------------------------------------------------


def _edited(signed: Path) -> list[dict[str, Any]]:
    edited = records(signed)
    victim = next(r for r in edited if r["kind"] == "eviction" and r["seq"] > 150)
    victim["session_id"] = "someone-else"
    return edited


def test_an_edit_rechained_with_new_roots_passes_without_the_key(
    signed: Path, tmp_path: Path
) -> None:
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(attacker_reseal(_edited(signed)))
    code, report = verify_json(forged)
    # SHA-256 and the roots are public: without --vkey this is indistinguishable...
    assert code == 0
    assert report["authentication"] == "none"


def test_an_edit_rechained_with_new_roots_fails_the_signature(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(attacker_reseal(_edited(signed)))
    code, report = verify_json(forged, "--vkey", str(keys[1]))
    assert code == 1
    assert report["signatures"] == report["authentication"] == "failed"
    assert "tree" in checks(report)
    assert any("signed size and root" in v["message"] for v in report["violations"])


def test_an_edit_without_new_roots_fails_even_unsigned(signed: Path, tmp_path: Path) -> None:
    edited = _edited(signed)
    out, prev = [], ZERO_DIGEST
    for record in edited:  # re-chained, roots left as they were
        body = {k: v for k, v in record.items() if k != "digest"}
        if body["kind"] == "close":
            body["head"] = prev
        payload = canonical(body)
        prev = chain_digest(prev, payload)
        out.append(payload[:-1] + b',"digest":"%b"}\n' % prev.encode())
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"".join(out))
    code, report = verify_json(forged)
    assert code == 1
    assert "tree" in checks(report)


def test_dropping_the_signatures_fails_with_the_key(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    stripped = [{k: v for k, v in r.items() if k != "checkpoint"} for r in _edited(signed)]
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(attacker_reseal(stripped))
    code, report = verify_json(forged, "--vkey", str(keys[1]))
    assert code == 1
    assert "auth" in checks(report)


def test_a_checkpoint_signed_by_another_key_fails(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    other = note.generate("kvreceipts-test-signer")  # the same name, another key
    edited = _edited(signed)
    for record in edited:  # the attacker signs its own trees with its own key
        record.pop("checkpoint", None)
    resealed = [orjson.loads(line) for line in attacker_reseal(edited).splitlines()]
    for record in resealed:
        if record["kind"] in ("checkpoint", "close"):
            record["checkpoint"] = sign_checkpoint(Checkpoint(
                origin(record["run_id"]), record["tree_size"], bytes.fromhex(record["root"])
            ), other)  # fmt: skip
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(attacker_reseal(resealed))
    code, report = verify_json(forged, "--vkey", str(keys[1]))
    assert code == 1
    assert report["signatures"] == "failed"
    assert any("checkpoint:" in v["message"] for v in report["violations"])


def test_a_loss_record_cannot_stand_in_for_rewritten_records(signed: Path, tmp_path: Path) -> None:
    """Issue 23's attack: rewrite every eviction, declare a loss whose last_lost_digest is the
    real record before close, keep the genuine close: the root in the close still binds the
    genuine records, so the rewritten ones fail, with an anchor and --allow-loss.
    """
    genuine = records(signed)
    close = genuine[-1]
    forged_records = []
    for record in genuine[:-2]:
        rewritten = record["kind"] == "eviction"
        forged_records.append({**record, "session_id": "rewritten"} if rewritten else record)
    body = b"".join(attacker_reseal(forged_records).splitlines(keepends=True))
    last = orjson.loads(body.splitlines()[-1])
    loss = {
        "kind": "loss", "run_id": close["run_id"], "seq": close["seq"] - 1,
        "timestamp": close["timestamp"], "alg": "sha256", "sink": "http",
        "first_seq": close["seq"] - 1, "last_seq": close["seq"] - 1, "count": 1,
        "prev_digest": last["digest"], "last_lost_digest": genuine[-2]["digest"],
        "lost_counts": {genuine[-2]["kind"]: 1},
        "lost_tree": [leaf_hash(signed.read_bytes().splitlines()[-2]).hex()],
    }  # fmt: skip
    payload = canonical(loss)
    loss_line = (
        payload[:-1] + b',"digest":"%b"}\n' % chain_digest(loss["prev_digest"], payload).encode()
    )
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(body + loss_line + signed.read_bytes().splitlines(keepends=True)[-1])
    code, report = verify_json(forged, "--allow-loss", "--expect-last-digest", close["digest"])
    assert code == 1
    assert "tree" in checks(report)


# -- prove and verify-proof ---------------------------------------------------------------


def test_a_proved_receipt_checks_against_the_signed_root(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle_path = tmp_path / "p.json"
    result = run("prove", str(signed), "--seq", "42", "-o", str(bundle_path))
    assert result.exit_code == 0, result.stderr
    bundle = json.loads(bundle_path.read_text())
    assert bundle["format"] == "kvreceipts.proof/1"
    line = signed.read_bytes().splitlines()[42]
    assert bundle["record"].encode() == line
    assert bundle["leaf_index"] == 42
    verifier = note.parse_verifier(keys[1].read_text().strip())
    checkpoint, _ = open_checkpoint(bundle["checkpoint"], [verifier])
    assert checkpoint.size == bundle["tree_size"]
    check_inclusion(leaf_hash(line), 42, checkpoint.size,
                    [bytes.fromhex(h) for h in bundle["inclusion"]], checkpoint.root)  # fmt: skip
    # Written once: a second prove to the same file refuses and leaves it as it was.
    again = run("prove", str(signed), "--seq", "7", "-o", str(bundle_path))
    assert again.exit_code == 2
    assert json.loads(bundle_path.read_text())["leaf_index"] == 42


def test_a_session_bundle_proves_each_of_its_evictions(signed: Path) -> None:
    wanted = [r for r in records(signed) if r["kind"] == "eviction"][3]["session_id"]
    result = run("prove", str(signed), "--session", wanted)
    assert result.exit_code == 0, result.stderr
    bundle = json.loads(result.stdout)
    mine = [r["seq"] for r in records(signed)
            if r["kind"] == "eviction" and r["session_id"] == wanted]  # fmt: skip
    assert [p["leaf_index"] for p in bundle["proofs"]] == mine
    root = bytes.fromhex(records(signed)[-1]["root"])
    for proof in bundle["proofs"]:
        check_inclusion(leaf_hash(proof["record"].encode()), proof["leaf_index"],
                        bundle["tree_size"], [bytes.fromhex(h) for h in proof["inclusion"]],
                        root)  # fmt: skip


def test_a_consistency_proof_links_an_earlier_checkpoint_to_the_newest(signed: Path) -> None:
    all_records = records(signed)
    early = next(r for r in all_records if r["kind"] == "checkpoint")
    result = run("prove", str(signed), "--from-size", str(early["tree_size"]))
    assert result.exit_code == 0, result.stderr
    bundle = json.loads(result.stdout)
    assert bundle["format"] == "kvreceipts.consistency/1"
    assert (bundle["old_size"], bundle["new_size"]) == (early["tree_size"],
                                                        all_records[-1]["tree_size"])  # fmt: skip
    proof = [bytes.fromhex(h) for h in bundle["consistency"]]
    old_root, new_root = bytes.fromhex(early["root"]), bytes.fromhex(all_records[-1]["root"])
    check_consistency(bundle["old_size"], bundle["new_size"], proof, old_root, new_root)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--seq", "99999"), "seq 99999 is not in run"),
        (("--from-size", "99999"), "--from-size 99999"),
        (("--session", "nobody"), "no eviction receipt of session nobody"),
        ((), "exactly one of"),
        (("--seq", "1", "--session", "x"), "exactly one of"),
        (("--seq", "1", "--run", "nope"), "no run nope"),
    ],
)
def test_prove_refuses_what_it_cannot_prove(
    signed: Path, args: tuple[str, ...], needle: str
) -> None:
    result = run("prove", str(signed), *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_prove_needs_a_signed_run(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jsonl"
    assert run("simulate", "-q", "-f", "json", "-o", str(plain)).exit_code == 0
    result = run("prove", str(plain), "--seq", "3")
    assert result.exit_code == 2
    assert "no signed checkpoint" in result.stderr
    result = run("prove", "-", "--seq", "3")
    assert result.exit_code == 2
    assert "standard input" in result.stderr


def test_verify_proof_takes_what_prove_writes_and_refuses_edits(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    pub = str(keys[1])
    bundle = tmp_path / "p.json"
    assert run("prove", str(signed), "--seq", "200", "-o", str(bundle)).exit_code == 0
    result = run("verify-proof", str(bundle), "--vkey", pub, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["record"]["seq"] == 200
    document = json.loads(bundle.read_text())
    edits = {
        "record": {**document, "record": document["record"].replace('"seq":200', '"seq":201')},
        "path": {**document, "inclusion": ["00" * 32, *document["inclusion"][1:]]},
        "index": {**document, "leaf_index": 201},
    }
    for name, edited in edits.items():
        forged = tmp_path / f"{name}.json"
        forged.write_text(json.dumps(edited))
        result = run("verify-proof", str(forged), "--vkey", pub)
        assert result.exit_code == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr


def test_verify_proof_ties_an_earlier_checkpoint_to_the_newest(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    early = next(r for r in records(signed) if r["kind"] == "checkpoint")
    old = tmp_path / "old.note"
    old.write_text(early["checkpoint"])
    grew = tmp_path / "grew.json"
    result = run("prove", str(signed), "--from-size", str(early["tree_size"]), "-o", str(grew))
    assert result.exit_code == 0, result.stderr
    result = run("verify-proof", str(grew), "--vkey", str(keys[1]), "--old-checkpoint", str(old))
    assert result.exit_code == 0, result.stderr
    # An older note of another size does not fit the proof.
    later = [r for r in records(signed) if r["kind"] == "checkpoint"][1]
    old.write_text(later["checkpoint"])
    result = run("verify-proof", str(grew), "--vkey", str(keys[1]), "--old-checkpoint", str(old))
    assert result.exit_code == 1


def _with_a_loss(signed: Path, first: int, last: int) -> bytes:
    """The signed run with records first..last dropped and declared by a loss record: the
    sink's view (it hashed the lines it dropped into lost_tree), so the signed root holds.
    """
    lines = signed.read_bytes().splitlines()
    lost = [orjson.loads(line) for line in lines[first : last + 1]]
    cover = RangeCover(first)
    for line in lines[first : last + 1]:
        cover.append(leaf_hash(line))
    counts: dict[str, int] = {}
    for record in lost:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    before = orjson.loads(lines[first - 1])
    loss = {
        "kind": "loss", "run_id": before["run_id"], "seq": last,
        "timestamp": lost[-1]["timestamp"], "alg": "sha256", "sink": "channel",
        "first_seq": first, "last_seq": last, "count": last - first + 1,
        "prev_digest": before["digest"], "last_lost_digest": lost[-1]["digest"],
        "lost_counts": dict(sorted(counts.items())),
        "lost_tree": [h.hex() for h in cover.hashes()],
    }  # fmt: skip
    payload = canonical(loss)
    line = payload[:-1] + b',"digest":"%b"}' % chain_digest(loss["prev_digest"], payload).encode()
    return b"\n".join([*lines[:first], line, *lines[last + 1 :]]) + b"\n"


@pytest.mark.parametrize("chunk_height", [0, 1, 3, 6])
def test_proofs_stream_right_at_every_chunk_size_and_across_a_loss(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path, chunk_height: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The second pass hashes whole chunks at once: every proof it makes, near a chunk's edge,
    near a loss or across one, is the RFC's (checked against the signed root).
    """
    from kvreceipts import proving

    monkeypatch.setattr(proving, "_CHUNK", 1 << chunk_height)
    lossy = tmp_path / "lossy.jsonl"
    lossy.write_bytes(_with_a_loss(signed, 70, 133))
    code, report = verify_json(lossy, "--vkey", str(keys[1]), "--allow-loss")
    assert code == 0, report["violations"]  # the signed root still binds the records kept
    root = bytes.fromhex(records(signed)[-1]["root"])
    size = records(signed)[-1]["tree_size"]
    for path in (signed, lossy):
        name = str(path)

        def opener(name: str = name) -> Any:
            from kvreceipts.commands.reading import open_receipts

            return open_receipts(name)

        found = proving.find_run(name, opener, run=None, session=None)
        assert found.tree_size == size
        seqs = [s for s in (0, 1, 7, 8, 63, 64, 69, 134, 200, 511, 512, size - 1)
                if path is signed or not 70 <= s <= 133]  # fmt: skip
        proofs, lines = proving.inclusions(opener, name, found, seqs)
        for seq, proof in zip(seqs, proofs, strict=True):
            check_inclusion(leaf_hash(lines[seq]), seq, size, proof, root)
        for old in (1, 2, 69, 70, 134, 300, size):
            old_root = Frontier()
            for line in signed.read_bytes().splitlines()[:old]:
                old_root.append(leaf_hash(line))
            proof = proving.consistency(opener, name, found, old)
            check_consistency(old, size, proof, old_root.root(), root)
    result = run("prove", str(lossy), "--seq", "100")
    assert result.exit_code == 2
    assert "was lost" in result.stderr
    result = run("prove", str(lossy), "--from-size", "100")  # inside the lost range
    assert result.exit_code == 2
    assert "needs records that were lost" in result.stderr


@pytest.mark.parametrize(
    "checkpoint_args", [("--checkpoint-every", "5"), ("--checkpoint-interval", "0.001")]
)
def test_a_watch_publishes_signed_checkpoints_as_it_goes(
    keys: tuple[Path, Path], tmp_path: Path, checkpoint_args: tuple[str, ...]
) -> None:
    """A watch's receipts (the shipped recording, with its declared losses) are signed the
    same way: checkpoint records as it goes, the close signed, the newest note kept.
    """
    recording = Path(__file__).parent / "fixtures" / "watch" / "engine.kvrec"
    out, latest = tmp_path / "w.jsonl", tmp_path / "latest.note"
    result = run("watch", "--from", str(recording), "-f", "jsonl", "-q", "--allow-loss",
                 "-o", str(out), "--sign-key", str(keys[0]), "--checkpoint-out", str(latest),
                 *checkpoint_args)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    written = records(out)
    assert sum(r["kind"] == "checkpoint" for r in written) >= 2
    assert latest.read_text() == written[-1]["checkpoint"]
    code, report = verify_json(out, "--vkey", str(keys[1]), "--allow-loss")
    assert code == 0, report["violations"]
    assert report["authentication"] == "signed"
    seq = next(r["seq"] for r in written if r["kind"] == "engine_removal")
    bundle = tmp_path / "p.json"
    assert run("prove", str(out), "--seq", str(seq), "-o", str(bundle)).exit_code == 0
    assert run("verify-proof", str(bundle), "--vkey", str(keys[1])).exit_code == 0
