"""Regression tests for what the HTTP fuzzer (tests/fuzz) found: each answered a 5xx, a non-envelope body,
or refused valid input the wrong way before its fix.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from shared import errors
from shared.webhooks import hmac_body
from shared.webhooks import stripe as stripe_signature
from tests.flows import TEA, new_intent, run_waiting_jobs


def assert_envelope(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    error = body["error"]
    assert set(error) == {"code", "message", "details", "correlation_id"}
    assert error["correlation_id"] == response.headers["X-Correlation-ID"]
    if code:
        assert error["code"] == code
    return error


# --- routing --------------------------------------------------------------------------------------------------------


def test_a_405_names_the_allowed_methods(client_for):
    response = client_for("checkout").open("/carts", method="TRACE")
    error = assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST" and error["details"] == {"allowed": ["POST"]}
    response = client_for("admin").open("/api/products/00000000-0000-0000-0000-000000000000", method="DELETE")
    assert assert_envelope(response, 405)["details"]["allowed"] == ["GET", "HEAD"]
    assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/favicon.ico", "/robots.txt", "/assets/%C2%A0%0A", "/carts/%0A"])
def test_what_functions_framework_refuses_is_answered_in_the_envelope_too(client_for, path):
    # These never reach Routes: Flask answered its own HTML 404, without X-Correlation-ID.
    response = client_for("checkout").get(path, headers={"X-Correlation-ID": "cid-42"})
    error = assert_envelope(response, 404, "not_found")
    assert error["correlation_id"] == "cid-42" and response.mimetype == "application/json"


# --- self_test ------------------------------------------------------------------------------------------------------


def test_readyz_and_selftest_503s_carry_the_envelope_beside_their_checks(client_for, monkeypatch):
    from shared.runtime import reset_runtime

    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    reset_runtime()
    client = client_for("self_test")
    ready = client.get("/readyz")
    error = assert_envelope(ready, 503, "not_ready")
    assert ready.get_json()["status"] == "unavailable" and error["details"]["checks"]["database"] == "failed"
    selftest = client.get("/__selftest")
    error = assert_envelope(selftest, 503, "self_test_failed")
    assert selftest.get_json()["status"] == "blocker" and error["details"]["checks"]["database"] == "failed"


# --- verify_payment: eSewa data that is no text --------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"[" * 5000 + b"]" * 5000,
    json.dumps({"total_amount": "1", "transaction_uuid": "a", "product_code": "EPAYTEST",
                "signed_field_names": "total_amount,transaction_uuid,product_code", "signature": "\ud800"}).encode(),
])
def test_esewa_data_too_deep_or_not_unicode_is_an_invalid_signature_not_a_500(client_for, runtime, raw):
    intent = new_intent(runtime, [(TEA, 1)], "esewa")
    response = client_for("verify_payment").post("/", json={
        "payment_intent_id": intent["payment_intent_id"], "esewa": {"data": base64.b64encode(raw).decode()}})
    assert_envelope(response, 400, "invalid_signature")


# --- request text PostgreSQL cannot store ----------------------------------------------------------------------------


def test_a_nul_in_stored_text_is_a_422_naming_the_field(client_for, runtime, admin_auth):
    from shared.flows.catalog import seed_demo

    seed_demo(runtime.db)
    response = client_for("checkout").post("/carts", json={"customer_id": "a\x00b",
                                                           "items": [{"product_id": TEA, "quantity": 1}]})
    error = assert_envelope(response, 422, "validation_error")
    assert [f["field"] for f in error["details"]["fields"]] == ["customer_id"]
    response = client_for("admin").post("/api/vendors", json={"business_name": "x\x00"}, headers=admin_auth)
    assert [f["field"] for f in assert_envelope(response, 422)["details"]["fields"]] == ["business_name"]


def test_a_text_parameter_that_is_not_unicode_is_refused_and_the_connection_kept(db):
    with db.connection() as conn:
        with pytest.raises(errors.ValidationFailed):  # was DatabaseUnavailable (a 503) and a dropped connection
            conn.fetch_value("SELECT CAST(:x AS text)", x="a\ud800b")
        assert not conn.broken
        assert conn.fetch_value("SELECT 1") == 1


# --- signed webhooks ------------------------------------------------------------------------------------------------


def _post_stripe(client, body: bytes, secret: str):
    header = stripe_signature.sign(body, secret, int(time.time()))
    return client.post("/stripe", data=body, content_type="application/json", headers={"Stripe-Signature": header})


@pytest.mark.parametrize(("body", "field"), [
    (b'{"id": "evt_\\ud800", "type": "x"}', "id"),  # was 503 database_unavailable
    (b'{"id": "evt_1", "type": "a\\ud800b"}', "type"),  # was 503 database_unavailable
    (b'{"id": "evt_2", "type": "x", "data": {"k": "\\u0000"}}', "data"),  # was 422 without the field
    (b'{"id": "evt_3", "type": "x", "\\u0000": 1}', "(body)"),
])
def test_a_signed_event_with_unstorable_text_is_a_422_naming_the_field_and_stores_nothing(
        client_for, db, test_secrets, body, field):
    response = _post_stripe(client_for("webhook_intake"), body, test_secrets["stripe-webhook-secret"])
    error = assert_envelope(response, 422, "validation_error")
    assert [f["field"] for f in error["details"]["fields"]] == [field]
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM webhook_events") == 0


def test_a_verification_event_for_an_order_id_that_is_no_uuid_is_refused_at_intake(client_for, db, test_secrets):
    body = json.dumps({"id": "v1", "event": "verification.updated", "status": "approved", "order_id": "nope"}).encode()
    response = client_for("webhook_intake").post(
        "/verification", data=body, content_type="application/json",
        headers={"X-Signature": hmac_body.sign(body, test_secrets["verification-webhook-secret"])})
    assert_envelope(response, 422, "validation_error")  # its job retried a 22P02 twelve times, then died
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM webhook_events") == 0


@pytest.mark.parametrize("event", [
    {"id": "evt_a", "type": "payment_intent.succeeded", "data": 5},  # AttributeError in the job before
    {"id": "evt_b", "type": "payment_intent.succeeded", "data": {"object": ["x"]}},
    {"id": "evt_c", "type": "payment_intent.payment_failed", "data": {"object": {"id": "pi_1", "metadata": [1]}}},
    {"id": "evt_d", "type": "charge.refunded", "data": {"object": {"payment_intent": "pi_1", "refunds": [1]}}},
])
def test_signed_stripe_events_of_any_shape_are_processed_without_crashing(client_for, runtime, test_secrets, event):
    response = _post_stripe(client_for("webhook_intake"), json.dumps(event).encode(),
                            test_secrets["stripe-webhook-secret"])
    assert response.status_code == 200
    outcomes = run_waiting_jobs(runtime, "process_webhook_event")
    assert [outcome.status for outcome in outcomes] == ["completed"]


def test_a_stored_verification_event_with_a_bad_order_id_is_done_with_not_retried(runtime):
    from shared.flows.webhooks import _process

    with runtime.db.connection() as conn:
        assert _process(conn, "verification", "verification.updated",
                        {"id": "v", "order_id": "nope", "status": "approved"}) == "invalid_order_id"
