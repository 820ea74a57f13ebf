"""Idempotency-Keys of payment intents when the first request dies before it answers (found by the chaos harness).

A request killed between claiming its key and storing its answer (SIGKILL, a timed-out instance,
PostgreSQL gone when the answer was to be stored) used to leave the key "still being processed"
forever: every retry got 409 idempotency_key_in_use until the key was purged a week later.
"""

import pytest

from shared import errors
from shared.flows import checkout
from shared.flows.catalog import seed_demo
from tests.flows import TEA


class Killed(BaseException):
    """The process dies mid-request: no except clause of the flow runs."""


def create_intent(runtime, cart_id, key, provider="esewa"):
    request = checkout.PaymentIntentIn.model_validate({"cart_id": cart_id, "provider": provider})
    return checkout.create_payment_intent(runtime.db, runtime.gateways, request, idempotency_key=key,
                                          settings=runtime.settings)


def sql(db, query, **params):
    with db.transaction() as conn:
        return conn.fetch_all(query, **params)


@pytest.fixture
def cart_id(runtime):
    seed_demo(runtime.db)
    cart = checkout.create_cart(runtime.db, checkout.CartIn.model_validate(
        {"customer_id": "cust", "items": [{"product_id": TEA, "quantity": 2}]}))
    return cart["cart_id"]


@pytest.fixture
def first_request_killed(runtime, cart_id, monkeypatch):
    """The first request with key k-1 reserved its stock and died at the gateway call."""
    def die(_request):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(runtime.gateways["esewa"], "start_payment", die)
        with pytest.raises(Killed):
            create_intent(runtime, cart_id, "k-1")
    assert sql(runtime.db, "SELECT response_code FROM idempotency_keys") == [{"response_code": None}]


def age_claims(db, seconds):
    sql(db, "UPDATE idempotency_keys SET created_at = created_at - make_interval(secs => :s)", s=seconds)


def test_a_retry_while_the_first_request_may_still_run_is_told_to_retry(runtime, cart_id, first_request_killed):
    with pytest.raises(errors.Conflict) as refused:
        create_intent(runtime, cart_id, "k-1")
    assert refused.value.code == "idempotency_key_in_use"


def test_a_retry_after_the_claims_lease_runs_for_real_and_is_replayed_after(runtime, db, cart_id,
                                                                            first_request_killed):
    age_claims(db, runtime.settings.idempotency_claim_lease_s + 1)
    status, intent = create_intent(runtime, cart_id, "k-1")
    assert status == 201 and intent["status"] == "awaiting_payment"
    assert create_intent(runtime, cart_id, "k-1") == (201, intent)  # the answer is stored now
    # The dead request's intent was replaced: the cart holds its stock once.
    statuses = {row["payment_intent_id"]: row["status"] for row in
                sql(db, "SELECT payment_intent_id, status FROM payment_intents")}
    assert statuses.pop(intent["payment_intent_id"]) == "awaiting_payment"
    assert list(statuses.values()) == ["cancelled"]
    assert sql(db, "SELECT reserved FROM inventory WHERE product_id = :p", p=TEA) == [{"reserved": 2}]


def test_an_expired_claim_is_not_taken_over_by_another_request_body(runtime, db, cart_id, first_request_killed):
    age_claims(db, runtime.settings.idempotency_claim_lease_s + 1)
    with pytest.raises(errors.BusinessRuleViolated) as refused:
        create_intent(runtime, cart_id, "k-1", provider="khalti")
    assert refused.value.code == "idempotency_key_reused"
