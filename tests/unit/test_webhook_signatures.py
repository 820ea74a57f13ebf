"""Webhook signature schemes: Stripe, Standard Webhooks, and the identity provider's body HMAC.

Expected signatures are computed here with the standard library from the documented rules, so
the code under test is checked against the protocol, not against itself.
"""

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import errors
from shared.secrets import generate_secret
from shared.webhooks import hmac_body, standard, stripe

NOW = 1_700_000_000
STRIPE_SECRET = generate_secret("stripe-webhook-secret")
STANDARD_SECRET = generate_secret("standard-webhook-secret")
BODY_SECRET = generate_secret("verification-webhook-secret")
PAYLOAD = b'{\n  "id": "evt_1",\n  "type": "payment_intent.succeeded"\n}'

payloads = st.binary(max_size=2048)
timestamps = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)


def stripe_hex(payload: bytes, t: int, secret: str = STRIPE_SECRET) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


def change_one_byte(data: bytes, index: int, delta: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([(data[index] + delta) % 256]) + data[index + 1:]


def change_one_char(text: str, index: int, replacement: str) -> str:
    index %= len(text)
    if text[index] == replacement:
        replacement = "x" if replacement != "x" else "y"
    return text[:index] + replacement + text[index + 1:]


# --- Stripe --------------------------------------------------------------------------------------


def test_stripe_signs_t_dot_body_with_the_whole_whsec_string_as_key():
    header = stripe.sign(PAYLOAD, STRIPE_SECRET, NOW)
    assert header == f"t={NOW},v1={stripe_hex(PAYLOAD, NOW)}"
    assert stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=NOW) == NOW


def test_a_key_without_the_whsec_prefix_does_not_verify():
    stripped = STRIPE_SECRET.removeprefix("whsec_")
    header = f"t={NOW},v1={stripe_hex(PAYLOAD, NOW, stripped)}"
    with pytest.raises(errors.WebhookSignatureInvalid):
        stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=NOW)


def test_during_rotation_any_v1_may_match():
    old_secret = generate_secret("stripe-webhook-secret")
    header = f"t={NOW},v1={stripe_hex(PAYLOAD, NOW, old_secret)},v1={stripe_hex(PAYLOAD, NOW)},v0=deadbeef"
    assert stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=NOW) == NOW
    assert stripe.verify(PAYLOAD, header, old_secret, now=NOW) == NOW


def test_only_v1_counts():
    header = f"t={NOW},v0={stripe_hex(PAYLOAD, NOW)}"
    with pytest.raises(errors.WebhookSignatureInvalid):
        stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=NOW)


@pytest.mark.parametrize("header", [None, "", "garbage", f"v1={'a' * 64}", "t=abc,v1=00", "t=,v1=00", "t=1,v1="])
def test_a_missing_or_malformed_stripe_header_is_refused(header):
    with pytest.raises(errors.WebhookSignatureInvalid):
        stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=NOW)


@pytest.mark.parametrize(("age", "ok"), [(0, True), (300, True), (-300, True), (301, False), (-301, False),
                                         (86_400, False), (-86_400, False)])
def test_stripe_tolerance_is_300_seconds_both_ways(age, ok):
    header = stripe.sign(PAYLOAD, STRIPE_SECRET, NOW - age)
    if ok:
        assert stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=NOW) == NOW - age
    else:
        with pytest.raises(errors.WebhookSignatureInvalid):
            stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=NOW)


@given(payloads, timestamps)
def test_stripe_sign_then_verify_round_trips(payload, t):
    assert stripe.verify(payload, stripe.sign(payload, STRIPE_SECRET, t), STRIPE_SECRET, now=t) == t


