"""Test helpers that drive the real flows: make a paid intent the way the pipeline would."""

from __future__ import annotations

from shared.flows import checkout
from shared.flows.catalog import DEMO_PRODUCTS, demo_id, seed_demo
from shared.flows.verification import apply_check
from shared.gateways.base import PaymentCheck
from shared.jobs import store
from shared.jobs.worker import run_job

TEA = str(demo_id(DEMO_PRODUCTS[0][1]))
JOURNAL = str(demo_id(DEMO_PRODUCTS[2][1]))
BOWL = str(demo_id(DEMO_PRODUCTS[3][1]))
KHUKURI = str(demo_id(DEMO_PRODUCTS[5][1]))  # requires post-purchase verification


def new_intent(runtime, lines, provider="esewa", customer="cust"):
    """A cart and an awaiting payment intent for it (eSewa needs no network to start)."""
    seed_demo(runtime.db)
    cart = checkout.create_cart(runtime.db, checkout.CartIn.model_validate(
        {"customer_id": customer, "items": [{"product_id": p, "quantity": q} for p, q in lines]}))
    _, intent = checkout.create_payment_intent(
        runtime.db, runtime.gateways, checkout.PaymentIntentIn.model_validate({"cart_id": cart["cart_id"],
                                                                              "provider": provider}),
        idempotency_key=None, settings=runtime.settings)
    return intent


def gateway_says_paid(runtime, intent, *, amount_minor=None, transaction_id=None, source="verify_payment"):
    """Record a completed gateway answer for the intent through the production path."""
    check = PaymentCheck(state="completed",
                         external_transaction_id=transaction_id or "T-" + intent["payment_intent_id"],
                         amount_minor=intent["amount_minor"] if amount_minor is None else amount_minor,
                         currency=intent["currency"], gateway_status="COMPLETE")
    return runtime.db.run_in_transaction(
        lambda conn: apply_check(conn, intent["payment_intent_id"], intent["provider"], check, source=source))


def run_waiting_jobs(runtime, kind=None, *, rounds=5):
    """Run every due job (of `kind`) the way the worker would, until none is left; returns their outcomes."""
    outcomes = []
    for _ in range(rounds):
        with runtime.db.connection() as conn:
            rows = conn.fetch_all(
                "SELECT job_id FROM jobs WHERE status IN ('pending', 'retryable') AND run_at <= now()"
                " AND (CAST(:kind AS text) IS NULL OR kind = :kind) ORDER BY job_id", kind=kind)
        if not rows:
            break
        for row in rows:
            outcomes.append(run_job(runtime.db, runtime.settings, row["job_id"], retry_count=0))
    return outcomes


def job_of(runtime, key):
    with runtime.db.connection() as conn:
        row = conn.fetch_one("SELECT job_id FROM jobs WHERE key = :k ORDER BY job_id DESC LIMIT 1", k=key)
        return store.get(conn, row["job_id"]) if row else None
