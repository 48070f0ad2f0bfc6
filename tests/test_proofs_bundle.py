"""Proof bundles: built, parsed strictly, checked (the CLI tests run them as a user does)."""

from __future__ import annotations

import pytest

from kvreceipts.proofs import bundle, checkpoint, note
from kvreceipts.proofs.errors import FormatError, ProofError
from kvreceipts.proofs.merkle import consistency_proof_of, inclusion_proof_of, leaf_hash, root_of

RUN = "0123456789abcdef"
LINES = [f'{{"kind":"eviction","run_id":"{RUN}","seq":{i}}}' for i in range(13)]
HASHES = [leaf_hash(line.encode()) for line in LINES]
SIGNER = note.generate("audit.example", seed=bytes(range(32)))


def _note(size: int, run_id: str = RUN) -> str:
    return checkpoint.sign_checkpoint(
        checkpoint.Checkpoint(bundle.origin_for(run_id), size, root_of(HASHES[:size])), SIGNER
    )


def test_built_bundles_parse_back_and_check() -> None:
    path = inclusion_proof_of(HASHES, 4)
    one = bundle.proof_bundle(run_id=RUN, record=LINES[4], leaf_index=4, tree_size=13,
                              inclusion=path, checkpoint=_note(13))  # fmt: skip
    parsed = bundle.parse_bundle(one)
    assert isinstance(parsed, bundle.ProofBundle)
    assert not parsed.multi
    assert parsed.proofs[0].leaf_hash == HASHES[4]
    verified = bundle.check_proof_bundle(parsed, SIGNER.verifier)
    assert (verified.checkpoint.size, verified.signer) == (13, SIGNER.verifier.label)
    many = bundle.session_bundle(run_id=RUN, tree_size=13, checkpoint=_note(13), session_id="s",
                                 proofs=[(LINES[i], i, inclusion_proof_of(HASHES, i))
                                         for i in (0, 12)])  # fmt: skip
    parsed_many = bundle.parse_bundle(many)
    assert isinstance(parsed_many, bundle.ProofBundle)
    assert (parsed_many.multi, parsed_many.session_id) == (True, "s")
    bundle.check_proof_bundle(parsed_many, SIGNER.verifier)
    grown = bundle.consistency_bundle(run_id=RUN, old_size=5, new_size=13,
                                      consistency=consistency_proof_of(HASHES, 5),
                                      checkpoint=_note(13))  # fmt: skip
    parsed_grown = bundle.parse_bundle(grown)
    assert isinstance(parsed_grown, bundle.ConsistencyBundle)
    checked = bundle.check_consistency_bundle(parsed_grown, SIGNER.verifier, _note(5))
    assert checked.old_checkpoint is not None
    assert checked.old_checkpoint.size == 5
    with pytest.raises(ProofError, match="old_size 5"):
        bundle.check_consistency_bundle(parsed_grown, SIGNER.verifier, _note(6))
    with pytest.raises(FormatError):  # builders refuse what parsing would
        bundle.proof_bundle(run_id=RUN, record=LINES[4], leaf_index=-4, tree_size=13,
                            inclusion=[], checkpoint="")  # fmt: skip


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ({"format": "kvreceipts.proof/1", "run_id": RUN, "tree_size": 1, "checkpoint": "",
          "proofs": []}, "non-empty array"),
        ({"format": "kvreceipts.proof/1", "run_id": RUN, "tree_size": 1, "checkpoint": "",
          "proofs": [1]}, r"proofs\[0\]: expected an object, found an integer"),
        ({"format": "kvreceipts.proof/1", "run_id": RUN, "tree_size": 1, "checkpoint": "",
          "proofs": [{"record": "", "leaf_index": 0}]}, r"proofs\[0\]: missing field 'inclusion'"),
        ({"format": "kvreceipts.proof/1", "run_id": RUN, "tree_size": 1, "checkpoint": "",
          "session_id": 3, "proofs": [{"record": "", "leaf_index": 0, "inclusion": []}]},
         "session_id: expected a string"),
        ({"format": "kvreceipts.consistency/1", "run_id": RUN, "old_size": 1, "new_size": 2,
          "consistency": ["00" * 32] * 65, "checkpoint": ""}, "no proof needs more than 64"),
        ({"format": "kvreceipts.consistency/1", "run_id": RUN, "old_size": 1, "new_size": 2**63,
          "consistency": [], "checkpoint": ""}, "out of range"),
        ({"format": "kvreceipts.consistency/1", "run_id": "", "old_size": 1, "new_size": 2,
          "consistency": [], "checkpoint": ""}, "run_id"),
        ("a string", "expected a JSON object, found a string"),
    ],
)  # fmt: skip
def test_each_bad_field_is_named(document: object, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        bundle.parse_bundle(document)


def test_load_bundle_is_strict_json() -> None:
    with pytest.raises(FormatError, match="not JSON"):
        bundle.load_bundle(b"\xff")
    with pytest.raises(FormatError, match="Infinity"):
        bundle.load_bundle(b'{"format": Infinity}')
    with pytest.raises(FormatError, match="appears twice"):
        bundle.load_bundle(b'{"format": 1, "format": 2}')
    with pytest.raises(FormatError, match="nested too deeply"):
        bundle.load_bundle(b"[" * 100_000 + b"]" * 100_000)
