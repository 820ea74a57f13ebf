"""Minor units ↔ gateway formats: exact, never rounded."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.gateways.money import (
    MAX_MINOR,
    MoneyError,
    major_to_minor,
    minor_from_gateway_integer,
    minor_to_major_string,
)


@pytest.mark.parametrize(("minor", "text"), [
    (150050, "1500.5"), (150055, "1500.55"), (100000, "1000"), (11000, "110"), (1, "0.01"), (10, "0.1"), (0, "0"),
    (MAX_MINOR, "92233720368547758.07"),
])
def test_paisa_become_the_rupee_string_esewa_signs(minor, text):
    assert minor_to_major_string(minor, "NPR") == text


@pytest.mark.parametrize(("value", "minor"), [
    ("1000.0", 100000), (100.0, 10000), (110, 11000), ("1500.50", 150050), ("1500.5", 150050), (0.1, 10),
    (1500.55, 150055), (Decimal("12.34"), 1234), (" 7.00 ", 700),
])
def test_esewa_amounts_become_paisa_exactly(value, minor):
    assert major_to_minor(value, "NPR") == minor


@pytest.mark.parametrize("value", [
    "100.005", 100.005, "0.001", "nan", "NaN", "inf", float("inf"), float("nan"), "-1", -0.01, "abc", "", None, True,
    [], "1e999999999", "92233720368547758.08",
])
def test_amounts_that_are_not_whole_paisa_are_refused_not_rounded(value):
    with pytest.raises(MoneyError):
        major_to_minor(value, "NPR")


@pytest.mark.parametrize("value", [-1, 1.0, True, "100", None, MAX_MINOR + 1])
def test_minor_units_must_be_a_non_negative_int(value):
    with pytest.raises(MoneyError):
        minor_to_major_string(value, "NPR")


def test_a_zero_decimal_currency_has_no_fraction():
    assert minor_to_major_string(500, "JPY") == "500"
    assert major_to_minor("500", "JPY") == 500
    with pytest.raises(MoneyError):
        major_to_minor("500.5", "JPY")


def test_an_unknown_currency_is_refused():
    with pytest.raises(MoneyError):
        minor_to_major_string(100, "XXX")


@pytest.mark.parametrize("value", [1000, 0])
def test_gateway_integers_pass_through(value):
    assert minor_from_gateway_integer(value) == value


@pytest.mark.parametrize("value", [1000.0, "1000", True, -5, None])
def test_gateway_integers_must_be_ints(value):
    with pytest.raises(MoneyError):
        minor_from_gateway_integer(value)


@given(st.integers(min_value=0, max_value=MAX_MINOR))
def test_every_amount_round_trips_through_the_rupee_string(minor):
    text = minor_to_major_string(minor, "NPR")
    assert "e" not in text.lower()
    assert not (("." in text) and text.endswith("0"))
    assert major_to_minor(text, "NPR") == minor


@given(st.integers(min_value=0, max_value=10**13))
def test_amounts_round_trip_through_the_float_esewa_answers_with(minor):
    # eSewa's status API answers `total_amount: 100.0` (a JSON float).
    as_float = float(minor_to_major_string(minor, "NPR"))
    assert major_to_minor(as_float, "NPR") == minor


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=99))
def test_no_float_error_creeps_into_rupees_and_paisa(rupees, paisa):
    assert major_to_minor(f"{rupees}.{paisa:02d}", "NPR") == rupees * 100 + paisa


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=1, max_value=9))
def test_a_thousandth_of_a_rupee_is_always_refused(rupees, thousandth):
    with pytest.raises(MoneyError):
        major_to_minor(f"{rupees}.00{thousandth}", "NPR")
