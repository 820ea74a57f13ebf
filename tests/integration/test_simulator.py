"""The gateway simulator behaves like the services of GATEWAYS.md, checked over HTTP with raw requests.

Signatures are recomputed here from the documented rules with the standard library, so the
simulator is held to the protocol rather than to our adapters.
"""

import base64
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.simulator.client import EventReceiver, SimulatorRequestFailed
from shared.webhooks import stripe as stripe_webhooks
from tests.helpers import ROOT, free_port, wait_for

ESEWA_FORM = "/api/epay/main/v2/form"
ESEWA_STATUS = "/api/epay/transaction/status/"
KHALTI_INITIATE = "/api/v2/epayment/initiate/"
KHALTI_LOOKUP = "/api/v2/epayment/lookup/"


def esewa_sign(fields: dict, names: str, secret: str) -> str:
    message = ",".join(f"{name}={fields[name]}" for name in names.split(","))
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()


def esewa_form(secret: str, uuid: str = "241028-1", total: str = "110", **changes) -> dict:
    fields = {"amount": "100", "tax_amount": "10", "product_service_charge": "0", "product_delivery_charge": "0",
              "total_amount": total, "transaction_uuid": uuid, "product_code": "EPAYTEST",
              "success_url": "https://shop.test/ok?order=7", "failure_url": "https://shop.test/no",
              "signed_field_names": "total_amount,transaction_uuid,product_code"}
    fields.update(changes)
    fields.setdefault("signature", esewa_sign(fields, fields["signed_field_names"], secret))
    return fields


def esewa_status(url: str, uuid: str, total: str = "110", product_code: str = "EPAYTEST") -> dict:
    response = httpx.get(url + ESEWA_STATUS, params={"product_code": product_code, "total_amount": total,
                                                     "transaction_uuid": uuid})
    assert response.status_code == 200
    return response.json()