@given(payloads.filter(bool), st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_stripe_any_single_byte_change_of_the_body_fails(payload, index, delta):
    header = stripe.sign(payload, STRIPE_SECRET, NOW)
    with pytest.raises(errors.WebhookSignatureInvalid):
        stripe.verify(change_one_byte(payload, index, delta), header, STRIPE_SECRET, now=NOW)


@given(st.integers(min_value=0), st.characters(codec="ascii"))
def test_stripe_any_single_character_change_of_the_header_fails(index, replacement):
    header = stripe.sign(PAYLOAD, STRIPE_SECRET, NOW)
    with pytest.raises(errors.WebhookSignatureInvalid):
        stripe.verify(PAYLOAD, change_one_char(header, index, replacement), STRIPE_SECRET, now=NOW)


@given(timestamps, st.integers(min_value=301, max_value=10**8), st.sampled_from([-1, 1]))
def test_stripe_timestamps_outside_the_tolerance_fail(t, distance, direction):
    header = stripe.sign(PAYLOAD, STRIPE_SECRET, t)
    with pytest.raises(errors.WebhookSignatureInvalid):
        stripe.verify(PAYLOAD, header, STRIPE_SECRET, now=t + direction * distance)


@given(payloads)
def test_stripe_another_secret_never_verifies(payload):
    header = stripe.sign(payload, generate_secret("stripe-webhook-secret"), NOW)
    with pytest.raises(errors.WebhookSignatureInvalid):
        stripe.verify(payload, header, STRIPE_SECRET, now=NOW)


# --- Standard Webhooks ---------------------------------------------------------------------------


def standard_b64(payload: bytes, msg_id: str, t: int, secret: str = STANDARD_SECRET) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return base64.b64encode(hmac.new(key, f"{msg_id}.{t}.".encode() + payload, hashlib.sha256).digest()).decode()


def test_standard_signs_id_timestamp_body_with_the_decoded_key():
    headers = standard.sign(PAYLOAD, STANDARD_SECRET, msg_id="msg_1", timestamp=NOW)
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": str(NOW),
                       "webhook-signature": f"v1,{standard_b64(PAYLOAD, 'msg_1', NOW)}"}
    assert standard.verify(PAYLOAD, headers, STANDARD_SECRET, now=NOW) == "msg_1"


def test_standard_headers_are_found_whatever_their_case():
    headers = {k.title(): v for k, v in standard.sign(PAYLOAD, STANDARD_SECRET, msg_id="m", timestamp=NOW).items()}
    assert standard.verify(PAYLOAD, headers, STANDARD_SECRET, now=NOW) == "m"


def test_standard_any_v1_in_the_list_may_match_and_other_versions_are_ignored():
    good = standard_b64(PAYLOAD, "m", NOW)
    headers = {"webhook-id": "m", "webhook-timestamp": str(NOW),
               "webhook-signature": f"v1a,{good} v1,{base64.b64encode(b'x' * 32).decode()} v1,{good}"}
    assert standard.verify(PAYLOAD, headers, STANDARD_SECRET, now=NOW) == "m"
    headers["webhook-signature"] = f"v1a,{good} v2,{good}"
    with pytest.raises(errors.WebhookSignatureInvalid):
        standard.verify(PAYLOAD, headers, STANDARD_SECRET, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_needs_all_three_headers(missing):
    headers = standard.sign(PAYLOAD, STANDARD_SECRET, msg_id="m", timestamp=NOW)
    del headers[missing]
    with pytest.raises(errors.WebhookSignatureInvalid):
        standard.verify(PAYLOAD, headers, STANDARD_SECRET, now=NOW)


def test_a_secret_that_is_not_whsec_base64_is_our_configuration_error():
    headers = standard.sign(PAYLOAD, STANDARD_SECRET, msg_id="m", timestamp=NOW)
    with pytest.raises(errors.ConfigurationError):
        standard.verify(PAYLOAD, headers, "whsec_not base64!", now=NOW)


@given(payloads, timestamps, st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=40))
def test_standard_sign_then_verify_round_trips(payload, t, msg_id):
    headers = standard.sign(payload, STANDARD_SECRET, msg_id=msg_id, timestamp=t)
    assert standard.verify(payload, headers, STANDARD_SECRET, now=t) == msg_id


