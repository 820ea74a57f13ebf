"""Finalization, expiry, late payments and post-purchase verification on a real PostgreSQL."""

import pytest

from shared.flows.finalization import finalize_order
from shared.flows.invariants import run_checks
from tests.flows import BOWL, JOURNAL, KHUKURI, TEA, gateway_says_paid, job_of, new_intent, run_waiting_jobs


def row(db, sql, **params):
    with db.connection() as conn:
        return conn.fetch_one(sql, **params)


def stock(db, product_id):
    return row(db, "SELECT on_hand, reserved FROM inventory WHERE product_id = :p", p=product_id)


def intent_status(db, pid):
    return row(db, "SELECT status FROM payment_intents WHERE payment_intent_id = :p", p=pid)["status"]


def assert_invariants_hold(db):
    with db.connection() as conn:
        breaches = [r["name"] for r in run_checks(conn) if not r["ok"]]
    assert breaches == []


def test_a_verified_payment_becomes_exactly_one_order_with_the_intents_items(runtime, db):
    intent = new_intent(runtime, [(TEA, 2), (JOURNAL, 1)])
    pid = intent["payment_intent_id"]
    assert gateway_says_paid(runtime, intent).verification == "verified"
    assert intent_status(db, pid) == "paid"
    finalize_job = job_of(runtime, f"finalize:{pid}")
    assert finalize_job.status == "pending"

    run_waiting_jobs(runtime, "finalize_order")
    order = row(db, "SELECT * FROM orders WHERE payment_intent_id = :p", p=pid)
    assert order["order_number"].startswith("OP-") and order["total_minor"] == 215_000
    with db.connection() as conn:
        items = conn.fetch_all("SELECT product_id, quantity, unit_price_minor, fulfillment_status, platform_fee_bps"
                               " FROM order_items WHERE order_id = :o ORDER BY line_no", o=str(order["order_id"]))
        cart_lines = conn.fetch_value("SELECT count(*) FROM cart_items c JOIN payment_intents p USING (cart_id)"
                                      " WHERE p.payment_intent_id = :p", p=pid)
        metrics_jobs = conn.fetch_value("SELECT count(*) FROM jobs WHERE kind = 'refresh_metrics'")
    assert [(str(i["product_id"]), i["quantity"], i["unit_price_minor"], i["fulfillment_status"]) for i in items] == \
        [(TEA, 2, 85_000, "pending"), (JOURNAL, 1, 45_000, "pending")]
    assert {i["platform_fee_bps"] for i in items} == {1000, 800}
    assert stock(db, TEA) == {"on_hand": 498, "reserved": 0}
    assert stock(db, JOURNAL) == {"on_hand": 299, "reserved": 0}
    assert cart_lines == 0
    assert metrics_jobs == 2  # one per vendor-day
    assert intent_status(db, pid) == "order_created"
    assert_invariants_hold(db)


def test_finalizing_twice_finds_the_order_and_changes_nothing(runtime, db):
    intent = new_intent(runtime, [(TEA, 1)])
    gateway_says_paid(runtime, intent)
    run_waiting_jobs(runtime, "finalize_order")
    first = row(db, "SELECT order_id FROM orders")["order_id"]
    again = db.run_in_transaction(lambda conn: finalize_order(conn, intent["payment_intent_id"]))
    assert again["order_id"] == first
    assert row(db, "SELECT count(*) AS n FROM orders")["n"] == 1
    assert stock(db, TEA) == {"on_hand": 499, "reserved": 0}


def test_a_repeated_gateway_answer_records_one_verification_and_one_job(runtime, db):
    intent = new_intent(runtime, [(TEA, 1)])
    outcomes = [gateway_says_paid(runtime, intent) for _ in range(3)]
    assert [o.idempotent for o in outcomes] == [False, True, True]
    assert row(db, "SELECT count(*) AS n FROM verifications")["n"] == 1
    assert row(db, "SELECT count(*) AS n FROM jobs WHERE kind = 'finalize_order'")["n"] == 1


def test_a_different_amount_goes_to_needs_review_and_makes_no_order(runtime, db):
    intent = new_intent(runtime, [(TEA, 1)])
    outcome = gateway_says_paid(runtime, intent, amount_minor=1_000)
    assert outcome.verification == "mismatch"
    assert intent_status(db, intent["payment_intent_id"]) == "needs_review"
    assert row(db, "SELECT count(*) AS n FROM verifications")["n"] == 0
    assert row(db, "SELECT outcome FROM payment_attempts")["outcome"] == "amount_mismatch"
    run_waiting_jobs(runtime, "finalize_order")
    assert row(db, "SELECT count(*) AS n FROM orders")["n"] == 0


def expire_now(runtime, pid):
    with runtime.db.transaction() as conn:
        conn.execute("UPDATE payment_intents SET expires_at = now() - interval '1 second'"
                     " WHERE payment_intent_id = :p", p=pid)
        conn.execute("UPDATE jobs SET run_at = now() WHERE key = :k", k=f"expire:{pid}")
    run_waiting_jobs(runtime, "expire_reservation")


