"""Refund allocation and metrics days, without I/O."""

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import errors
from shared.flows.metrics import allocate_by_weight, day_of

weights = st.dictionaries(st.uuids().map(str), st.integers(min_value=0, max_value=10**12), min_size=1, max_size=12)


@given(amount=st.integers(min_value=0, max_value=10**13), weights=weights)
def test_allocations_sum_exactly_and_each_is_its_share_rounded_down_or_up(amount, weights):
    if sum(weights.values()) == 0:
        return
    shares = allocate_by_weight(amount, weights)
    total = sum(weights.values())
    assert sum(shares.values()) == amount
    for key, weight in weights.items():
        exact_floor = amount * weight // total
        assert shares[key] in (exact_floor, exact_floor + 1)


def test_the_leftover_unit_goes_to_the_largest_remainder_then_the_smaller_key():
    assert allocate_by_weight(1001, {"tea": 20, "crafts": 999}) == {"tea": 20, "crafts": 981}
    assert allocate_by_weight(100, {"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert allocate_by_weight(1, {"b": 1, "a": 1}) == {"a": 1, "b": 0}


def test_nothing_to_share_by_is_refused():
    with pytest.raises(ValueError):
        allocate_by_weight(10, {"a": 0})


def test_the_day_is_the_date_in_the_metrics_time_zone():
    kathmandu = SimpleNamespace(metrics_timezone="Asia/Kathmandu")
    assert day_of(datetime(2024, 3, 10, 18, 14, 59, tzinfo=UTC), kathmandu) == date(2024, 3, 10)
    assert day_of(datetime(2024, 3, 10, 18, 15, tzinfo=UTC), kathmandu) == date(2024, 3, 11)
    assert day_of(datetime(2024, 3, 10, 23, 59), SimpleNamespace(metrics_timezone="UTC")) == date(2024, 3, 10)


def test_an_unknown_time_zone_is_a_configuration_error():
    with pytest.raises(errors.ConfigurationError):
        day_of(datetime.now(UTC), SimpleNamespace(metrics_timezone="Mars/Olympus_Mons"))
