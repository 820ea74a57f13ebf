"""Minor units ↔ the formats gateways speak, exactly, with `decimal.Decimal`.

Inside orderpipe money is an `int` of minor units (paisa, cents). eSewa wants and answers rupees
with decimals ("1500.5", 100.0); Khalti and Stripe speak minor-unit integers already. Nothing is
ever rounded: a value that is not a whole number of minor units is refused with `MoneyError`,
because a rounded amount is a wrong amount.
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

# Digits after the decimal point of each currency we take (ISO 4217 exponent).
CURRENCY_EXPONENTS = {"NPR": 2, "USD": 2, "EUR": 2, "GBP": 2, "INR": 2, "JPY": 0}
# The largest amount we convert: the database stores minor units in a BIGINT.
MAX_MINOR = 2**63 - 1
# Arithmetic that raises instead of rounding: 40 digits hold any BIGINT with room to spare.
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])


class MoneyError(ValueError):
    """An amount that cannot be converted exactly (fractional minor units, negative, not a number)."""


def exponent_of(currency: str) -> int:
    """Digits after the decimal point for `currency`; MoneyError for one we do not know."""
    try:
        return CURRENCY_EXPONENTS[currency.upper()]
    except (KeyError, AttributeError):
        raise MoneyError(f"Unknown currency {currency!r}.") from None


def minor_to_major_string(amount_minor: int, currency: str = "NPR") -> str:
    """150050 paisa → "1500.5"; 100000 → "1000" (no exponent notation, no trailing zeros)."""
    _require_minor(amount_minor)
    major = Decimal(amount_minor).scaleb(-exponent_of(currency), context=_EXACT)
    return format(major.normalize(context=_EXACT), "f")


def major_to_minor(value: Any, currency: str = "NPR") -> int:
    """A gateway's major-unit amount ("1000.0", 100.0, 110, Decimal) → minor units, exactly.

    Floats are read through their shortest repr (100.1 → "100.1"), which is the number the gateway
    wrote in its JSON; anything finer than one minor unit is refused rather than rounded.
    """
    if isinstance(value, bool) or value is None:
        raise MoneyError(f"Not an amount: {value!r}.")
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int | Decimal):
        try:
            text = str(value)
        except ValueError:  # an int of more digits than Python turns into text (sys.get_int_max_str_digits)
            raise MoneyError("Amount out of range.") from None
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise MoneyError(f"Not an amount: {type(value).__name__}.")
    try:
        major = Decimal(text)
    except InvalidOperation:
        raise MoneyError(f"Not an amount: {text[:40]!r}.") from None
    if not major.is_finite():
        raise MoneyError(f"Not a finite amount: {text[:40]!r}.")
    if major < 0:
        raise MoneyError(f"Negative amount: {text[:40]!r}.")
    if major.adjusted() > 20:  # checked before scaling, so a huge exponent never becomes a huge int
        raise MoneyError(f"Amount out of range: {text[:40]!r}.")
    exponent = exponent_of(currency)
    try:
        minor = major.scaleb(exponent, context=_EXACT)
    except Inexact:  # more significant digits than 40, so some are below the minor unit
        minor = None
    if minor is None or minor != minor.to_integral_value():
        raise MoneyError(f"{text[:40]!r} is not a whole number of minor units of {currency.upper()}.")
    result = int(minor)
    if result > MAX_MINOR:
        raise MoneyError(f"Amount out of range: {text[:40]!r}.")
    return result


def minor_from_gateway_integer(value: Any) -> int:
    """A gateway's minor-unit integer (Khalti paisa, Stripe cents) checked to be one: 1000 → 1000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MINOR:
        raise MoneyError(f"Not a minor-unit amount: {value!r}.")
    return value


def _require_minor(amount_minor: Any) -> None:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise MoneyError(f"Minor units must be an int, not {type(amount_minor).__name__}.")
    if not 0 <= amount_minor <= MAX_MINOR:
        raise MoneyError("Minor units must be between 0 and 2**63 - 1.")
