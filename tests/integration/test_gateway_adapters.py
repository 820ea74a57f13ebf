"""The production gateway adapters against the gateway simulator, over real HTTP."""

import json
import logging
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from shared import errors
from shared.gateways.base import IntentRef, PaymentRequest
from shared.gateways.khalti import KhaltiGateway
from shared.gateways.stripe import StripeGateway, payment_check_from_intent
from shared.runtime import get_runtime, reset_runtime
from shared.secrets import FileSecrets
from shared.simulator.client import EventReceiver
from shared.simulator.server import SimulatorServer
from shared.webhooks import stripe as stripe_webhooks


@pytest.fixture
def gateways(simulator):
    return get_runtime().gateways


def payment_request(amount_minor=150050, currency="NPR", intent_id=None) -> PaymentRequest:
    return PaymentRequest(intent_id or str(uuid.uuid4()), amount_minor, currency, "cust-1", "Order of two mugs",
                          "https://shop.test/paid", "https://shop.test/failed")


def intent_of(request: PaymentRequest, start) -> IntentRef:
    return IntentRef(request.payment_intent_id, request.amount_minor, request.currency, start.external_reference)


def query(url: str) -> dict[str, str]:
    # parse_qs decodes like a storefront's framework would ('+' becomes ' '), which eSewa's raw base64 must survive.
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def with_short_timeout(monkeypatch, seconds=0.5):
    monkeypatch.setenv("GATEWAY_TIMEOUT_S", str(seconds))
    reset_runtime()
    return get_runtime().gateways


# --- eSewa ---------------------------------------------------------------------------------------


def esewa_started(gateways, simulator, amount_minor=150050):
    request = payment_request(amount_minor)
    start = gateways["esewa"].start_payment(request)
    submitted = simulator.submit_esewa_form(start.client["form_url"], start.client["fields"])
    assert submitted.status_code == 200, submitted.text  # the simulator checked our signature
    return request, start, intent_of(request, start)


def test_esewa_completed_payment_is_verified_with_the_status_api(gateways, simulator):
    _, start, intent = esewa_started(gateways, simulator)
    redirect = simulator.pay("esewa", start.external_reference)["redirect_url"]
    assert redirect.startswith("https://shop.test/paid?data=")
    check = gateways["esewa"].check_payment(intent, {"data": query(redirect)["data"]})
    assert check.state == "completed" and check.gateway_status == "COMPLETE"
    assert check.amount_minor == 150050 and check.currency == "NPR"
    assert check.external_transaction_id  # eSewa's ref_id
    # Reconcile asks without a proof and hears the same.
    again = gateways["esewa"].check_payment(intent, None)
    assert (again.state, again.external_transaction_id, again.amount_minor) == (
        "completed", check.external_transaction_id, 150050)


def test_esewa_before_payment_and_when_left_pending_is_pending(gateways, simulator):
    _, start, intent = esewa_started(gateways, simulator)
    assert gateways["esewa"].check_payment(intent, None).state == "pending"
    redirect = simulator.pay("esewa", start.external_reference, outcome="pending")["redirect_url"]
    assert redirect == "https://shop.test/failed"  # eSewa sends PENDING to failure_url too
    check = gateways["esewa"].check_payment(intent, None)
    assert (check.state, check.gateway_status) == ("pending", "PENDING")


def test_esewa_cancelled_payment_is_failed(gateways, simulator):
    _, start, intent = esewa_started(gateways, simulator)
    simulator.pay("esewa", start.external_reference, outcome="failure")
    check = gateways["esewa"].check_payment(intent, None)
    assert (check.state, check.gateway_status, check.amount_minor) == ("failed", "CANCELED", None)


def test_esewa_payment_never_started_is_not_found_and_failed(gateways, simulator):
    request = payment_request()
    start = gateways["esewa"].start_payment(request)  # the customer never posted the form
    check = gateways["esewa"].check_payment(intent_of(request, start), None)
    assert (check.state, check.gateway_status) == ("failed", "NOT_FOUND")


def test_esewa_a_different_amount_paid_is_reported_as_paid(gateways, simulator):
    _, start, intent = esewa_started(gateways, simulator, amount_minor=150050)
    redirect = simulator.pay("esewa", start.external_reference, amount_minor=100000)["redirect_url"]
    check = gateways["esewa"].check_payment(intent, {"data": query(redirect)["data"]})
    assert (check.state, check.amount_minor) == ("completed", 100000)


