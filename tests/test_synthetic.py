"""Synthetic workloads: deterministic per seed, well-formed requests, prefixes that a prefix
cache can reuse.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts.workloads import SYNTHETIC_WORKLOADS, Request, synthetic_workload

WORKLOADS = sorted(SYNTHETIC_WORKLOADS)


def _run(name: str, seed: int, requests: int = 300, block_tokens: int = 512) -> list[Request]:
    return list(synthetic_workload(name, requests=requests, seed=seed, block_tokens=block_tokens))


def test_the_four_documented_workloads_exist() -> None:
    assert set(WORKLOADS) == {"chat", "agent", "burst", "uniform"}


@pytest.mark.parametrize("name", WORKLOADS)
def test_same_seed_gives_the_same_requests(name: str) -> None:
    first = _run(name, seed=7)
    assert len(first) == 300
    assert first == _run(name, seed=7)
    assert first != _run(name, seed=8)


@pytest.mark.parametrize("name", WORKLOADS)
def test_default_request_count(name: str) -> None:
    assert sum(1 for _ in synthetic_workload(name)) == 2000


@pytest.mark.parametrize("name", WORKLOADS)
@given(
    seed=st.integers(0, 2**32),
    requests=st.integers(1, 60),
    block_tokens=st.sampled_from([16, 256, 512, 1000]),
)
def test_requests_are_well_formed(name: str, seed: int, requests: int, block_tokens: int) -> None:
    stream = _run(name, seed, requests, block_tokens)
    assert len(stream) == requests
    assert len({r.request_id for r in stream}) == requests
    arrivals = [r.arrival_ms for r in stream]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] >= 0
    for r in stream:
        assert 0 < r.input_tokens < r.context_length
        assert r.output_tokens >= 1
        assert r.input_tokens + r.output_tokens <= r.context_length
        assert r.block_hashes is not None
        assert len(r.block_hashes) == math.ceil(r.input_tokens / block_tokens)
        assert len(set(r.block_hashes)) == len(r.block_hashes)  # a prefix has no repeats


@pytest.mark.parametrize("name", WORKLOADS)
def test_later_turns_extend_the_earlier_turns_prefix(name: str) -> None:
    turns: dict[str, list[Request]] = defaultdict(list)
    for request in _run(name, seed=3, requests=400):
        turns[request.session_id].append(request)
    multi = [session for session in turns.values() if len(session) > 1]
    assert multi, "no session came back for a second turn"
    for session in multi:
        assert len({r.context_length for r in session}) == 1  # one conversation, one window
        for earlier, later in itertools.pairwise(session):
            assert later.input_tokens > earlier.input_tokens  # the context grows
            assert earlier.block_hashes is not None
            assert later.block_hashes is not None
            prefix = list(later.block_hashes[: len(earlier.block_hashes)])
            assert prefix == list(earlier.block_hashes)


def test_chat_sessions_share_their_system_prompt_blocks() -> None:
    # A few system prompts serve many sessions: their first block is common across sessions.
    firsts: dict[int, set[str]] = defaultdict(set)
    for request in _run("chat", seed=0, requests=400, block_tokens=64):
        assert request.block_hashes
        firsts[request.block_hashes[0]].add(request.session_id)
    assert len(firsts) <= 4  # one first block per system prompt
    assert max(len(sessions) for sessions in firsts.values()) > 1


def test_sessions_do_not_share_their_own_blocks() -> None:
    # Beyond the shared prompt, a conversation's blocks are its own.
    owner: dict[int, str] = {}
    for request in _run("chat", seed=1, requests=400, block_tokens=64):
        assert request.block_hashes
        for block_hash in request.block_hashes[-1:]:
            assert owner.setdefault(block_hash, request.session_id) == request.session_id
