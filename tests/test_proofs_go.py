"""Go's reference implementation, live: golang.org/x/mod/sumdb/note and sumdb/tlog (built
from tests/go/goref.go) check the trees, proofs, keys, notes and checkpoints our code makes,
and make ones our code must accept, across many random tree sizes and indices.

Needs ``go`` and Go's x/mod sources (Debian: apt-get install golang-go
golang-golang-x-mod-dev); without them these tests skip and say so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kvreceipts.proofs import checkpoint, note
from kvreceipts.proofs.errors import FormatError
from kvreceipts.proofs.merkle import (
    check_consistency,
    check_inclusion,
    consistency_proof_of,
    inclusion_proof_of,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

SOURCE = Path(__file__).parent / "go" / "goref.go"
GOPATH = os.environ.get("KVRECEIPTS_TEST_GOPATH", "/usr/share/gocode")
INSTALL = "apt-get install golang-go golang-golang-x-mod-dev"


@pytest.fixture(scope="module")
def goref() -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"Go is not installed, so Go's sumdb/note and tlog cannot check us "
                    f"(Debian: {INSTALL})")  # fmt: skip
    if not (Path(GOPATH) / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        pytest.skip(f"golang.org/x/mod is not under {GOPATH} (Debian: {INSTALL}; or set "
                    "KVRECEIPTS_TEST_GOPATH)")  # fmt: skip
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvreceipts-tests"
    tag = hashlib.sha256(SOURCE.read_bytes() + GOPATH.encode()).hexdigest()[:16]
    binary = cache / f"goref-{tag}"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": "",
               "GOCACHE": str(cache / "go-build")}  # fmt: skip
        partial = cache / f"goref-{tag}.{os.getpid()}"
        subprocess.run([go, "build", "-o", str(partial), str(SOURCE)], env=env, check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        partial.replace(binary)
    return binary


def ask(goref: Path, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the requests through Go; each answer is {"ok": ...} or {"err": "..."}."""
    done = subprocess.run([str(goref)], input=json.dumps(list(requests)).encode(),
                          capture_output=True, check=True, timeout=120)  # fmt: skip
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    return answers


def _hex(hashes: list[bytes]) -> list[str]:
    return [x.hex() for x in hashes]


def test_go_and_we_build_the_same_trees_and_proofs(goref: Path) -> None:
    rng = random.Random(9162)
    for size in [*range(1, 20), *rng.sample(range(20, 3000), 12), 1024, 1025]:
        leaves = [rng.randbytes(rng.randrange(0, 60)) for _ in range(size)]
        hashes = [leaf_hash(x) for x in leaves]
        sizes = sorted({size, rng.randrange(1, size + 1), rng.randrange(1, size + 1)})
        inclusion = []
        for _ in range(6):
            n = rng.randrange(1, size + 1)
            inclusion.append((rng.randrange(n), n))
        consistency = []
        for _ in range(6):
            n = rng.randrange(1, size + 1)
            consistency.append((rng.randrange(1, n + 1), n))
        [answer] = ask(goref, {"op": "tree", "leaves": [x.hex() for x in leaves],
                               "sizes": sizes, "inclusion": inclusion,
                               "consistency": consistency})  # fmt: skip
        got = answer["ok"]
        assert got["roots"] == [root_of(hashes[:n]).hex() for n in sizes], size
        for (index, n), theirs in zip(inclusion, got["inclusion"], strict=True):
            path = inclusion_proof_of(hashes[:n], index)
            assert _hex(path) == theirs, (index, n)
            check_inclusion(hashes[index], index, n, [bytes.fromhex(x) for x in theirs],
                            root_of(hashes[:n]))  # fmt: skip
        for (old, n), theirs in zip(consistency, got["consistency"], strict=True):
            path = consistency_proof_of(hashes[:n], old)
            assert _hex(path) == theirs, (old, n)
            check_consistency(old, n, [bytes.fromhex(x) for x in theirs],
                              root_of(hashes[:old]), root_of(hashes[:n]))  # fmt: skip