def test_esewa_forged_redirect_data_is_an_invalid_signature(gateways, simulator):
    _, start, intent = esewa_started(gateways, simulator)
    redirect = simulator.pay("esewa", start.external_reference, outcome="failure")["redirect_url"]
    assert "data=" not in redirect
    import base64

    forged = base64.b64encode(json.dumps({
        "transaction_code": "000FAKE", "status": "COMPLETE", "total_amount": "1500.5",
        "transaction_uuid": start.external_reference, "product_code": "EPAYTEST",
        "signed_field_names": "transaction_code,status,total_amount,transaction_uuid,product_code,signed_field_names",
        "signature": base64.b64encode(b"x" * 32).decode(),
    }).encode()).decode()
    with pytest.raises(errors.InvalidSignature):
        gateways["esewa"].check_payment(intent, {"data": forged})


def test_esewa_data_of_another_payment_is_a_bad_request(gateways, simulator):
    _, first, _ = esewa_started(gateways, simulator)
    _, _, second_intent = esewa_started(gateways, simulator)
    redirect = simulator.pay("esewa", first.external_reference)["redirect_url"]
    with pytest.raises(errors.BadRequest) as caught:
        gateways["esewa"].check_payment(second_intent, {"data": query(redirect)["data"]})
    assert not isinstance(caught.value, errors.InvalidSignature)


def test_esewa_outage_answer_is_gateway_unavailable_then_it_recovers(gateways, simulator):
    _, start, intent = esewa_started(gateways, simulator)
    simulator.pay("esewa", start.external_reference)
    simulator.fault("esewa", "error", count=1)
    with pytest.raises(errors.GatewayUnavailable):
        gateways["esewa"].check_payment(intent, None)
    assert gateways["esewa"].check_payment(intent, None).state == "completed"


def test_esewa_timeout_is_gateway_unavailable_then_it_recovers(simulator, monkeypatch):
    gateways = with_short_timeout(monkeypatch)
    _, start, intent = esewa_started(gateways, simulator)
    simulator.pay("esewa", start.external_reference)
    simulator.fault("esewa", "timeout", count=1, delay_s=2)
    began = time.monotonic()
    with pytest.raises(errors.GatewayUnavailable):
        gateways["esewa"].check_payment(intent, None)
    assert time.monotonic() - began < 1.5  # our timeout, not the simulator's delay
    assert gateways["esewa"].check_payment(intent, None).state == "completed"


# --- Khalti --------------------------------------------------------------------------------------


def khalti_started(gateways, amount_minor=150050):
    request = payment_request(amount_minor)
    start = gateways["khalti"].start_payment(request)
    return request, start, intent_of(request, start)


def test_khalti_start_returns_the_payment_page_and_pidx(gateways, simulator):
    _, start, _ = khalti_started(gateways)
    assert set(start.client) == {"payment_url", "pidx", "expires_at"}
    assert start.external_reference == start.client["pidx"]
    assert start.client["payment_url"].startswith(simulator.url)


def test_khalti_below_ten_rupees_is_refused_before_any_call(gateways, simulator):
    with pytest.raises(errors.BusinessRuleViolated) as caught:
        gateways["khalti"].start_payment(payment_request(999))
    assert caught.value.code == "amount_below_minimum" and caught.value.status == 422


def test_khalti_completed_payment_is_verified_by_lookup(gateways, simulator):
    request, start, intent = khalti_started(gateways)
    redirect = query(simulator.pay("khalti", start.external_reference)["redirect_url"])
    assert redirect["status"] == "Completed" and redirect["purchase_order_id"] == request.payment_intent_id
    check = gateways["khalti"].check_payment(intent, {"pidx": redirect["pidx"]})
    assert (check.state, check.amount_minor, check.currency) == ("completed", 150050, "NPR")
    assert check.external_transaction_id == redirect["transaction_id"]
    assert gateways["khalti"].check_payment(intent, None).state == "completed"


def test_khalti_initiated_and_pending_are_pending(gateways, simulator):
    _, start, intent = khalti_started(gateways)
    assert gateways["khalti"].check_payment(intent, None).gateway_status == "Initiated"
    simulator.pay("khalti", start.external_reference, outcome="pending")
    check = gateways["khalti"].check_payment(intent, None)
    assert (check.state, check.gateway_status) == ("pending", "Pending")


def test_khalti_user_canceled_comes_with_http_400_and_is_failed(gateways, simulator):
    _, start, intent = khalti_started(gateways)
    simulator.pay("khalti", start.external_reference, outcome="failure")
    check = gateways["khalti"].check_payment(intent, None)
    assert (check.state, check.gateway_status) == ("failed", "User canceled")


def test_khalti_expired_comes_with_http_400_and_is_failed(simulator, monkeypatch):
    quick = SimulatorServer(get_runtime().secrets, port=0, khalti_expires_in_s=0).start()
    try:
        monkeypatch.setenv("KHALTI_BASE_URL", f"{quick.url}/api/v2/")
        reset_runtime()
        _, _, intent = khalti_started(get_runtime().gateways)
        check = get_runtime().gateways["khalti"].check_payment(intent, None)
        assert (check.state, check.gateway_status) == ("failed", "Expired")
    finally:
        quick.stop()


