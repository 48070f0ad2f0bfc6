"""Signed notes and keys against the published examples of Go's sumdb/note (note_test.go in
golang.org/x/mod), and C2SP checkpoints. Go's own code checks ours in test_proofs_go.py.
"""

from __future__ import annotations

import base64

import pytest

from kvreceipts.proofs import checkpoint, note
from kvreceipts.proofs.errors import FormatError, ProofError
from kvreceipts.proofs.merkle import EMPTY_ROOT

# golang.org/x/mod/sumdb/note/note_test.go: TestNewVerifier, TestNewSigner, TestSign, TestOpen.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = ("If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n")  # fmt: skip
PETER_SIG = ("— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
             "fqdngotpRZb6KE6RyyBwJnAM=\n")  # fmt: skip
ENOCH_SIG = ("— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
             "wnWLox33WWd1RvMc+QQ=\n")  # fmt: skip


def test_the_published_keys_parse_and_match() -> None:
    peter = note.parse_verifier(PETER_VKEY)
    assert (peter.name, peter.key_id) == ("PeterNeumann", 0xC74F20A3)
    assert peter.key_string == PETER_VKEY
    signer = note.parse_signer(PETER_SKEY)
    assert signer.key_string == PETER_SKEY
    assert signer.verifier == peter
    assert note.key_id("PeterNeumann", peter.public_key) == 0xC74F20A3
    assert "seed" not in repr(signer)
    enoch = note.parse_verifier(ENOCH_VKEY)
    assert enoch.key_id == 0xAF0CFE78


def test_sign_writes_go_s_bytes() -> None:
    signer = note.parse_signer(PETER_SKEY)
    assert note.sign(TEXT, signer) == TEXT + "\n" + PETER_SIG


def test_open_follows_go_s_rules() -> None:
    peter = note.parse_verifier(PETER_VKEY)
    enoch = note.parse_verifier(ENOCH_VKEY)
    opened = note.open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert opened.text == TEXT
    assert opened.names == ["PeterNeumann"]
    assert [s.label for s in opened.unverified] == ["EnochRoot+af0cfe78"]
    both = note.open(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter, enoch])
    assert both.names == ["PeterNeumann", "EnochRoot"]
    assert not both.unverified
    with pytest.raises(note.UnverifiedNoteError, match="no verifiable signatures"):
        note.open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    # A changed signature by a known key fails (Go: invalid signature for key ...).
    bad = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(note.InvalidSignatureError, match=r"PeterNeumann\+c74f20a3"):
        note.open_note(bad, [peter])
    # Repeated signatures are dropped; more than 100 is malformed.
    assert note.open_note(TEXT + "\n" + PETER_SIG * 3, [peter]).names == ["PeterNeumann"]
    with pytest.raises(note.MalformedNoteError, match="more than 100"):
        note.open_note(TEXT + "\n" + PETER_SIG * 101, [peter])


@pytest.mark.parametrize(
    "msg",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSN"
        "XgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        "\ud800" + TEXT + "\n" + PETER_SIG,
    ],
)
def test_go_s_malformed_notes_are_malformed(msg: str | bytes) -> None:
    with pytest.raises(note.MalformedNoteError, match="malformed note"):
        note.open_note(msg, [note.parse_verifier(PETER_VKEY)])


# note_test.go, TestNewVerifier's and TestNewSigner's bad keys.
@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+0xf20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3+",
        "",
    ],
)
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(FormatError):
        note.parse_verifier(vkey)


def test_every_one_byte_change_of_a_key_string_is_refused_or_is_another_key() -> None:
    # note_test.go flips each byte of the published keys and expects NewVerifier to fail.
    for i in range(len(PETER_VKEY)):
        for delta in (1, -1):
            changed = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + delta) + PETER_VKEY[i + 1 :]
            with pytest.raises(FormatError):
                note.parse_verifier(changed)