def test_an_unpaid_intent_expires_and_its_stock_returns(runtime, db):
    intent = new_intent(runtime, [(BOWL, 3)])
    assert stock(db, BOWL) == {"on_hand": 40, "reserved": 3}
    expire_now(runtime, intent["payment_intent_id"])
    assert intent_status(db, intent["payment_intent_id"]) == "expired"
    assert stock(db, BOWL) == {"on_hand": 40, "reserved": 0}
    assert_invariants_hold(db)


def test_an_early_expiry_timer_changes_nothing(runtime, db):
    intent = new_intent(runtime, [(BOWL, 1)])
    with db.transaction() as conn:
        conn.execute("UPDATE jobs SET run_at = now() WHERE key = :k", k=f"expire:{intent['payment_intent_id']}")
    run_waiting_jobs(runtime, "expire_reservation")
    assert intent_status(db, intent["payment_intent_id"]) == "awaiting_payment"
    assert stock(db, BOWL)["reserved"] == 1


def test_a_payment_after_expiry_takes_the_stock_if_it_is_still_there(runtime, db):
    intent = new_intent(runtime, [(BOWL, 2)])
    expire_now(runtime, intent["payment_intent_id"])
    gateway_says_paid(runtime, intent)
    run_waiting_jobs(runtime, "finalize_order")
    assert intent_status(db, intent["payment_intent_id"]) == "order_created"
    assert stock(db, BOWL) == {"on_hand": 38, "reserved": 0}
    assert_invariants_hold(db)


def test_a_payment_after_expiry_with_the_stock_gone_needs_a_refund(runtime, db):
    late = new_intent(runtime, [(BOWL, 30)], customer="late")
    expire_now(runtime, late["payment_intent_id"])
    rival = new_intent(runtime, [(BOWL, 20)], customer="rival")  # takes the stock the late one had
    gateway_says_paid(runtime, rival, transaction_id="rival")
    gateway_says_paid(runtime, late, transaction_id="late")
    run_waiting_jobs(runtime, "finalize_order")
    assert intent_status(db, rival["payment_intent_id"]) == "order_created"
    assert intent_status(db, late["payment_intent_id"]) == "needs_refund"
    assert stock(db, BOWL) == {"on_hand": 20, "reserved": 0}
    assert row(db, "SELECT count(*) AS n FROM orders")["n"] == 1
    assert_invariants_hold(db)


def test_an_order_needing_identity_verification_opens_a_session_with_a_deadline(runtime, db):
    intent = new_intent(runtime, [(KHUKURI, 1)])
    gateway_says_paid(runtime, intent)
    run_waiting_jobs(runtime, "finalize_order")
    order = row(db, "SELECT order_id, created_at FROM orders")
    session = row(db, "SELECT * FROM verification_sessions WHERE order_id = :o", o=str(order["order_id"]))
    assert session["status"] == "pending"
    expected = runtime.settings.verification_deadline_seconds
    assert abs((session["deadline_at"] - order["created_at"]).total_seconds() - expected) < 5
    deadline = job_of(runtime, f"deadline:{order['order_id']}")
    assert (deadline.kind, deadline.queue, deadline.status) == ("verification_deadline", "timers", "pending")
    assert deadline.job_id == session["deadline_job_id"]


def decide(runtime, order_id, decision):
    from shared.flows import post_purchase

    return runtime.db.run_in_transaction(lambda conn: post_purchase.decide(conn, order_id, decision, "test"))


def test_approval_keeps_the_order_and_cancels_the_deadline(runtime, db):
    intent = new_intent(runtime, [(KHUKURI, 1)])
    gateway_says_paid(runtime, intent)
    run_waiting_jobs(runtime, "finalize_order")
    order_id = str(row(db, "SELECT order_id FROM orders")["order_id"])
    assert decide(runtime, order_id, "approved") == "approved"
    assert decide(runtime, order_id, "declined") == "already_decided"  # the first decision stands
    assert row(db, "SELECT status FROM orders")["status"] == "confirmed"
    assert job_of(runtime, f"deadline:{order_id}").status == "cancelled"
    assert row(db, "SELECT status FROM verification_sessions")["status"] == "approved"


def test_a_decline_cancels_the_order_returns_the_stock_and_needs_a_refund(runtime, db):
    intent = new_intent(runtime, [(KHUKURI, 2)])
    gateway_says_paid(runtime, intent)
    run_waiting_jobs(runtime, "finalize_order")
    assert stock(db, KHUKURI) == {"on_hand": 23, "reserved": 0}
    order_id = str(row(db, "SELECT order_id FROM orders")["order_id"])
    assert decide(runtime, order_id, "declined") == "declined"
    assert row(db, "SELECT status, cancel_reason FROM orders")["status"] == "cancelled"
    assert stock(db, KHUKURI) == {"on_hand": 25, "reserved": 0}
    assert intent_status(db, intent["payment_intent_id"]) == "needs_refund"
    assert decide(runtime, order_id, "declined") == "already_decided"
    assert stock(db, KHUKURI) == {"on_hand": 25, "reserved": 0}  # stock returned once
    assert_invariants_hold(db)


