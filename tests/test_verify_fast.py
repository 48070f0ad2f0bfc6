"""The verifier's fast path (eviction lines decoded into typed structs) must say exactly what
the general path (parsed dicts, compiled shape checks) says, for any line an attacker writes:
hostile values in any field, re-spaced or reordered bytes, repeated keys, and every digest
re-chained so that only the shape and arithmetic checks stand between the line and ``ok``.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kvreceipts.chain import chain_digest
from kvreceipts.schema import ZERO_DIGEST
from kvreceipts.verify import VerifyOptions, verify_lines
from test_verify import run_lines

pytestmark = pytest.mark.needs("receipts")

_SUFFIX = re.compile(rb',"digest":"[0-9a-f]{64}"}\n\Z')


def rechain(payloads: list[bytes]) -> list[bytes]:
    """Seal payload bytes as they are (canonical or not), the way an attacker re-chains."""
    out, prev = [], ZERO_DIGEST
    for payload in payloads:
        prev = chain_digest(prev, payload)
        out.append(payload[:-1] + b',"digest":"%b"}\n' % prev.encode())
    return out


def both_ways(lines: list[bytes]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report with the fast path, and the report of the general path alone."""
    options = VerifyOptions(allow_incomplete=True)
    fast = verify_lines(lines, options=options).to_dict()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kvreceipts.verify.runs.eviction_decoder", lambda layout: None)
        general = verify_lines(lines, options=options).to_dict()
    return fast, general


@pytest.fixture(scope="module", params=["lean", "upstream"])
def payloads(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[bytes]:
    lines = run_lines(tmp_path_factory.mktemp("f") / "r.jsonl", layout=request.param)[0][:30]
    return [_SUFFIX.sub(b"}", line) for line in lines]


def test_a_genuine_file_takes_the_fast_path(payloads: list[bytes]) -> None:
    fast, general = both_ways(rechain(payloads))
    assert fast == general
    assert fast["ok"], fast["violations"][:3]


DROP = object()
"""Delete the field instead of setting it."""
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e15, 1e16, 1e17, -1e16, 1e-7, 1.5e300]),
    st.text(max_size=6),
    st.sampled_from(["0" * 16, "0" * 16 + "\n", "0" * 15 + "g", "0" * 64, "eviction", "close"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _paths(record: dict[str, Any]) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for name, value in record.items():
        paths.append((name,))
        if isinstance(value, dict):
            paths.extend((name, *sub) for sub in _paths(value))
    return paths


@given(
    index=st.integers(0, 10**6),
    pick=st.none() | st.integers(0, 10**6),
    value=_values | st.just(DROP),
    extra=st.sampled_from(["", "digest", "zzz", "block_hash", "key_id", "performance", "kind"]),
)
@example(index=0, pick=0, value=1e16, extra="")
@example(index=1, pick=None, value="0" * 16 + "\n", extra="key_id")  # search's $
@example(index=1, pick=None, value="close", extra="kind")
@example(index=1, pick=None, value=2**63, extra="block_hash")  # beyond int64
def test_any_value_anywhere_gets_the_same_verdict_both_ways(
    payloads: list[bytes], index: int, pick: int | None, value: Any, extra: str
) -> None:
    # Mostly eviction lines (the fast path's), sometimes a line of another kind.
    evictions = [i for i, p in enumerate(payloads) if b'"kind":"eviction"' in p]
    index = evictions[index % len(evictions)] if index % 4 else 1 + index % (len(payloads) - 2)
    record = orjson.loads(payloads[index])
    if pick is not None:
        paths = _paths(record)
        *parents, name = paths[pick % len(paths)]
        target = record
        for parent in parents:
            target = target[parent]
        if value is DROP:
            del target[name]
        else:
            target[name] = value
    if extra and value is not DROP:
        record[extra] = value
    try:
        edited = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: write it the way Python does
        edited = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    fast, general = both_ways(rechain([*payloads[:index], edited, *payloads[index + 1 :]]))
    assert fast == general


_REWRITES = [  # (pattern, replacement, still ok)
    (rb'"seq":(\d+)', rb'"seq":\1,"seq":\1', False),  # a repeated key
    (rb'"seq":(\d+)', rb'"seq": \1', False),  # re-spaced
    (rb'"seq":(\d+)', rb'"seq":\1.0', False),  # a float where an integer belongs
    (rb'"seq":(\d+)', rb'"seq":\1e0', False),
    (rb'\{"after":', rb'{"zz":1,"after":', False),  # a key out of order
    (rb'"kind":"eviction"', rb'"kind":"eviction","kind":"close"', False),
    (rb'"block_size_bytes":(\d+)', rb'"block_size_bytes":0', False),
    (rb'"average_latency_ms":[0-9.]+', rb'"average_latency_ms":1e16', False),  # msgspec's form
    (rb'"average_latency_ms":[0-9.]+', b'"average_latency_ms":' + orjson.dumps(1e16), True),
    (rb'"average_latency_ms":([0-9.]+)', rb'"average_latency_ms":\1E0', False),
    (rb'"session_id":"', rb'"session_id":"\\u0041', False),  # an escape the sealer never writes
    (rb'"session_id":"', rb'"session_id":"\\/', False),
    (rb'"run_id":"', rb'"run_id":"x', False),  # a run that was never opened
    # A second digest inside the sealed part, in its sorted place: a key written twice.
    (rb'"kind":"eviction"', b'"digest":"%b","kind":"eviction"' % (b"0" * 64), False),
]


@pytest.mark.parametrize(("pattern", "replacement", "ok"), _REWRITES)
def test_rewritten_bytes_get_the_same_verdict_both_ways(
    payloads: list[bytes], pattern: bytes, replacement: bytes, ok: bool
) -> None:
    edited = re.sub(pattern, replacement, payloads[5], count=1)
    if edited == payloads[5]:
        pytest.skip("this layout has no such field")
    fast, general = both_ways(rechain([*payloads[:5], edited, *payloads[6:]]))
    assert fast == general
    assert fast["ok"] is ok, fast["violations"]


def test_below_the_float_limit_msgspec_writes_what_orjson_writes() -> None:
    """The struct takes floats only where msgspec's writer and the canonical one agree: any
    float below 1e16 in size (checked on this install's versions of both), and none above.
    """
    from kvreceipts.verify.structs import encode

    rng = random.Random(16)
    values = [0.0, -0.0, 5e-324, 1e-7, 0.00001, 123.456, 9.999999999999998e15]
    values += [rng.uniform(-1, 1) * 10 ** rng.uniform(-320, 16) for _ in range(100_000)]
    values += [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
               for _ in range(100_000)]  # fmt: skip
    for value in values:
        if math.isfinite(value) and abs(value) < 1e16:
            assert encode(value) == orjson.dumps(value), value
    assert orjson.dumps(1e16) == b"1e+16" != encode(1e16)  # why the struct stops short of 1e16