def test_khalti_unknown_pidx_is_failed(gateways, simulator):
    intent = IntentRef("pi-x", 150050, "NPR", external_reference="NoSuchPidx00000000000")
    check = gateways["khalti"].check_payment(intent, None)
    assert (check.state, check.gateway_status) == ("failed", "Not found")


def test_khalti_pidx_of_another_payment_is_a_bad_request(gateways, simulator):
    _, _, intent = khalti_started(gateways)
    with pytest.raises(errors.BadRequest):
        gateways["khalti"].check_payment(intent, {"pidx": "SomeOtherPidx"})


def test_khalti_a_different_amount_paid_is_reported_as_paid(gateways, simulator):
    _, start, intent = khalti_started(gateways)
    simulator.pay("khalti", start.external_reference, amount_minor=120000)
    check = gateways["khalti"].check_payment(intent, None)
    assert (check.state, check.amount_minor) == ("completed", 120000)


def test_khalti_wrong_key_is_unavailable_and_logged_as_our_error(simulator, tmp_path, caplog, test_secrets):
    _, start, intent = khalti_started(get_runtime().gateways)
    misconfigured = KhaltiGateway(get_runtime().settings, FileSecrets(tmp_path / "other-secrets.json"))
    with caplog.at_level(logging.DEBUG), pytest.raises(errors.GatewayUnavailable) as caught:
        misconfigured.check_payment(intent, None)
    assert any(r.levelno == logging.ERROR and getattr(r, "provider", "") == "Khalti" for r in caplog.records)
    wrong_key = FileSecrets(tmp_path / "other-secrets.json").get("khalti-secret-key")
    for value in (wrong_key, test_secrets["khalti-secret-key"]):
        assert value not in caplog.text and value not in str(caught.value)


@pytest.mark.parametrize("mode", ["error", "timeout"])
def test_khalti_outage_and_timeout_are_unavailable_then_it_recovers(simulator, monkeypatch, mode):
    gateways = with_short_timeout(monkeypatch)
    _, start, intent = khalti_started(gateways)
    simulator.pay("khalti", start.external_reference)
    simulator.fault("khalti", mode, count=1, delay_s=2)
    with pytest.raises(errors.GatewayUnavailable):
        gateways["khalti"].check_payment(intent, None)
    assert gateways["khalti"].check_payment(intent, None).state == "completed"


# --- Stripe --------------------------------------------------------------------------------------


def stripe_started(gateways, amount_minor=2599, intent_id=None):
    request = payment_request(amount_minor, "USD", intent_id)
    start = gateways["stripe"].start_payment(request)
    return request, start, intent_of(request, start)


def test_stripe_start_creates_a_payment_intent_once_per_intent(gateways, simulator):
    request, start, _ = stripe_started(gateways)
    assert start.external_reference.startswith("pi_")
    assert start.client["stripe_payment_intent_id"] == start.external_reference
    assert start.client["client_secret"].startswith(start.external_reference + "_secret_")
    # A retried start (same intent id → same Idempotency-Key) gets the same PaymentIntent back.
    assert gateways["stripe"].start_payment(request) == start


def test_stripe_succeeded_is_completed_with_amount_received(gateways, simulator):
    _, start, intent = stripe_started(gateways)
    assert gateways["stripe"].check_payment(intent, None).state == "pending"
    simulator.pay("stripe", start.external_reference)
    check = gateways["stripe"].check_payment(intent, None)
    assert (check.state, check.amount_minor, check.currency) == ("completed", 2599, "USD")
    assert check.external_transaction_id == start.external_reference
    assert "client_secret" not in json.dumps(check.raw)


def test_stripe_processing_is_pending(gateways, simulator):
    _, start, intent = stripe_started(gateways)
    simulator.pay("stripe", start.external_reference, outcome="pending")
    check = gateways["stripe"].check_payment(intent, None)
    assert (check.state, check.gateway_status) == ("pending", "processing")


def test_stripe_declined_card_leaves_the_intent_payable_so_it_is_pending(gateways, simulator):
    _, start, intent = stripe_started(gateways)
    simulator.pay("stripe", start.external_reference, outcome="failure")
    check = gateways["stripe"].check_payment(intent, None)
    assert (check.state, check.gateway_status) == ("pending", "requires_payment_method")
    assert check.raw["last_payment_error"]["code"] == "card_declined"
    simulator.pay("stripe", start.external_reference)  # another card
    assert gateways["stripe"].check_payment(intent, None).state == "completed"


def test_stripe_canceled_is_failed(gateways, simulator):
    _, start, intent = stripe_started(gateways)
    simulator.pay("stripe", start.external_reference, outcome="canceled")
    check = gateways["stripe"].check_payment(intent, None)
    assert (check.state, check.gateway_status) == ("failed", "canceled")