def khalti(url: str, path: str, body: dict, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Key {key}"} if key else {}
    return httpx.post(url + path, json=body, headers=headers)


def khalti_initiate(url: str, key: str, amount: int = 150050, return_url: str = "https://shop.test/back") -> dict:
    response = khalti(url, KHALTI_INITIATE, {"return_url": return_url, "website_url": "https://shop.test",
                                             "amount": amount, "purchase_order_id": "po-1",
                                             "purchase_order_name": "Two mugs"}, key)
    assert response.status_code == 200, response.text
    return response.json()


def stripe_create(url: str, key: str, idempotency_key: str | None = None, **params) -> httpx.Response:
    data = {"amount": "2599", "currency": "USD", "metadata[payment_intent_id]": "our-intent-1", **params}
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return httpx.post(url + "/v1/payment_intents", data=data, headers=headers)


@pytest.fixture
def keys(test_secrets):
    return test_secrets


# --- eSewa ---------------------------------------------------------------------------------------


def test_esewa_form_with_a_good_signature_shows_the_login_page_and_starts_pending(simulator, keys):
    response = httpx.post(simulator.url + ESEWA_FORM, data=esewa_form(keys["esewa-secret-key"]))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert esewa_status(simulator.url, "241028-1")["status"] == "PENDING"


@pytest.mark.parametrize("change", [
    {"signature": "i94zsd3oXF6ZsSr/kGqT4sSzYQzjj1W/waxjWyRwaME="},  # right format, wrong key/fields
    {"tax_amount": ""},
    {"total_amount": "120"},
    {"product_code": "SOMEONE_ELSE"},
    {"transaction_uuid": "has space"},
    {"signed_field_names": "total_amount,product_code"},
])
def test_esewa_form_refuses_bad_signatures_and_incomplete_fields(simulator, keys, change):
    response = httpx.post(simulator.url + ESEWA_FORM, data=esewa_form(keys["esewa-secret-key"], **change))
    assert response.status_code == 400
    assert esewa_status(simulator.url, change.get("transaction_uuid", "241028-1"))["status"] == "NOT_FOUND"


def test_esewa_status_of_an_unknown_transaction_is_not_found_with_the_documented_shape(simulator):
    body = esewa_status(simulator.url, "nobody-knows", total="100")
    assert body == {"product_code": "EPAYTEST", "transaction_uuid": "nobody-knows", "total_amount": 100.0,
                    "status": "NOT_FOUND", "ref_id": None}


def test_esewa_success_redirect_carries_signed_data_and_the_status_api_agrees(simulator, keys):
    secret = keys["esewa-secret-key"]
    httpx.post(simulator.url + ESEWA_FORM, data=esewa_form(secret, total="1500.5", amount="1490.5"))
    redirect = simulator.pay("esewa", "241028-1")["redirect_url"]
    assert redirect.startswith("https://shop.test/ok?order=7&data=")
    raw_data = redirect.split("data=", 1)[1]
    data = json.loads(base64.b64decode(raw_data))
    assert data["signed_field_names"] == \
        "transaction_code,status,total_amount,transaction_uuid,product_code,signed_field_names"
    assert data["signature"] == esewa_sign(data, data["signed_field_names"], secret)
    assert (data["status"], data["total_amount"], data["transaction_uuid"]) == ("COMPLETE", "1500.5", "241028-1")
    status = esewa_status(simulator.url, "241028-1", total="1500.5")
    assert status == {"product_code": "EPAYTEST", "transaction_uuid": "241028-1", "total_amount": 1500.5,
                      "status": "COMPLETE", "ref_id": data["transaction_code"]}


def test_esewa_amounts_are_written_like_esewa_writes_them(simulator, keys):
    httpx.post(simulator.url + ESEWA_FORM, data=esewa_form(keys["esewa-secret-key"], total="1000", amount="990"))
    redirect = simulator.pay("esewa", "241028-1")["redirect_url"]
    data = json.loads(base64.b64decode(redirect.split("data=", 1)[1]))
    assert data["total_amount"] == "1000.0"
    assert esewa_status(simulator.url, "241028-1", total="1000")["total_amount"] == 1000.0


def test_esewa_status_looks_up_by_all_three_values(simulator, keys):
    httpx.post(simulator.url + ESEWA_FORM, data=esewa_form(keys["esewa-secret-key"]))
    simulator.pay("esewa", "241028-1")
    assert esewa_status(simulator.url, "241028-1", total="110.0")["status"] == "COMPLETE"  # numerically equal
    assert esewa_status(simulator.url, "241028-1", total="111")["status"] == "NOT_FOUND"
    assert esewa_status(simulator.url, "241028-1", product_code="OTHER")["status"] == "NOT_FOUND"


def test_esewa_cancel_goes_to_failure_url_and_reads_canceled(simulator, keys):
    httpx.post(simulator.url + ESEWA_FORM, data=esewa_form(keys["esewa-secret-key"]))
    assert simulator.pay("esewa", "241028-1", outcome="failure")["redirect_url"] == "https://shop.test/no"
    assert esewa_status(simulator.url, "241028-1")["status"] == "CANCELED"
    with pytest.raises(SimulatorRequestFailed) as caught:
        simulator.pay("esewa", "241028-1")
    assert caught.value.status == 409


def test_esewa_pay_needs_the_form_posted_first(simulator):
    with pytest.raises(SimulatorRequestFailed) as caught:
        simulator.pay("esewa", "never-posted")
    assert caught.value.status == 404


def test_esewa_outage_is_a_200_with_an_error_message_for_count_calls(simulator):
    simulator.fault("esewa", "error", count=2)
    for _ in range(2):
        response = httpx.get(simulator.url + ESEWA_STATUS, params={"product_code": "EPAYTEST", "total_amount": "1",
                                                                   "transaction_uuid": "x"})
        assert (response.status_code, response.json()) == (
            200, {"code": 0, "error_message": "Service is currently unavailable"})
    assert esewa_status(simulator.url, "x", total="1")["status"] == "NOT_FOUND"


def test_the_payment_page_buttons_redirect_the_browser_like_the_gateway(simulator, keys):
    httpx.post(simulator.url + ESEWA_FORM, data=esewa_form(keys["esewa-secret-key"]))
    response = httpx.post(simulator.url + "/sim/decide",
                          data={"provider": "esewa", "reference": "241028-1", "outcome": "success"})
    assert response.status_code == 303 and "data=" in response.headers["location"]


# --- Khalti --------------------------------------------------------------------------------------


def test_khalti_refuses_a_wrong_or_missing_key_with_401(simulator):
    wrong = khalti(simulator.url, KHALTI_INITIATE, {}, "not-the-key")
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid token.", "status_code": 401})
    assert khalti(simulator.url, KHALTI_LOOKUP, {"pidx": "x"}, None).status_code == 401


def test_khalti_initiate_answers_pidx_payment_url_and_expiry(simulator, keys):
    body = khalti_initiate(simulator.url, keys["khalti-secret-key"])
    assert set(body) == {"pidx", "payment_url", "expires_at", "expires_in"}
    assert body["pidx"] in body["payment_url"] and body["expires_in"] > 0
    assert datetime.fromisoformat(body["expires_at"]).utcoffset() is not None
    assert httpx.get(body["payment_url"]).status_code == 200


@pytest.mark.parametrize(("change", "field"), [
    ({"amount": 999}, "amount"), ({"amount": "ten"}, "amount"), ({"purchase_order_name": ""}, "purchase_order_name"),
    ({"return_url": "not a url"}, "return_url"), ({"website_url": None}, "website_url"),
])
def test_khalti_initiate_validates_like_the_real_one(simulator, keys, change, field):
    body = {"return_url": "https://shop.test/back", "website_url": "https://shop.test", "amount": 1000,
            "purchase_order_id": "po-1", "purchase_order_name": "Mug", **change}
    response = khalti(simulator.url, KHALTI_INITIATE, body, keys["khalti-secret-key"])
    assert response.status_code == 400
    assert response.json()["error_key"] == "validation_error" and field in response.json()


def test_khalti_lookup_of_an_unknown_pidx_is_not_found(simulator, keys):
    response = khalti(simulator.url, KHALTI_LOOKUP, {"pidx": "nope"}, keys["khalti-secret-key"])
    assert response.json() == {"detail": "Not found.", "error_key": "validation_error"}


def test_khalti_lookup_shapes_and_the_400_for_user_canceled(simulator, keys):
    key = keys["khalti-secret-key"]
    pidx = khalti_initiate(simulator.url, key)["pidx"]
    initiated = khalti(simulator.url, KHALTI_LOOKUP, {"pidx": pidx}, key)
    assert initiated.status_code == 200
    assert initiated.json() == {"pidx": pidx, "total_amount": 150050, "status": "Initiated", "transaction_id": None,
                                "fee": 0, "refunded": False}
    simulator.pay("khalti", pidx, outcome="failure")
    canceled = khalti(simulator.url, KHALTI_LOOKUP, {"pidx": pidx}, key)
    assert canceled.status_code == 400 and canceled.json()["status"] == "User canceled"
    assert set(canceled.json()) == set(initiated.json())


def test_khalti_return_redirect_carries_every_documented_parameter(simulator, keys):
    key = keys["khalti-secret-key"]
    pidx = khalti_initiate(simulator.url, key, return_url="https://shop.test/back?x=1")["pidx"]
    redirect = simulator.pay("khalti", pidx, amount_minor=160000)["redirect_url"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query, keep_blank_values=True).items()}
    assert set(params) == {"x", "pidx", "status", "transaction_id", "tidx", "amount", "total_amount", "mobile",
                           "purchase_order_id", "purchase_order_name"}
    assert (params["status"], params["total_amount"], params["purchase_order_id"]) == ("Completed", "160000", "po-1")
    lookup = khalti(simulator.url, KHALTI_LOOKUP, {"pidx": pidx}, key).json()
    assert (lookup["status"], lookup["total_amount"], lookup["transaction_id"]) == (
        "Completed", 160000, params["transaction_id"])