def test_go_checks_our_proofs_and_agrees_on_every_rejection(goref: Path) -> None:
    rng = random.Random(6962)
    requests: list[dict[str, Any]] = []
    ours: list[bool] = []
    for _ in range(60):
        size = rng.randrange(1, 700)
        leaves = [rng.randbytes(rng.randrange(1, 30)) for _ in range(size)]
        hashes = [leaf_hash(x) for x in leaves]
        root = root_of(hashes)
        index = rng.randrange(size)
        path = inclusion_proof_of(hashes, index)
        old = rng.randrange(1, size + 1)
        cpath = consistency_proof_of(hashes, old)
        old_root = root_of(hashes[:old])
        cases = [(leaves[index], index, path), (leaves[index] + b"x", index, path),
                 (leaves[index], (index + 1) % size, path)]  # fmt: skip
        if path:
            edited = list(path)
            i = rng.randrange(len(edited))
            edited[i] = bytes([edited[i][0] ^ 1]) + edited[i][1:]
            cases += [(leaves[index], index, edited), (leaves[index], index, path[:-1]),
                      (leaves[index], index, [*path, root])]  # fmt: skip
        for data, at, proof in cases:
            requests.append({"op": "check_record", "proof": _hex(proof), "size": size,
                             "root": root.hex(), "index": at, "leaf_data": data.hex()})  # fmt: skip
            ours.append(verify_inclusion(leaf_hash(data), at, size, proof, root))
        ccases = [(old, cpath, old_root)]
        if cpath:
            ccases += [(old, cpath[:-1], old_root), (old, [*cpath, root], old_root),
                       (old, [bytes(32), *cpath[1:]], old_root)]  # fmt: skip
        if old > 1:
            ccases.append((old - 1, cpath, old_root))
        ccases.append((old, cpath, root_of(hashes[: old - 1])))
        for m, proof, m_root in ccases:
            requests.append({"op": "check_tree", "proof": _hex(proof), "size": size,
                             "root": root.hex(), "old": m, "old_root": m_root.hex()})  # fmt: skip
            ours.append(verify_consistency(m, size, proof, m_root, root))
    theirs = [answer.get("ok") is True for answer in ask(goref, *requests)]
    assert theirs == ours
    assert sum(ours) >= 120  # the genuine proofs, at least: both sides do accept things
    assert len(ours) - sum(ours) >= 200


def test_go_accepts_our_keys_and_we_accept_go_s(goref: Path) -> None:
    ours = [note.generate(f"kvreceipts.example/k{i}") for i in range(5)]
    requests: list[dict[str, Any]] = []
    for signer in ours:
        requests += [{"op": "verifier", "vkey": signer.verifier.key_string},
                     {"op": "signer", "skey": signer.key_string}]  # fmt: skip
    requests += [{"op": "generate", "name": f"go.example/k{i}"} for i in range(5)]
    answers = ask(goref, *requests)
    for i, signer in enumerate(ours):
        assert answers[2 * i] == {"ok": signer.verifier.label}
        assert answers[2 * i + 1] == {"ok": signer.verifier.label}
    for answer in answers[10:]:
        skey, vkey = answer["ok"]
        signer = note.parse_signer(skey)
        assert note.parse_verifier(vkey) == signer.verifier
        assert signer.key_string == skey
        assert signer.verifier.key_string == vkey


def test_key_names_follow_go_s_rules(goref: Path) -> None:
    names = ["a", "PeterNeumann", "a+b", "a b", "a\tb", "a\u00a0b", "a\u0085b", "a\u2003b",
             "a\u2028b", "a\u3000b", "a\u200bb", "a\u180eb", "a\x1cb", "a\ufeffb", "é/ü.例",
             "kvreceipts/run/x", "PRIVATE"]  # fmt: skip
    generated = ask(goref, *({"op": "generate", "name": name} for name in names))
    checks = ask(goref, *({"op": "verifier", "vkey": g["ok"][1]} for g in generated))
    for name, generated_keys, check in zip(names, generated, checks, strict=True):
        assert note.is_valid_name(name) == ("ok" in check), repr(name)
        skey, vkey = generated_keys["ok"]
        if "ok" in check:
            assert note.parse_verifier(vkey).label == check["ok"]
            assert note.parse_signer(skey).verifier == note.parse_verifier(vkey)
        else:
            with pytest.raises(FormatError):
                note.parse_verifier(vkey)
            with pytest.raises(FormatError):
                note.parse_signer(skey)