def test_stripe_a_different_amount_received_is_reported(gateways, simulator):
    _, start, intent = stripe_started(gateways, amount_minor=2599)
    simulator.pay("stripe", start.external_reference, amount_minor=1000)
    check = gateways["stripe"].check_payment(intent, None)
    assert (check.state, check.amount_minor) == ("completed", 1000)


def test_stripe_webhook_object_reads_the_same_as_a_retrieve(gateways, simulator, test_secrets):
    _, start, intent = stripe_started(gateways)
    with EventReceiver() as receiver:
        simulator.stripe_webhook_url = receiver.url
        simulator.pay("stripe", start.external_reference)
        (_, headers, body), = receiver.requests
    stripe_webhooks.verify(body, headers["Stripe-Signature"], test_secrets["stripe-webhook-secret"])
    event = json.loads(body)
    from_event = payment_check_from_intent(event["data"]["object"])
    retrieved = gateways["stripe"].check_payment(intent, None)
    assert from_event == retrieved


@pytest.mark.parametrize("mode", ["error", "timeout"])
def test_stripe_outage_and_timeout_are_unavailable_then_it_recovers(simulator, monkeypatch, mode):
    gateways = with_short_timeout(monkeypatch)
    _, start, intent = stripe_started(gateways)
    simulator.pay("stripe", start.external_reference)
    simulator.fault("stripe", mode, count=1, delay_s=2)
    with pytest.raises(errors.GatewayUnavailable):
        gateways["stripe"].check_payment(intent, None)
    assert gateways["stripe"].check_payment(intent, None).state == "completed"


def test_stripe_create_that_timed_out_is_found_again_by_its_idempotency_key(simulator, monkeypatch):
    gateways = with_short_timeout(monkeypatch)
    request = payment_request(2599, "USD")
    simulator.fault("stripe", "timeout", count=1, delay_s=1)
    with pytest.raises(errors.GatewayUnavailable):
        gateways["stripe"].start_payment(request)
    # The abandoned create still completes at the simulator, as it may at Stripe; whichever of it and
    # the retry lands first, the Idempotency-Key makes them one PaymentIntent.
    first = gateways["stripe"].start_payment(request)
    assert gateways["stripe"].start_payment(request) == first
    simulator.pay("stripe", first.external_reference)
    assert gateways["stripe"].check_payment(intent_of(request, first), None).state == "completed"


def test_stripe_wrong_key_is_unavailable_and_reveals_no_key(simulator, tmp_path, caplog, test_secrets):
    _, _, intent = stripe_started(get_runtime().gateways)
    other = FileSecrets(tmp_path / "other-secrets.json")
    misconfigured = StripeGateway(get_runtime().settings, other)
    with caplog.at_level(logging.DEBUG), pytest.raises(errors.GatewayUnavailable) as caught:
        misconfigured.check_payment(intent, None)
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    for value in (other.get("stripe-api-key"), test_secrets["stripe-api-key"]):
        assert value not in caplog.text and value not in str(caught.value)


# --- all of them ---------------------------------------------------------------------------------


def test_every_adapter_dry_runs_without_calling_anyone(gateways, simulator):
    _, start, stripe_intent = stripe_started(gateways)
    for provider in ("esewa", "khalti", "stripe"):
        simulator.fault(provider, "error", count=1)
    assert {name: gateway.dry_run() for name, gateway in gateways.items()} == {
        "esewa": "ok", "khalti": "ok", "stripe": "ok"}
    # Each fault is still waiting for its first real call: the dry runs made none.
    intents = {"esewa": IntentRef("pi-none", 1000, "NPR", "never-started"),
               "khalti": IntentRef("pi-none", 1000, "NPR", "NoSuchPidx"), "stripe": stripe_intent}
    for name, intent in intents.items():
        with pytest.raises(errors.GatewayUnavailable):
            gateways[name].check_payment(intent, None)
        assert gateways[name].check_payment(intent, None).state in ("failed", "pending")


def test_no_secret_reaches_a_check_result(gateways, simulator, test_secrets):
    results = []
    _, start, intent = esewa_started(gateways, simulator)
    redirect = simulator.pay("esewa", start.external_reference)["redirect_url"]
    results.append(gateways["esewa"].check_payment(intent, {"data": query(redirect)["data"]}))
    _, start, intent = khalti_started(gateways)
    simulator.pay("khalti", start.external_reference)
    results.append(gateways["khalti"].check_payment(intent, None))
    _, start, intent = stripe_started(gateways)
    simulator.pay("stripe", start.external_reference)
    results.append(gateways["stripe"].check_payment(intent, None))
    text = json.dumps([r.raw for r in results]) + repr(results)
    for value in test_secrets.values():
        assert value not in text
    assert "_secret_" not in text  # Stripe's client_secret stays out too
