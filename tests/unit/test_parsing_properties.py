"""Property tests for everything that reads bytes from outside: it answers or refuses, and never raises
anything but its documented refusal (which the HTTP layer turns into a 4xx, or 503 for a gateway).

- eSewa redirect `data`: a dict of the signed strings, or InvalidSignature (a BadRequest);
- gateway answers (eSewa status, Khalti lookup, Stripe retrieve): a PaymentCheck with the exact amount,
  GatewayUnavailable (nonsense is never a verdict), or BadRequest;
- money: exact conversion or MoneyError; Khalti's and Stripe's minor-unit integers round trip unchanged;
- `shared.http.json_object`: a dict, or InvalidJson / PayloadTooLarge;
- webhook signature checks: WebhookSignatureInvalid for anything that is not a valid signature;
- `describe_validation_errors`: names fields and reasons, never the values sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from shared import errors
from shared.config import Settings
from shared.gateways.base import IntentRef, PaymentCheck
from shared.gateways.esewa import EsewaGateway, decode_redirect_data
from shared.gateways.khalti import KhaltiGateway
from shared.gateways.money import (
    CURRENCY_EXPONENTS,
    MAX_MINOR,
    MoneyError,
    major_to_minor,
    minor_from_gateway_integer,
    minor_to_major_string,
)
from shared.gateways.stripe import StripeGateway, payment_check_from_intent
from shared.http import MAX_BODY_BYTES, describe_validation_errors, json_object
from shared.secrets import generate_secret
from shared.webhooks import hmac_body, standard, stripe
from tests.conftest import ESEWA_UAT_SECRET

# JSON values as a gateway or a sender could write them (no NaN: JSON has none).
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Text as json.loads can produce it, unpaired surrogates ("\ud800") included.
any_text = st.text(st.characters(codec=None, categories=None), max_size=40)


class _Secrets:
    def __init__(self, values: dict[str, str]):
        self.values = values

    def get(self, name: str) -> str:
        return self.values[name]


SECRETS = _Secrets({"esewa-secret-key": ESEWA_UAT_SECRET, "khalti-secret-key": "live_secret_key_test",
                    "stripe-api-key": "sk_test_property"})
SETTINGS = Settings(ESEWA_PRODUCT_CODE="EPAYTEST", ESEWA_FORM_URL="https://esewa.test/form",
                    ESEWA_STATUS_URL="https://esewa.test/status/", KHALTI_BASE_URL="https://khalti.test/api/v2/",
                    STRIPE_API_BASE="https://stripe.test")


def _answering(gateway, status: int, content: bytes):
    """The gateway, its HTTP client answering every call with `status` and `content`."""
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content))
    gateway._http._client = httpx.Client(transport=transport)
    return gateway


# --- eSewa redirect data ----------------------------------------------------------------------------------------------


def _encodings(raw: bytes) -> st.SearchStrategy[str]:
    standard_b64 = base64.b64encode(raw).decode()
    return st.sampled_from([standard_b64, base64.urlsafe_b64encode(raw).decode(), standard_b64.rstrip("="),
                            standard_b64.replace("+", " "), " " + standard_b64 + "\n"])


def _decode_or_refuse(data: Any) -> dict[str, str] | None:
    try:
        fields = decode_redirect_data(data, ESEWA_UAT_SECRET)
    except errors.InvalidSignature:
        return None
    assert isinstance(fields, dict) and all(isinstance(v, str) for v in fields.values())
    return fields


@settings(max_examples=300)
@given(st.one_of(any_text, st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ ",
                                   max_size=200), st.none(), st.integers(), st.binary(max_size=50)))
def test_esewa_data_of_any_text_is_decoded_or_refused_as_invalid_signature(data):
    _decode_or_refuse(data)


@settings(max_examples=300)
@given(st.data(), st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                            st.dictionaries(any_text, any_text, max_size=8).map(
                                lambda d: json.dumps(d).encode())))
def test_esewa_data_of_any_base64_payload_is_decoded_or_refused(data, raw):
    _decode_or_refuse(data.draw(_encodings(raw)))


@pytest.mark.parametrize("raw", [
    b"[" * 5000 + b"]" * 5000,  # deeper than json can recurse
    b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}",
    json.dumps({"total_amount": "\ud800", "transaction_uuid": "a", "product_code": "EPAYTEST",
                "signed_field_names": "total_amount,transaction_uuid,product_code", "signature": "x"}).encode(),
    json.dumps({"total_amount": "1", "transaction_uuid": "a", "product_code": "EPAYTEST",
                "signed_field_names": "total_amount,transaction_uuid,product_code", "signature": "\udfff"}).encode(),
])
def test_esewa_data_that_is_absurdly_nested_or_not_unicode_is_an_invalid_signature(raw):
    # Both raised RecursionError / UnicodeEncodeError (a 500 from verify_payment) before.
    with pytest.raises(errors.InvalidSignature):
        decode_redirect_data(base64.b64encode(raw).decode(), ESEWA_UAT_SECRET)


def _signed(fields: dict[str, str], secret: str = ESEWA_UAT_SECRET) -> str:
    message = ",".join(f"{name}={fields[name]}" for name in fields["signed_field_names"].split(","))
    signature = base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()
    return base64.b64encode(json.dumps({**fields, "signature": signature}).encode()).decode()


redirect_fields = st.fixed_dictionaries({
    "transaction_code": st.text(max_size=12), "status": st.sampled_from(["COMPLETE", "PENDING"]),
    "total_amount": st.integers(0, 10**9).map(lambda n: minor_to_major_string(n)),
    "transaction_uuid": st.from_regex(r"[A-Za-z0-9-]{1,40}", fullmatch=True),
    "product_code": st.just("EPAYTEST"),
}).map(lambda f: {**f, "signed_field_names": "transaction_code,status,total_amount,transaction_uuid,product_code,"
                                                   "signed_field_names"})


@given(redirect_fields)
def test_signed_esewa_data_decodes_to_exactly_the_signed_strings(fields):
    decoded = decode_redirect_data(_signed(fields), ESEWA_UAT_SECRET)
    assert {name: decoded[name] for name in fields} == fields


@given(redirect_fields, st.sampled_from(["status", "total_amount", "transaction_uuid"]), st.text(min_size=1,
                                                                                                   max_size=5))
def test_changing_any_signed_esewa_field_breaks_the_signature(fields, name, suffix):
    data = json.loads(base64.b64decode(_signed(fields)))
    data[name] += suffix
    with pytest.raises(errors.InvalidSignature):
        decode_redirect_data(base64.b64encode(json.dumps(data).encode()).decode(), ESEWA_UAT_SECRET)


# --- gateway answers ----------------------------------------------------------------------------------------------


def _check_or_refuse(call) -> PaymentCheck | None:
    try:
        check = call()
    except (errors.GatewayUnavailable, errors.BadRequest):
        return None
    assert isinstance(check, PaymentCheck) and check.state in ("completed", "pending", "failed")
    if check.state == "completed":
        assert isinstance(check.amount_minor, int) and 0 <= check.amount_minor <= MAX_MINOR
    return check


gateway_bodies = st.one_of(st.binary(max_size=100), json_values.map(lambda v: json.dumps(v).encode()),
                           st.dictionaries(st.sampled_from(["status", "total_amount", "transaction_id", "pidx", "id",
                                                            "amount_received", "currency", "metadata", "ref_id",
                                                            "transaction_uuid", "detail", "product_code"]),
                                           json_values, max_size=8).map(lambda d: json.dumps(d).encode()))
statuses = st.sampled_from([200, 200, 200, 400, 404, 500])
intent = IntentRef("opi_0123456789abcdef0123456789abcdef", 150050, "NPR", external_reference="ref-1")


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(statuses, gateway_bodies)
def test_any_esewa_status_answer_is_a_check_or_unavailable(status, body):
    _check_or_refuse(lambda: _answering(EsewaGateway(SETTINGS, SECRETS), status, body).check_payment(intent, None))


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(statuses, gateway_bodies)
def test_any_khalti_lookup_answer_is_a_check_or_unavailable(status, body):
    _check_or_refuse(lambda: _answering(KhaltiGateway(SETTINGS, SECRETS), status, body).check_payment(intent, None))


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(statuses, gateway_bodies)
def test_any_stripe_retrieve_answer_is_a_check_or_unavailable(status, body):
    stripe_intent = IntentRef(intent.payment_intent_id, 150050, "NPR", external_reference="pi_1")
    _check_or_refuse(lambda: _answering(StripeGateway(SETTINGS, SECRETS), status, body)
                     .check_payment(stripe_intent, None))


@pytest.mark.parametrize(("gateway", "status", "body"), [
    # Each raised TypeError / AttributeError (a 500 from verify_payment, a crashed reconcile run) before.
    (KhaltiGateway, 404, {"status": ["Expired"], "detail": "x"}),
    (StripeGateway, 200, {"id": "pi_1", "status": "succeeded", "amount_received": 150050, "currency": "npr",
                          "metadata": ["not", "an", "object"]}),
])
def test_gateway_answers_of_the_wrong_shape_are_unavailable_or_read(gateway, status, body):
    ref = IntentRef(intent.payment_intent_id, 150050, "NPR", external_reference="pi_1")
    _check_or_refuse(lambda: _answering(gateway(SETTINGS, SECRETS), status, json.dumps(body).encode())
                     .check_payment(ref, None))


@given(st.integers(0, MAX_MINOR))
def test_khalti_paisa_round_trip_exactly(amount):
    body = json.dumps({"status": "Completed", "total_amount": amount, "transaction_id": "t1", "pidx": "ref-1"})
    check = _answering(KhaltiGateway(SETTINGS, SECRETS), 200, body.encode()).check_payment(intent, None)
    assert check.state == "completed" and check.amount_minor == amount


@given(st.integers(0, MAX_MINOR), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_stripe_minor_units_round_trip_exactly(amount, currency):
    obj = json.loads(json.dumps({"id": "pi_1", "status": "succeeded", "amount_received": amount,
                                 "currency": currency.lower()}))
    check = payment_check_from_intent(obj)
    assert (check.amount_minor, check.currency) == (amount, currency)


@given(st.one_of(st.floats(), st.text(), st.booleans(), st.none(), st.integers(max_value=-1),
                 st.integers(min_value=MAX_MINOR + 1), st.decimals()))
def test_an_amount_that_is_not_a_minor_unit_integer_is_never_read_as_one(value):
    with pytest.raises(MoneyError):
        minor_from_gateway_integer(value)
    with pytest.raises(errors.GatewayUnavailable):
        payment_check_from_intent({"id": "pi_1", "status": "succeeded", "amount_received": value, "currency": "usd"})


# --- money ---------------------------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=30), st.floats(), st.integers(), st.decimals(), st.booleans(), st.none(),
                 st.lists(st.integers(), max_size=2), st.from_regex(r"-?[0-9]{0,25}(\.[0-9]{0,6})?(e-?[0-9]{1,3})?")),
       st.sampled_from([*CURRENCY_EXPONENTS, "XXX", "npr"]))
def test_major_to_minor_converts_exactly_or_refuses(value, currency):
    try:
        minor = major_to_minor(value, currency)
    except MoneyError:
        return
    assert isinstance(minor, int) and 0 <= minor <= MAX_MINOR
    # Exact: the major amount it came from is that many minor units, not a rounding of it.
    exponent = CURRENCY_EXPONENTS[currency.upper()]
    text = repr(value) if isinstance(value, float) else str(value).strip()
    assert Decimal(minor).scaleb(-exponent) == Decimal(text)


def test_an_int_too_long_to_print_is_a_money_error():
    with pytest.raises(MoneyError):  # a plain ValueError (Python's int → str limit) before
        major_to_minor(10**5000)


@pytest.mark.parametrize("value", ["1.0000000000000000000000000000000000000000001", Decimal("7." + "1" * 60)])
def test_more_digits_than_the_exact_context_holds_is_a_money_error(value):
    with pytest.raises(MoneyError):  # decimal.Inexact escaped before (a 500 from an eSewa amount like this)
        major_to_minor(value)
    assert major_to_minor("100." + "0" * 60) == 10000  # trailing zeros are still exact


@given(st.integers(0, MAX_MINOR), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_every_currency_round_trips_through_its_major_string(minor, currency):
    assert major_to_minor(minor_to_major_string(minor, currency), currency) == minor


# --- JSON bodies -----------------------------------------------------------------------------------------------------


def _request(body: bytes) -> Request:
    return Request(EnvironBuilder(method="POST", data=body, content_type="application/json").get_environ())


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 json_values.map(lambda v: json.dumps(v).encode("utf-16")),
                 st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),
                 st.integers(1, 20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)))
def test_json_object_answers_a_dict_or_invalid_json(body):
    try:
        value = json_object(_request(body))
    except errors.InvalidJson:
        return
    assert isinstance(value, dict)


def test_json_object_refuses_a_body_over_1_mib_before_parsing_it():
    body = b'{"a":"' + b"x" * MAX_BODY_BYTES + b'"}'
    with pytest.raises(errors.PayloadTooLarge):
        json_object(_request(body))
    unannounced = Request(EnvironBuilder(method="POST", input_stream=__import__("io").BytesIO(body)).get_environ())
    with pytest.raises(errors.PayloadTooLarge):
        json_object(unannounced)


# --- webhook signatures --------------------------------------------------------------------------------------------

STRIPE_SECRET = generate_secret("stripe-webhook-secret")
STANDARD_SECRET = generate_secret("standard-webhook-secret")
BODY_SECRET = generate_secret("verification-webhook-secret")


@settings(max_examples=300)
@given(st.binary(max_size=100), st.one_of(st.none(), st.text(max_size=300),
                                          st.builds(lambda t, v: f"t={t},v1={v}", st.text(max_size=12),
                                                    st.text(max_size=70))))
def test_any_stripe_signature_header_verifies_or_is_refused(payload, header):
    try:
        stripe.verify(payload, header, STRIPE_SECRET)
    except errors.WebhookSignatureInvalid:
        return
    raise AssertionError("an arbitrary header verified")


@settings(max_examples=300)
@given(st.binary(max_size=100), st.dictionaries(
    st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "Webhook-Id"]),
    st.text(max_size=80), max_size=4))
def test_any_standard_webhook_headers_verify_or_are_refused(payload, headers):
    try:
        standard.verify(payload, headers, STANDARD_SECRET)
    except errors.WebhookSignatureInvalid:
        return
    raise AssertionError("arbitrary headers verified")


@given(st.binary(max_size=100), st.one_of(st.none(), st.text(max_size=300)))
def test_any_body_signature_verifies_or_is_refused(payload, signature):
    try:
        hmac_body.verify(payload, signature, BODY_SECRET)
    except errors.WebhookSignatureInvalid:
        return
    raise AssertionError("an arbitrary signature verified")


# --- validation errors -----------------------------------------------------------------------------------------------

MARKER = "QZJX_VALUE_SENT_7731"  # a value no message or field name could contain by itself


def _request_models() -> list[type[BaseModel]]:
    from shared.flows import admin, catalog, checkout, reconcile, verification

    return [checkout.CartIn, checkout.PaymentIntentIn, checkout.IdempotencyHeader, verification.VerifyIn,
            reconcile.ReconcileIn, catalog.VendorIn, catalog.ProductIn, catalog.StockIn, admin.JobsQuery,
            admin.ProductsQuery, admin.DaysQuery]


marked = st.one_of(st.just(MARKER), st.builds(lambda a, b: f"{a}{MARKER}{b}", st.text(max_size=5), st.text(max_size=5)))
marked_values = st.recursive(st.one_of(marked, json_scalars),
                             lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=3), max_leaves=8)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(range(11)))
def test_validation_errors_name_the_fields_but_never_the_values_sent(data, index):
    model = _request_models()[index]
    fields = list(model.model_fields) + ["items", "extra"]
    body = data.draw(st.dictionaries(st.sampled_from(fields), marked_values, max_size=len(fields)))
    if "items" in body and data.draw(st.booleans()):
        body["items"] = data.draw(st.lists(st.dictionaries(st.sampled_from(["product_id", "quantity", "x"]),
                                                           marked_values, max_size=3), max_size=3))
    assume(MARKER in json.dumps(body, ensure_ascii=False))
    try:
        model.model_validate(body)
    except ValidationError as exc:
        described = json.dumps(describe_validation_errors(exc), ensure_ascii=False)
        assert MARKER not in described, described
        for problem in describe_validation_errors(exc):
            assert set(problem) == {"field", "message", "type"} and all(isinstance(v, str) for v in problem.values())