@given(payloads.filter(bool), st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_standard_any_single_byte_change_of_the_body_fails(payload, index, delta):
    headers = standard.sign(payload, STANDARD_SECRET, msg_id="m", timestamp=NOW)
    with pytest.raises(errors.WebhookSignatureInvalid):
        standard.verify(change_one_byte(payload, index, delta), headers, STANDARD_SECRET, now=NOW)


@given(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]), st.integers(min_value=0),
       st.characters(codec="ascii", exclude_characters=" "))
def test_standard_any_single_character_change_of_a_header_fails(name, index, replacement):
    headers = standard.sign(PAYLOAD, STANDARD_SECRET, msg_id="msg_2", timestamp=NOW)
    headers[name] = change_one_char(headers[name], index, replacement)
    with pytest.raises(errors.WebhookSignatureInvalid):
        standard.verify(PAYLOAD, headers, STANDARD_SECRET, now=NOW)


@given(timestamps, st.integers(min_value=301, max_value=10**8), st.sampled_from([-1, 1]))
def test_standard_timestamps_outside_five_minutes_fail(t, distance, direction):
    headers = standard.sign(PAYLOAD, STANDARD_SECRET, msg_id="m", timestamp=t)
    with pytest.raises(errors.WebhookSignatureInvalid):
        standard.verify(PAYLOAD, headers, STANDARD_SECRET, now=t + direction * distance)


# --- identity-verification provider (hex HMAC of the body) ---------------------------------------


def test_the_body_hmac_is_lowercase_hex_of_the_raw_body():
    body = b'{"id":"evt_1","event":"verification.updated","status":"approved","order_id":"o1"}'
    expected = hmac.new(BODY_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac_body.sign(body, BODY_SECRET) == expected
    hmac_body.verify(body, expected, BODY_SECRET)


@pytest.mark.parametrize("signature", [None, "", "00" * 32, "z" * 10_000])
def test_a_missing_or_wrong_body_signature_is_refused(signature):
    with pytest.raises(errors.WebhookSignatureInvalid):
        hmac_body.verify(PAYLOAD, signature, BODY_SECRET)


@given(payloads)
def test_body_hmac_sign_then_verify_round_trips(payload):
    hmac_body.verify(payload, hmac_body.sign(payload, BODY_SECRET), BODY_SECRET)


@given(payloads.filter(bool), st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_body_hmac_any_single_byte_change_of_the_body_fails(payload, index, delta):
    signature = hmac_body.sign(payload, BODY_SECRET)
    with pytest.raises(errors.WebhookSignatureInvalid):
        hmac_body.verify(change_one_byte(payload, index, delta), signature, BODY_SECRET)


@settings(max_examples=200)
@given(st.integers(min_value=0), st.characters(codec="ascii"))
def test_body_hmac_any_single_character_change_of_the_signature_fails(index, replacement):
    signature = hmac_body.sign(PAYLOAD, BODY_SECRET)
    with pytest.raises(errors.WebhookSignatureInvalid):
        hmac_body.verify(PAYLOAD, change_one_char(signature, index, replacement), BODY_SECRET)


def test_no_error_message_reveals_the_expected_signature():
    expected = hmac_body.sign(PAYLOAD, BODY_SECRET)
    with pytest.raises(errors.WebhookSignatureInvalid) as caught:
        hmac_body.verify(PAYLOAD, "00", BODY_SECRET)
    assert expected not in str(caught.value) and BODY_SECRET not in str(caught.value)
    header = stripe.sign(PAYLOAD, STRIPE_SECRET, NOW)
    with pytest.raises(errors.WebhookSignatureInvalid) as caught:
        stripe.verify(PAYLOAD + b" ", header, STRIPE_SECRET, now=NOW)
    assert stripe_hex(PAYLOAD + b" ", NOW) not in str(caught.value)
