"""Tests written to kill the sweep methods' mutants (``nox -s mutants``): SHARDS' sampling and
the hit counts read off a histogram of distances, each against figures worked out by hand.
"""

from __future__ import annotations

import pytest

from kvreceipts.sweep import methods
from kvreceipts.sweep.methods import HASH_MODULUS, Counts, StackDistances, block_hash
from kvreceipts.workloads import Request


def test_hits_at_reads_capacities_in_any_order_and_past_the_histogram() -> None:
    distances = StackDistances([0.0, 1.0, 2.0, 3.0], 4.0, 10)
    assert distances.hits_at([3, 1, 10, 2]) == [6.0, 1.0, 6.0, 3.0]


def test_lru_counts_scale_a_sample_to_the_whole_trace() -> None:
    sample = StackDistances([0.0, 2.0, 1.0], 1.0, 4, scale=2.0, weight=5.0)
    assert methods.lru_counts(sample, [1, 2], 100) == [
        Counts(40, 60, 59, 0, 4),  # 2 of a weight of 5 hit at capacity 1: 40% of 100
        Counts(60, 40, 38, 0, 4),
    ]
    exact = StackDistances([0.0, 2.0, 1.0], 1.0, 4)
    assert methods.lru_counts(exact, [1, 2], 4) == [Counts(2, 2, 1, 0, 4), Counts(3, 1, 0, 0, 4)]
    unweighted = StackDistances([0.0, 2.0, 1.0], 1.0, 4, scale=2.0)  # weight 0: the references
    assert methods.lru_counts(unweighted, [2], 100)[0].hits == 75


@pytest.mark.parametrize("numpy", [True, False], ids=["numpy", "python"])
def test_sampling_keeps_a_block_whose_hash_is_below_the_threshold_only(
    numpy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not numpy:  # as without numpy installed
        monkeypatch.setattr(methods, "_numpy_hashes", lambda blocks: None)
    blocks = [7, 12345, -3, 2**40]
    for block in blocks:
        at = block_hash(block) / HASH_MODULUS
        assert block not in methods.sampled(blocks, at)  # hash < rate·P, strictly
        assert block in methods.sampled(blocks, at + 1 / HASH_MODULUS)
    assert methods.sampled([-1, 2**63, 2**64 - 1], 1.0) == {-1, 2**63, 2**64 - 1}


def test_sample_requests_keeps_the_sampled_blocks_in_order_and_drops_empty_requests() -> None:
    requests = [
        Request("a", "s", 0.0, 48, 1, 49, [1, 2, 3]),
        Request("b", "s", 1.0, 16, 1, 17, [4]),
        Request("c", "s", 2.0, 32, 1, 33, [3, 1]),
        Request("d", "s", 3.0, 16, 1, 17, None),
    ]
    kept = methods.sample_requests(requests, {1, 3})
    assert kept == [requests[0]._replace(block_hashes=[1, 3]),
                    requests[2]._replace(block_hashes=[3, 1])]  # fmt: skip