def test_go_opens_our_notes_and_we_open_go_s(goref: Path) -> None:
    signer = note.generate("kvreceipts.example")
    other = note.generate("kvreceipts.example")  # same name, another id
    texts = ["hello\n", "kvreceipts/run/abc\n12\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
             "two\n\nparagraphs\n", "unicode ✓ é\n"]  # fmt: skip
    requests: list[dict[str, Any]] = []
    for text in texts:
        ours = note.sign(text, signer)
        requests += [
            {"op": "open", "note": ours, "vkeys": [signer.verifier.key_string]},
            {"op": "open", "note": ours, "vkeys": [other.verifier.key_string]},
            {"op": "sign", "text": text, "skey": signer.key_string},
        ]
    answers = ask(goref, *requests)
    for i, text in enumerate(texts):
        opened, unknown, signed = answers[3 * i : 3 * i + 3]
        assert opened == {"ok": {"text": text, "sigs": [signer.verifier.label]}}
        assert "no verifiable signatures" in unknown["err"]
        assert signed["ok"] == note.sign(text, signer)  # Ed25519 is deterministic
        assert note.open_note(signed["ok"], [signer.verifier]).text == text


def test_go_and_we_agree_on_every_cut_and_edit_of_a_signed_checkpoint(goref: Path) -> None:
    signer = note.generate("kvreceipts.example")
    body = checkpoint.format_checkpoint(
        checkpoint.Checkpoint("kvreceipts/run/abc", 1000, hashlib.sha256(b"r").digest())
    )
    signed = checkpoint.sign_checkpoint(
        checkpoint.Checkpoint("kvreceipts/run/abc", 1000, hashlib.sha256(b"r").digest()),
        signer)  # fmt: skip
    variants = [signed[:i] for i in range(len(signed))]
    rng = random.Random(1)
    for _ in range(150):
        i = rng.randrange(len(signed))
        variants.append(signed[:i] + rng.choice("a\n+ —=\x01/") + signed[i + 1 :])
    variants += [signed + signed[len(body) + 1 :], signed.replace("\n\n", "\n\n\n"),
                 "\n" + signed, signed + "\n"]  # fmt: skip
    vkey = signer.verifier.key_string
    answers = ask(goref, *({"op": "open", "note": v, "vkeys": [vkey]} for v in variants))
    accepted = 0
    for variant, answer in zip(variants, answers, strict=True):
        try:
            opened = note.open_note(variant, [signer.verifier])
        except note.NoteError:
            assert "err" in answer, repr(variant)
        else:
            accepted += 1
            assert answer == {"ok": {"text": opened.text, "sigs": [signer.verifier.label]}}
    assert accepted >= 1  # the note itself (and a repeated signature line)


def test_checkpoint_bodies_match_tlog_s(goref: Path) -> None:
    # tlog's tree note is a checkpoint with the origin "go.sum database tree".
    rng = random.Random(3)
    cases = [(rng.randrange(0, 1 << 40), rng.randbytes(32)) for _ in range(20)]
    requests = [{"op": "format_tree", "size": n, "root": r.hex()} for n, r in cases]
    requests += [{"op": "parse_tree", "text": checkpoint.format_checkpoint(
        checkpoint.Checkpoint("go.sum database tree", n, r))} for n, r in cases]  # fmt: skip
    answers = ask(goref, *requests)
    for (n, r), answer in zip(cases, answers[: len(cases)], strict=True):
        assert checkpoint.parse_checkpoint(answer["ok"]) == checkpoint.Checkpoint(
            "go.sum database tree", n, r
        )
    for (n, r), answer in zip(cases, answers[len(cases) :], strict=True):
        assert answer == {"ok": {"size": n, "root": r.hex()}}


