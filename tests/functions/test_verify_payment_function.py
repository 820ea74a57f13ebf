"""verify_payment through create_app, against the gateway simulator over HTTP."""

import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlparse

import pytest

from tests.flows import TEA


@pytest.fixture
def shop(simulator, client_for, db):
    from shared.flows.catalog import seed_demo

    seed_demo(db)
    return client_for("checkout"), client_for("verify_payment")


def start_payment(shop, provider="khalti", quantity=1):
    checkout, _ = shop
    cart = checkout.post("/carts", json={"customer_id": "c", "items": [{"product_id": TEA, "quantity": quantity}]})
    intent = checkout.post("/payment-intents", json={"cart_id": cart.get_json()["cart_id"], "provider": provider})
    assert intent.status_code == 201, intent.get_json()
    return intent.get_json()


def khalti_proof(simulator, intent, **kwargs):
    paid = simulator.pay("khalti", intent["gateway"]["pidx"], **kwargs)
    return {"khalti": {"pidx": parse_qs(urlparse(paid["redirect_url"]).query)["pidx"][0]}}


def counts(db):
    with db.connection() as conn:
        return conn.fetch_one("""SELECT (SELECT count(*) FROM verifications) AS verifications,
                                        (SELECT count(*) FROM jobs WHERE kind = 'finalize_order') AS finalize_jobs""")


def test_ten_concurrent_identical_calls_verify_once_and_agree(shop, simulator, db, client_for):
    intent = start_payment(shop)
    body = {"payment_intent_id": intent["payment_intent_id"], **khalti_proof(simulator, intent)}
    clients = [client_for("verify_payment") for _ in range(10)]
    barrier = threading.Barrier(10)

    def verify(n):
        barrier.wait(20)
        return clients[n].post("/", json=body)

    with ThreadPoolExecutor(10) as pool:
        answers = [r.get_json() for r in pool.map(verify, range(10))]
    assert {a["verification"] for a in answers} == {"verified"}
    assert sorted(a["idempotent"] for a in answers) == [False] + [True] * 9
    assert counts(db) == {"verifications": 1, "finalize_jobs": 1}


def test_a_repeat_after_verification_is_idempotent_and_creates_nothing(shop, simulator, db):
    _, verify = shop
    intent = start_payment(shop, "esewa")
    checkout_form = intent["gateway"]
    simulator.submit_esewa_form(checkout_form["form_url"], checkout_form["fields"])
    paid = simulator.pay("esewa", checkout_form["fields"]["transaction_uuid"])
    data = parse_qs(urlparse(paid["redirect_url"]).query)["data"][0]
    body = {"payment_intent_id": intent["payment_intent_id"], "esewa": {"data": data}}
    first = verify.post("/", json=body).get_json()
    again = verify.post("/", json=body).get_json()
    assert (first["verification"], first["idempotent"], first["stage"]) == ("verified", False, "processing")
    assert (again["verification"], again["idempotent"]) == ("verified", True)
    assert counts(db) == {"verifications": 1, "finalize_jobs": 1}


def test_stripe_needs_no_proof(shop, simulator, db):
    _, verify = shop
    intent = start_payment(shop, "stripe")
    simulator.pay("stripe", intent["gateway"]["stripe_payment_intent_id"])
    answer = verify.post("/", json={"payment_intent_id": intent["payment_intent_id"]}).get_json()
    assert answer["verification"] == "verified"


def test_an_unpaid_intent_is_pending_or_failed_as_the_gateway_says(shop, simulator, db):
    _, verify = shop
    waiting = start_payment(shop)
    pending = verify.post("/", json={"payment_intent_id": waiting["payment_intent_id"]}).get_json()
    assert (pending["verification"], pending["stage"]) == ("pending", "verifying")
    cancelled = start_payment(shop)
    proof = khalti_proof(simulator, cancelled, outcome="failure")
    failed = verify.post("/", json={"payment_intent_id": cancelled["payment_intent_id"], **proof}).get_json()
    assert (failed["verification"], failed["stage"]) == ("failed", "failed")
    with db.connection() as conn:
        assert conn.fetch_value("SELECT reserved FROM inventory WHERE product_id = :p", p=TEA) == 1  # only `waiting`


def test_a_gateway_timeout_is_503_records_nothing_and_a_retry_verifies(shop, simulator, db, monkeypatch):
    monkeypatch.setenv("GATEWAY_TIMEOUT_S", "0.5")
    from shared.runtime import reset_runtime

    reset_runtime()
    _, verify = shop
    intent = start_payment(shop)
    body = {"payment_intent_id": intent["payment_intent_id"], **khalti_proof(simulator, intent)}
    simulator.fault("khalti", "timeout", count=1, delay_s=2)
    timed_out = verify.post("/", json=body)
    assert timed_out.status_code == 503
    assert timed_out.get_json()["error"]["code"] == "gateway_unavailable"
    assert counts(db) == {"verifications": 0, "finalize_jobs": 0}
    assert verify.post("/", json=body).get_json()["verification"] == "verified"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"payment_intent_id": "opi_" + "0" * 32}, 404, "payment_intent_not_found"),
        ({"payment_intent_id": "pi_123"}, 422, "validation_error"),
        ({"payment_intent_id": 42}, 422, "validation_error"),
        ({}, 422, "validation_error"),
        ({"payment_intent_id": "opi_" + "0" * 32, "khalti": {"pidx": 7}}, 422, "validation_error"),
        ({"payment_intent_id": "opi_" + "0" * 32, "esewa": "data"}, 422, "validation_error"),
    ],
)
def test_bad_verify_requests_get_the_envelope_and_record_nothing(shop, db, body, status, code):
    _, verify = shop
    response = verify.post("/", json=body)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert counts(db) == {"verifications": 0, "finalize_jobs": 0}


def test_proof_for_another_gateway_is_refused(shop, simulator, db):
    _, verify = shop
    intent = start_payment(shop, "khalti")
    response = verify.post("/", json={"payment_intent_id": intent["payment_intent_id"], "esewa": {"data": "x"}})
    assert response.status_code == 422