@pytest.mark.parametrize("decided_in_time", [True, False])
def test_the_deadline_cancels_only_orders_still_pending(runtime, db, decided_in_time):
    intent = new_intent(runtime, [(KHUKURI, 1)])
    gateway_says_paid(runtime, intent)
    run_waiting_jobs(runtime, "finalize_order")
    order_id = str(row(db, "SELECT order_id FROM orders")["order_id"])
    if decided_in_time:
        decide(runtime, order_id, "approved")
    with db.transaction() as conn:  # the clock reaches the deadline
        conn.execute("UPDATE verification_sessions SET deadline_at = now() - interval '1 second'")
        conn.execute("UPDATE jobs SET run_at = now() WHERE kind = 'verification_deadline' AND status = 'pending'")
    run_waiting_jobs(runtime, "verification_deadline")
    order = row(db, "SELECT status FROM orders")
    session = row(db, "SELECT status FROM verification_sessions")
    if decided_in_time:
        assert (order["status"], session["status"]) == ("confirmed", "approved")
    else:
        assert (order["status"], session["status"]) == ("cancelled", "expired")
        assert intent_status(db, intent["payment_intent_id"]) == "needs_refund"
        assert stock(db, KHUKURI) == {"on_hand": 25, "reserved": 0}


def test_heal_gives_a_paid_intent_whose_job_died_a_new_finalize_job(runtime, db):
    from shared.flows import reconcile

    intent = new_intent(runtime, [(TEA, 1)])
    gateway_says_paid(runtime, intent)
    with db.transaction() as conn:
        conn.execute("UPDATE jobs SET status = 'dead', last_error = 'simulated' WHERE kind = 'finalize_order'")
    result = reconcile.run(runtime, reconcile.ReconcileIn(tasks=["heal_paid_without_order"]))
    assert result["ran"]["heal_paid_without_order"] == {"healed": 1}
    run_waiting_jobs(runtime, "finalize_order")
    assert intent_status(db, intent["payment_intent_id"]) == "order_created"
    again = reconcile.run(runtime, reconcile.ReconcileIn(tasks=["heal_paid_without_order"]))
    assert again["ran"]["heal_paid_without_order"] == {"healed": 0}


def test_order_status_stages_follow_the_data(runtime, db):
    from shared.flows.order_status import order_status

    intent = new_intent(runtime, [(TEA, 1)])
    pid = intent["payment_intent_id"]
    assert order_status(db, pid)["stage"] == "awaiting_payment"
    gateway_says_paid(runtime, intent)
    assert order_status(db, pid)["stage"] == "processing"
    run_waiting_jobs(runtime, "finalize_order")
    status = order_status(db, pid)
    assert status["stage"] == "confirmed" and status["final"] and status["poll_after_ms"] is None
    assert status["order"]["items"] == [{"product_id": TEA, "quantity": 1, "unit_price_minor": 85_000,
                                         "fulfillment_status": "pending"}]


def test_check_catches_an_order_line_that_took_no_stock(runtime, db):
    from shared.flows.invariants import run_checks

    intent = new_intent(runtime, [(TEA, 2)])
    gateway_says_paid(runtime, intent)
    run_waiting_jobs(runtime, "finalize_order")
    assert_invariants_hold(db)
    with db.transaction() as conn:  # as if the order had been made without taking the units
        conn.execute("UPDATE reservations SET quantity = 1 WHERE payment_intent_id = :p",
                     p=intent["payment_intent_id"])
    with db.connection() as conn:
        breached = [r["name"] for r in run_checks(conn) if not r["ok"]]
    assert breached == ["orders_backed_by_committed_stock"]


def test_a_burst_of_orders_for_one_vendor_costs_one_metrics_refresh(app_env, monkeypatch):
    from shared.runtime import get_runtime, reset_runtime

    monkeypatch.setenv("METRICS_REFRESH_DELAY_S", "30")
    reset_runtime()
    runtime = get_runtime()
    for n in range(5):
        intent = new_intent(runtime, [(TEA, 1)], customer=f"burst-{n}")
        gateway_says_paid(runtime, intent)
        run_waiting_jobs(runtime, "finalize_order")
    with runtime.db.connection() as conn:
        refreshes = conn.fetch_all("SELECT key, run_at > now() + interval '20 seconds' AS delayed FROM jobs"
                                   " WHERE kind = 'refresh_metrics'")
        orders = conn.fetch_value("SELECT count(*) FROM orders")
    assert orders == 5
    assert len(refreshes) == 1 and refreshes[0]["delayed"]