def _run_lines() -> list[str]:
    from typer.testing import CliRunner

    from kvreceipts.cli import app

    result = CliRunner().invoke(app, ["simulate", "--requests", "300", "--capacity-mb", "64",
                                      "-q", "-f", "jsonl"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.needs("receipts")  # its run is simulated
def test_verify_proof_accepts_bundles_go_made(goref: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvreceipts.cli import app

    lines = _run_lines()
    run_id, n, index, old = json.loads(lines[0])["run_id"], len(lines), len(lines) // 3, 7
    [keys, other_keys] = ask(goref, {"op": "generate", "name": "go.example"},
                             {"op": "generate", "name": "go.example"})  # fmt: skip
    skey, vkey = keys["ok"]
    [tree] = ask(goref, {"op": "tree", "leaves": [line.encode().hex() for line in lines],
                         "sizes": [n, old], "inclusion": [[index, n]],
                         "consistency": [[old, n]]})  # fmt: skip
    roots = [base64.b64encode(bytes.fromhex(r)).decode() for r in tree["ok"]["roots"]]
    # The checkpoint bodies written out by hand, from C2SP tlog-checkpoint; Go signs them.
    new_body = f"kvreceipts/run/{run_id}\n{n}\n{roots[0]}\n"
    old_body = f"kvreceipts/run/{run_id}\n{old}\n{roots[1]}\n"
    signed = ask(goref, {"op": "sign", "text": new_body, "skey": skey},
                 {"op": "sign", "text": old_body, "skey": skey},
                 {"op": "sign", "text": new_body, "skey": other_keys["ok"][0]})  # fmt: skip
    new_note, old_note, stranger_note = (s["ok"] for s in signed)
    (tmp_path / "go.pub").write_text(vkey + "\n")
    (tmp_path / "old.note").write_text(old_note)
    proof = {"format": "kvreceipts.proof/1", "run_id": run_id, "record": lines[index],
             "leaf_index": index, "tree_size": n, "inclusion": tree["ok"]["inclusion"][0],
             "checkpoint": new_note}  # fmt: skip
    consistency = {"format": "kvreceipts.consistency/1", "run_id": run_id, "old_size": old,
                   "new_size": n, "consistency": tree["ok"]["consistency"][0],
                   "checkpoint": new_note}  # fmt: skip
    runner = CliRunner()

    def verify(document: dict[str, Any], *extra: str) -> Any:
        (tmp_path / "b.json").write_text(json.dumps(document))
        return runner.invoke(app, ["verify-proof", str(tmp_path / "b.json"), "--vkey",
                                   str(tmp_path / "go.pub"), "-f", "json", *extra])  # fmt: skip

    result = verify(proof)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["record"] == json.loads(lines[index])
    result = verify(consistency, "--old-checkpoint", str(tmp_path / "old.note"))
    assert result.exit_code == 0, result.stdout + result.stderr
    result = verify(proof | {"checkpoint": stranger_note})
    assert result.exit_code == 1
    assert "no verifiable signatures" in json.loads(result.stdout)["reason"]


@pytest.mark.needs("receipts")  # its run is simulated
def test_go_checks_the_bundles_we_build(goref: Path) -> None:
    from kvreceipts.proofs import bundle

    lines = _run_lines()
    hashes = [leaf_hash(line.encode()) for line in lines]
    run_id, n = json.loads(lines[0])["run_id"], len(lines)
    signer = note.generate("kvreceipts.example")
    cp = checkpoint.sign_checkpoint(
        checkpoint.Checkpoint(bundle.origin_for(run_id), n, root_of(hashes)), signer)  # fmt: skip
    requests: list[dict[str, Any]] = [{"op": "open", "note": cp,
                                       "vkeys": [signer.verifier.key_string]}]  # fmt: skip
    for index in range(0, n, max(1, n // 25)):
        document = bundle.proof_bundle(run_id=run_id, record=lines[index], leaf_index=index,
                                       tree_size=n, inclusion=inclusion_proof_of(hashes, index),
                                       checkpoint=cp)  # fmt: skip
        requests.append({"op": "check_record", "proof": document["inclusion"], "size": n,
                         "root": root_of(hashes).hex(), "index": index,
                         "leaf_data": document["record"].encode().hex()})  # fmt: skip
    for old in (1, 2, 5, n // 2, n - 1):
        document = bundle.consistency_bundle(run_id=run_id, old_size=old, new_size=n,
                                             consistency=consistency_proof_of(hashes, old),
                                             checkpoint=cp)  # fmt: skip
        requests.append({"op": "check_tree", "proof": document["consistency"], "size": n,
                         "root": root_of(hashes).hex(), "old": old,
                         "old_root": root_of(hashes[:old]).hex()})  # fmt: skip
    answers = ask(goref, *requests)
    opened = answers[0]["ok"]
    assert opened["sigs"] == [signer.verifier.label]
    assert opened["text"].startswith(f"kvreceipts/run/{run_id}\n{n}\n")
    assert all(answer == {"ok": True} for answer in answers[1:]), answers
