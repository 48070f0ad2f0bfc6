"""The bounded structures: what they keep stays small whatever is put in, and what they say is
what was put in (exactly while that is small, within the stated error after)."""

from __future__ import annotations

import doctest
import math
import random
import sys

from hypothesis import given
from hypothesis import strategies as st

from kvreceipts import bounded
from kvreceipts.bounded import (
    FOLDED_TRACKED,
    KEY_LIMIT,
    OTHER,
    CappedCounter,
    Quantiles,
    compact_key,
    shorten,
)


def test_shorten_keeps_short_text_and_cuts_long_text_to_its_head_and_length() -> None:
    assert shorten("3f2a") == "3f2a"
    assert shorten("x" * 64) == "x" * 64
    long = "3f2a" + "0" * (1_048_576 - 4)
    assert shorten(long, keep=4) == "3f2a…(1,048,576 chars)"
    assert shorten(long) == "3f2a00000000…(1,048,576 chars)"
    assert shorten("a\nb") == "a\\x0ab"
    assert "\n" not in shorten("\n" * 100)


@given(st.text(max_size=200))
def test_shorten_is_bounded_and_one_line(text: str) -> None:
    shown = shorten(text)
    assert len(shown) <= 64 + 4 * 12 + 30
    assert "\n" not in shown
    assert "\r" not in shown
    if len(text) <= 64 and text.isprintable():
        assert shown == text


@given(st.text(max_size=150), st.text(max_size=150))
def test_compact_keys_are_bounded_and_tell_texts_apart(a: str, b: str) -> None:
    ka, kb = compact_key(a), compact_key(b)
    assert len(ka) <= KEY_LIMIT + 1
    assert (ka == kb) == (a == b)


def test_a_compact_key_of_long_text_never_equals_a_short_text() -> None:
    long = "r" * 1000
    key = compact_key(long)
    assert len(key) == KEY_LIMIT + 1
    assert key != long
    assert compact_key(key) != key  # the digest form is itself long, so it is digested again
    assert compact_key("short") == "short"
    assert compact_key("\udc80" * 100)  # a lone surrogate (from orjson? no, but from a name)


def test_a_capped_counter_counts_the_first_names_and_folds_the_rest() -> None:
    counts = CappedCounter(cap=3)
    for name in ["a", "b", "a", "c", "d", "e", "d", "a"]:
        counts.add(name)
    assert counts.to_dict() == {"a": 3, "b": 1, "c": 1, OTHER: 3}
    assert (counts.other, counts.folded, counts.folded_exact) == (3, 2, True)
    assert counts.total == 8
    assert counts.most_common() == [("a", 3), ("b", 1), ("c", 1), (OTHER, 3)]
    assert counts.describe_other() == "(other): 2 more names past the first 3"
    assert counts.get("a") == 3
    assert counts.get("d") == 0
    counts.add("b", 5)
    assert counts.get("b") == 6
    assert len(counts) == 3
    assert list(counts) == ["a", "b", "c"]


def test_an_empty_counter_says_nothing() -> None:
    counts = CappedCounter()
    assert not counts
    assert counts.to_dict() == {}
    assert counts.most_common() == []
    assert counts.describe_other() == ""


def test_long_names_are_counted_under_a_bounded_label_that_keeps_them_apart() -> None:
    counts = CappedCounter(cap=10)
    one, two = "t" * 1_000_000, "t" * 999_999 + "u"
    for name in (one, two, one):
        counts.add(name)
    labels = list(counts)
    assert len(labels) == 2
    assert all(len(label) < 100 for label in labels)
    assert labels[0].startswith("tttttttttttt…(1,000,000 chars, #")
    assert sorted(counts.to_dict().values()) == [1, 2]
    assert sys.getsizeof(counts.counts) + sum(map(sys.getsizeof, labels)) < 10_000


def test_the_folded_names_are_counted_up_to_a_bound_then_as_a_lower_bound() -> None:
    counts = CappedCounter(cap=1)
    counts.add("kept")
    for i in range(FOLDED_TRACKED + 10):
        counts.add(f"n{i}")
        counts.add(f"n{i}")
    assert counts.other == 2 * (FOLDED_TRACKED + 10)
    assert counts.folded == FOLDED_TRACKED
    assert not counts.folded_exact
    assert counts.describe_other().startswith(f"(other): more than {FOLDED_TRACKED:,}")


def _nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(FINITE, min_size=1, max_size=50), st.sampled_from([0.01, 0.5, 0.9, 0.99, 1.0]))
def test_quantiles_are_exact_while_the_values_are_kept(values: list[float], q: float) -> None:
    quantiles = Quantiles(exact_limit=50)
    for value in values:
        quantiles.add(value)
    assert quantiles.exact
    assert quantiles.percentile(q) == _nearest_rank(values, q)
    assert quantiles.percentiles(q, 1.0) == [_nearest_rank(values, q), max(values)]
    assert (quantiles.minimum, quantiles.maximum, len(quantiles)) == (
        min(values), max(values), len(values))  # fmt: skip


@given(
    st.lists(st.one_of(FINITE, st.just(0.0)), min_size=6, max_size=300),
    st.sampled_from([0.01, 0.5, 0.9, 0.99, 1.0]),
)
def test_past_the_limit_a_percentile_is_within_one_percent(values: list[float], q: float) -> None:
    quantiles = Quantiles(exact_limit=5)
    for value in values:
        quantiles.add(value)
    assert not quantiles.exact
    got, want = quantiles.percentile(q), _nearest_rank(values, q)
    assert got is not None
    assert math.isclose(got, want, rel_tol=0.011, abs_tol=1e-300), (got, want)
    assert quantiles.maximum == max(values)


def test_many_values_take_bounded_memory() -> None:
    quantiles = Quantiles(exact_limit=1000)
    rng = random.Random(7)
    for _ in range(200_000):
        quantiles.add(rng.expovariate(1 / 5000))
    assert not quantiles.exact
    assert len(quantiles._buckets) < 3000
    p50 = quantiles.percentile(0.5)
    assert p50 is not None
    assert math.isclose(p50, 5000 * math.log(2), rel_tol=0.03)
    assert Quantiles().percentile(0.5) is None


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(bounded).failed == 0
