"""webhook_intake through create_app: signatures first, stored once, answered at once."""

import json
import time

import pytest

from shared.webhooks import hmac_body, standard
from shared.webhooks import stripe as stripe_signature


@pytest.fixture
def intake(client_for):
    return client_for("webhook_intake")


def stored(db):
    with db.connection() as conn:
        return conn.fetch_one("SELECT (SELECT count(*) FROM webhook_events) AS events,"
                              " (SELECT count(*) FROM jobs WHERE kind = 'process_webhook_event') AS jobs")


def stripe_event(event_id="evt_1", kind="payment_intent.succeeded"):
    return json.dumps({"id": event_id, "type": kind, "created": int(time.time()),
                       "data": {"object": {"id": "pi_x", "object": "payment_intent"}}}).encode()


def post_stripe(intake, body, secret, *, timestamp=None):
    header = stripe_signature.sign(body, secret, int(timestamp or time.time()))
    return intake.post("/stripe", data=body, content_type="application/json", headers={"Stripe-Signature": header})


def test_a_signed_stripe_event_is_stored_once_with_its_job(intake, db, test_secrets):
    body = stripe_event()
    first = post_stripe(intake, body, test_secrets["stripe-webhook-secret"])
    assert (first.status_code, first.get_json()) == (200, {"received": True, "event_id": "evt_1", "idempotent": False})
    again = post_stripe(intake, body, test_secrets["stripe-webhook-secret"])
    assert again.get_json() == {"received": True, "event_id": "evt_1", "idempotent": True}
    assert stored(db) == {"events": 1, "jobs": 1}


def test_any_v1_signature_may_match_during_a_secret_rotation(intake, db, test_secrets):
    body = stripe_event("evt_rot")
    now = int(time.time())
    good = stripe_signature.sign(body, test_secrets["stripe-webhook-secret"], now)
    old = stripe_signature.sign(body, "whsec_" + "0" * 32, now)
    header = f"t={now},v1={old.split('v1=')[1]},v1={good.split('v1=')[1]}"
    response = intake.post("/stripe", data=body, content_type="application/json", headers={"Stripe-Signature": header})
    assert response.status_code == 200


@pytest.mark.parametrize("case", ["missing", "forged", "old", "future", "v0_only", "body_changed"])
def test_bad_stripe_signatures_are_401_and_store_nothing(intake, db, test_secrets, case):
    body = stripe_event("evt_bad")
    secret = test_secrets["stripe-webhook-secret"]
    now = int(time.time())
    headers = {
        "missing": {},
        "forged": {"Stripe-Signature": stripe_signature.sign(body, "whsec_" + "1" * 32, now)},
        "old": {"Stripe-Signature": stripe_signature.sign(body, secret, now - 301)},
        "future": {"Stripe-Signature": stripe_signature.sign(body, secret, now + 3600)},
        "v0_only": {"Stripe-Signature": stripe_signature.sign(body, secret, now).replace("v1=", "v0=")},
        "body_changed": {"Stripe-Signature": stripe_signature.sign(body, secret, now)},
    }[case]
    sent = body.replace(b"evt_bad", b"evt_bae") if case == "body_changed" else body
    response = intake.post("/stripe", data=sent, content_type="application/json", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert stored(db) == {"events": 0, "jobs": 0}


def test_a_signed_body_that_is_not_an_event_is_refused_without_storing(intake, db, test_secrets):
    for body, status in ((b"[1,2]", 400), (b'{"type": "x"}', 422)):
        response = post_stripe(intake, body, test_secrets["stripe-webhook-secret"])
        assert response.status_code == status
    assert stored(db) == {"events": 0, "jobs": 0}


def test_standard_webhooks_from_a_known_source(intake, db, test_secrets):
    body = json.dumps({"type": "fulfillment.updated", "data": {"order_id": "x", "fulfillment_status": "shipped"}}
                      ).encode()
    headers = standard.sign(body, test_secrets["standard-webhook-secret"], msg_id="msg_1", timestamp=int(time.time()))
    first = intake.post("/standard/logistics", data=body, content_type="application/json", headers=headers)
    assert first.get_json() == {"received": True, "event_id": "msg_1", "idempotent": False}
    again = intake.post("/standard/logistics", data=body, content_type="application/json", headers=headers)
    assert again.get_json()["idempotent"] is True
    assert stored(db) == {"events": 1, "jobs": 1}


def test_standard_webhooks_refuse_unknown_sources_and_bad_signatures(intake, db, test_secrets):
    body = b'{"type": "x"}'
    headers = standard.sign(body, test_secrets["standard-webhook-secret"], msg_id="m", timestamp=int(time.time()))
    assert intake.post("/standard/nobody", data=body, headers=headers).status_code == 404
    stale = standard.sign(body, test_secrets["standard-webhook-secret"], msg_id="m", timestamp=int(time.time()) - 600)
    assert intake.post("/standard/logistics", data=body, headers=stale).status_code == 401
    assert intake.post("/standard/logistics", data=body, headers={**headers, "webhook-id": "other"}).status_code == 401
    assert stored(db) == {"events": 0, "jobs": 0}


def test_verification_provider_events_are_checked_with_the_body_hmac(intake, db, test_secrets):
    body = json.dumps({"id": "evt_v1", "event": "verification.updated", "status": "approved",
                       "order_id": "00000000-0000-0000-0000-000000000000"}).encode()
    signature = hmac_body.sign(body, test_secrets["verification-webhook-secret"])
    ok = intake.post("/verification", data=body, content_type="application/json", headers={"X-Signature": signature})
    assert ok.get_json() == {"received": True, "event_id": "evt_v1", "idempotent": False}
    forged = intake.post("/verification", data=body, headers={"X-Signature": "0" * 64})
    assert forged.status_code == 401
    unsigned = intake.post("/verification", data=body)
    assert unsigned.status_code == 401
    assert stored(db) == {"events": 1, "jobs": 1}


def test_unknown_providers_are_404(intake):
    response = intake.post("/paypal", data=b"{}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