def test_a_signer_where_a_verifier_is_wanted_and_the_reverse() -> None:
    with pytest.raises(FormatError, match=r"signer \(private\) key.*verifier") as exc:
        note.parse_verifier(PETER_SKEY)
    assert "AYEK" not in str(exc.value)  # never echo a secret
    with pytest.raises(FormatError, match=r"verifier \(public\) key.*signer"):
        note.parse_signer(PETER_VKEY)
    with pytest.raises(FormatError, match="32 bytes, not 2"):
        note.parse_signer("PRIVATE+KEY+PeterNeumann+c74f20a3+AYEK")
    with pytest.raises(FormatError, match="does not match"):
        note.parse_signer(PETER_SKEY.replace("c74f20a3", "c74f20a4"))


def test_the_same_name_with_another_id_is_another_key() -> None:
    impostor = note.generate("PeterNeumann", seed=bytes(32))
    assert impostor.key_id != 0xC74F20A3
    forged = note.sign(TEXT, impostor)
    with pytest.raises(note.UnverifiedNoteError, match="same name but another id"):
        note.open_note(forged, [note.parse_verifier(PETER_VKEY)])
    # And the impostor's id with Peter's name cannot be claimed: the signature fails.
    raw = base64.b64decode(forged.rsplit(" ", 1)[1])
    relabelled = forged.rsplit(" ", 1)[0] + " " + base64.b64encode(
        (0xC74F20A3).to_bytes(4, "big") + raw[4:]).decode() + "\n"  # fmt: skip
    with pytest.raises(note.InvalidSignatureError):
        note.open_note(relabelled, [note.parse_verifier(PETER_VKEY)])


def test_generate_sign_and_open_round_trip() -> None:
    signer = note.generate("kvreceipts.example/audit")
    verifier = note.parse_verifier(signer.verifier.key_string)
    assert note.parse_signer(signer.key_string) == signer
    signed = note.sign("hello\n", signer)
    assert note.open_note(signed, [verifier]).text == "hello\n"
    with pytest.raises(note.MalformedNoteError, match="end in a newline"):
        note.sign("hello", signer)
    for name in ("", "a+b", "a b", "a\u2003b", "a\tb", "a\u3000b"):
        assert not note.is_valid_name(name)
        with pytest.raises(FormatError):
            note.generate(name)
    assert note.is_valid_name("\u200bzero-width-is-not-a-space")  # as in Go's unicode.IsSpace


def test_checkpoint_bodies() -> None:
    cp = checkpoint.Checkpoint("kvreceipts/run/abc", 8, EMPTY_ROOT)
    body = checkpoint.format_checkpoint(cp)
    assert body == "kvreceipts/run/abc\n8\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    assert checkpoint.parse_checkpoint(body) == cp
    ext = checkpoint.Checkpoint("o", 0, EMPTY_ROOT, ("x y", "z"))
    assert checkpoint.parse_checkpoint(checkpoint.format_checkpoint(ext)) == ext
    for bad, why in [
        ("o\n8\n", "3 line|2 line"),
        ("o\n08\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "leading zeros"),
        ("o\n-1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "decimal"),
        ("o\n8\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n", "base64|32 bytes"),
        ("o\n8\nAAAA\n", "32 bytes"),
        ("\n8\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "origin"),
        ("o\n8\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "newline"),
        ("o\n8\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n", "empty extension"),
        ("o\n\u0661\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "decimal"),
    ]:
        with pytest.raises(FormatError, match=why):
            checkpoint.parse_checkpoint(bad)


def test_signed_checkpoints_open_and_say_what_they_sign() -> None:
    signer = note.generate("kvreceipts.example")
    cp = checkpoint.Checkpoint("kvreceipts/run/abc", 3, bytes(range(32)))
    signed = checkpoint.sign_checkpoint(cp, signer)
    got, opened = checkpoint.open_checkpoint(signed, [signer.verifier])
    assert got == cp
    assert opened.names == ["kvreceipts.example"]
    not_a_checkpoint = note.sign("just text\n", signer)
    with pytest.raises(ProofError, match="not a checkpoint"):
        checkpoint.open_checkpoint(not_a_checkpoint, [signer.verifier])
    with pytest.raises(note.InvalidSignatureError):
        checkpoint.open_checkpoint(signed.replace("\n3\n", "\n4\n"), [signer.verifier])
    with pytest.raises(note.MalformedNoteError):
        checkpoint.open_checkpoint(signed[:-10], [signer.verifier])
