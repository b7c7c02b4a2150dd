"""Aggregation over profile intervals: exact decimals, aligned periods, truncation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.aggregate import Sample, aggregate, by_period, period_start, periods, truncate

T0 = dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)


def s(minute: int, value: str) -> Sample:
    return Sample(T0 + dt.timedelta(minutes=minute), Decimal(value))


def test_periods_are_aligned_and_whole() -> None:
    got = periods(T0 + dt.timedelta(minutes=7), T0 + dt.timedelta(minutes=50), 900)
    assert got == [(T0 + dt.timedelta(minutes=15), T0 + dt.timedelta(minutes=30)),
                   (T0 + dt.timedelta(minutes=30), T0 + dt.timedelta(minutes=45))]
    assert period_start(T0 + dt.timedelta(hours=13, minutes=3), 86400) == T0


@pytest.mark.parametrize(("how", "expected"), [("last", "4417.300"), ("max", "4417.300"), ("sum", "13251.600"),
                                               ("delta", "0.200"), ("mean", "4417.2")])
def test_each_aggregation(how: str, expected: str) -> None:
    samples = [s(1, "4417.100"), s(5, "4417.200"), s(9, "4417.300")]
    assert aggregate(samples, how, before=s(-1, "4417.100")) == Decimal(expected)  # type: ignore[arg-type]


def test_delta_without_a_previous_sample_counts_from_the_first_in_the_period() -> None:
    assert aggregate([s(1, "10.5"), s(2, "11.0")], "delta") == Decimal("0.5")
    assert aggregate([], "last") is None


def test_truncation_never_rounds_up() -> None:
    assert truncate(Decimal("4417.2189"), 3) == Decimal("4417.218")
    assert truncate(Decimal("-0.0009"), 3) == Decimal("-0.000")
    assert truncate(Decimal(12), 2) == Decimal("12.00")


def test_samples_fall_into_their_period_with_the_one_before() -> None:
    bounds = [(T0, T0 + dt.timedelta(minutes=15)), (T0 + dt.timedelta(minutes=15), T0 + dt.timedelta(minutes=30))]
    split = by_period([s(20, "2"), s(3, "1"), s(15, "1.5")], bounds)
    assert [len(inside) for _, inside, _ in split] == [1, 2]
    assert split[1][2] == s(3, "1")


@given(st.lists(st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False), min_size=1, max_size=40),
       st.integers(0, 6))
def test_exact_and_bounded(values: list[Decimal], places: int) -> None:
    samples = [Sample(T0 + dt.timedelta(seconds=i), v) for i, v in enumerate(values)]
    assert aggregate(samples, "sum") == sum(values, Decimal(0))
    mean = aggregate(samples, "mean")
    assert mean is not None and min(values) <= mean <= max(values)
    assert truncate(mean, places) <= mean