def test_khalti_outage_is_a_5xx_that_is_not_json(simulator, keys):
    simulator.fault("khalti", "error")
    response = khalti(simulator.url, KHALTI_LOOKUP, {"pidx": "x"}, keys["khalti-secret-key"])
    assert response.status_code >= 500
    with pytest.raises(ValueError):
        response.json()


# --- Stripe --------------------------------------------------------------------------------------


def test_stripe_refuses_a_missing_or_wrong_key(simulator):
    assert httpx.post(simulator.url + "/v1/payment_intents", data={"amount": "1"}).status_code == 401
    response = stripe_create(simulator.url, "sk_test_wrong")
    assert response.status_code == 401 and response.json()["error"]["type"] == "invalid_request_error"
    assert "sk_test_wrong" not in response.text


def test_stripe_create_and_retrieve_are_stripe_shaped(simulator, keys):
    key = keys["stripe-api-key"]
    created = stripe_create(simulator.url, key, description="Two mugs").json()
    assert created["id"].startswith("pi_") and created["client_secret"].startswith(created["id"] + "_secret_")
    assert (created["object"], created["amount"], created["amount_received"], created["currency"],
            created["status"], created["latest_charge"]) == (
        "payment_intent", 2599, 0, "usd", "requires_payment_method", None)
    assert created["metadata"] == {"payment_intent_id": "our-intent-1"}
    retrieved = httpx.get(f"{simulator.url}/v1/payment_intents/{created['id']}",
                          headers={"Authorization": f"Bearer {key}"})
    assert retrieved.json() == created
    missing = httpx.get(f"{simulator.url}/v1/payment_intents/pi_nope", headers={"Authorization": f"Bearer {key}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "resource_missing"


def test_stripe_validates_parameters(simulator, keys):
    response = stripe_create(simulator.url, keys["stripe-api-key"], amount="")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parameter_missing"
    response = stripe_create(simulator.url, keys["stripe-api-key"], surprise="1")
    assert response.status_code == 400 and response.json()["error"]["param"] == "surprise"


def test_stripe_idempotency_key_replays_the_same_object(simulator, keys):
    key = keys["stripe-api-key"]
    first = stripe_create(simulator.url, key, idempotency_key="our-intent-1")
    again = stripe_create(simulator.url, key, idempotency_key="our-intent-1")
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = stripe_create(simulator.url, key, idempotency_key="our-intent-2")
    assert other.json()["id"] != first.json()["id"]
    conflicting = stripe_create(simulator.url, key, idempotency_key="our-intent-1", amount="100")
    assert conflicting.status_code == 400 and conflicting.json()["error"]["type"] == "idempotency_error"


def test_stripe_payment_sends_a_signed_succeeded_event(simulator, keys):
    intent_id = stripe_create(simulator.url, keys["stripe-api-key"]).json()["id"]
    with EventReceiver() as receiver:
        simulator.stripe_webhook_url = receiver.url
        answer = simulator.pay("stripe", intent_id)
        (path, headers, body), = receiver.requests
    assert answer["delivery"] == {"status": 200, "error": None}
    assert path == "/webhook"
    stripe_webhooks.verify(body, headers["Stripe-Signature"], keys["stripe-webhook-secret"])
    event = json.loads(body)
    assert event["id"] == answer["event_id"] and event["id"].startswith("evt_") and event["object"] == "event"
    assert event["type"] == "payment_intent.succeeded" and isinstance(event["created"], int)
    intent = event["data"]["object"]
    assert (intent["id"], intent["status"], intent["amount_received"]) == (intent_id, "succeeded", 2599)
    assert intent["latest_charge"].startswith("ch_")


def test_stripe_declined_payment_sends_payment_failed(simulator, keys):
    intent_id = stripe_create(simulator.url, keys["stripe-api-key"]).json()["id"]
    with EventReceiver() as receiver:
        simulator.stripe_webhook_url = receiver.url
        simulator.pay("stripe", intent_id, outcome="failure")
        event = json.loads(receiver.bodies()[0])
    assert event["type"] == "payment_intent.payment_failed"
    assert event["data"]["object"]["status"] == "requires_payment_method"
    assert event["data"]["object"]["last_payment_error"]["code"] == "card_declined"


def test_replay_delivers_the_same_event_id_again_each_freshly_signed(simulator, keys):
    intent_id = stripe_create(simulator.url, keys["stripe-api-key"]).json()["id"]
    with EventReceiver() as receiver:
        simulator.stripe_webhook_url = receiver.url
        event_id = simulator.pay("stripe", intent_id)["event_id"]
        replayed = simulator.replay("stripe", intent_id, times=3)
        requests = list(receiver.requests)
    assert replayed["event_id"] == event_id and len(replayed["deliveries"]) == 3
    assert [json.loads(body)["id"] for _, _, body in requests] == [event_id] * 4
    for _, headers, body in requests:
        stripe_webhooks.verify(body, headers["Stripe-Signature"], keys["stripe-webhook-secret"])
    assert [d["event_id"] for d in simulator.webhook_log(reference=intent_id)] == [event_id] * 4


def test_refunds_send_charge_refunded_with_the_running_total(simulator, keys):
    intent_id = stripe_create(simulator.url, keys["stripe-api-key"]).json()["id"]
    with EventReceiver() as receiver:
        simulator.stripe_webhook_url = receiver.url
        simulator.pay("stripe", intent_id)
        simulator.refund(intent_id, 1000)
        simulator.refund(intent_id)  # the rest
        events = [json.loads(body) for body in receiver.bodies()]
        with pytest.raises(SimulatorRequestFailed):
            simulator.refund(intent_id, 1)
    partial, full = events[1], events[2]
    assert partial["type"] == full["type"] == "charge.refunded"
    charge = partial["data"]["object"]
    assert (charge["object"], charge["payment_intent"], charge["amount_refunded"], charge["refunded"]) == (
        "charge", intent_id, 1000, False)
    assert charge["refunds"]["data"][0]["amount"] == 1000
    charge = full["data"]["object"]
    assert (charge["amount_refunded"], charge["refunded"], len(charge["refunds"]["data"])) == (2599, True, 2)


def test_a_failed_delivery_is_recorded_and_the_simulator_carries_on(simulator, keys):
    intent_id = stripe_create(simulator.url, keys["stripe-api-key"]).json()["id"]
    simulator.stripe_webhook_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    answer = simulator.pay("stripe", intent_id)
    assert answer["delivery"]["status"] is None and answer["delivery"]["error"]
    with EventReceiver(status=500) as receiver:
        simulator.stripe_webhook_url = receiver.url
        assert simulator.replay("stripe", intent_id)["deliveries"] == [{"status": 500, "error": None}]
    log = simulator.webhook_log(event_id=answer["event_id"])
    assert [entry["status"] for entry in log] == [None, 500]
    assert httpx.get(simulator.url + "/sim/health").json() == {"status": "ok"}


def test_stripe_outage_is_a_stripe_shaped_500(simulator, keys):
    simulator.fault("stripe", "error")
    response = stripe_create(simulator.url, keys["stripe-api-key"])
    assert response.status_code == 500 and response.json()["error"]["type"] == "api_error"


# --- faults and the driving paths ----------------------------------------------------------------


def test_a_timeout_fault_hangs_the_call_for_delay_s(simulator, keys):
    simulator.fault("khalti", "timeout", count=1, delay_s=0.5)
    began = time.monotonic()
    khalti(simulator.url, KHALTI_LOOKUP, {"pidx": "x"}, keys["khalti-secret-key"])
    assert time.monotonic() - began >= 0.5
    began = time.monotonic()
    khalti(simulator.url, KHALTI_LOOKUP, {"pidx": "x"}, keys["khalti-secret-key"])
    assert time.monotonic() - began < 0.5


def test_fault_none_clears_a_fault(simulator, keys):
    simulator.fault("khalti", "error", count=10)
    simulator.fault("khalti", "none")
    assert khalti(simulator.url, KHALTI_LOOKUP, {"pidx": "x"}, keys["khalti-secret-key"]).status_code == 404


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/sim/pay", {"provider": "paypal", "reference": "x"}, 404),
    ("/sim/pay", {"provider": "khalti", "reference": "x", "outcome": "maybe"}, 400),
    ("/sim/pay", {"provider": "khalti", "reference": "x", "amount_minor": -1}, 400),
    ("/sim/pay", {"provider": "khalti", "reference": "unknown"}, 404),
    ("/sim/faults", {"provider": "khalti", "mode": "explode"}, 400),
    ("/sim/webhooks/replay", {"provider": "esewa", "reference": "x", "times": 1}, 400),
    ("/sim/refund", {"provider": "khalti", "reference": "x"}, 400),
])
def test_driving_paths_refuse_nonsense_clearly(simulator, path, body, status):
    response = httpx.post(simulator.url + path, json=body)
    assert response.status_code == status and response.json()["error"]["code"]


def test_gateway_sim_command_serves_until_sigterm(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from shared.simulator.cli import gateway_sim; gateway_sim()",
         "--port", str(port), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        def healthy():
            assert process.poll() is None, process.stdout.read().decode()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/sim/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=30, what="gateway-sim to answer")
        secrets = json.loads((tmp_path / "data" / "secrets.json").read_text())
        assert khalti_initiate(f"http://127.0.0.1:{port}", secrets["khalti-secret-key"])["pidx"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
