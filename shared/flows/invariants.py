"""The invariants of ARCHITECTURE.md as queries: each returns the rows that breach it.

`orderpipe check` runs them all (exit 1 on any breach) and admin's health report shows them.
Most are also enforced by constraints; checking them anyway catches a constraint dropped by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.db.connection import Connection


@dataclass(frozen=True)
class Invariant:
    name: str
    description: str
    sql: str  # returns one row per breach (limited)


INVARIANTS: list[Invariant] = [
    Invariant(
        "inventory_within_bounds",
        "0 <= reserved <= on_hand for every product",
        "SELECT product_id, on_hand, reserved FROM inventory WHERE reserved < 0 OR reserved > on_hand OR on_hand < 0",
    ),
    Invariant(
        "reserved_equals_held_reservations",
        "inventory.reserved equals the units held by reservations",
        """
        SELECT i.product_id, i.reserved, coalesce(h.held, 0) AS held
        FROM inventory i
        LEFT JOIN (SELECT product_id, sum(quantity) AS held FROM reservations WHERE status = 'held'
                   GROUP BY product_id) h USING (product_id)
        WHERE i.reserved <> coalesce(h.held, 0)
        """,
    ),
    Invariant(
        "reservations_all_or_nothing",
        "all lines of an intent's reservation share one status",
        """
        SELECT payment_intent_id, array_agg(DISTINCT status) AS statuses FROM reservations
        GROUP BY payment_intent_id HAVING count(DISTINCT status) > 1
        """,
    ),
    Invariant(
        "orders_have_items",
        "every order has at least one item",
        "SELECT o.order_id FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.order_id)",
    ),
    Invariant(
        "one_order_per_intent",
        "no payment intent has two orders",
        "SELECT payment_intent_id, count(*) AS orders FROM orders GROUP BY payment_intent_id HAVING count(*) > 1",
    ),
    Invariant(
        "orders_backed_by_committed_stock",
        "every order line took its units from stock (a committed reservation of the same quantity): no oversell",
        """
        SELECT i.order_id, i.product_id, i.quantity, r.quantity AS reserved, r.status AS reservation
        FROM order_items i JOIN orders o USING (order_id)
        LEFT JOIN reservations r ON r.payment_intent_id = o.payment_intent_id AND r.product_id = i.product_id
        WHERE r.status IS DISTINCT FROM 'committed' OR r.quantity <> i.quantity
        """,
    ),
    Invariant(
        "order_items_vendor_exists",
        "every order item's vendor exists",
        """
        SELECT i.order_id, i.vendor_id FROM order_items i
        WHERE NOT EXISTS (SELECT 1 FROM vendors v WHERE v.vendor_id = i.vendor_id)
        """,
    ),
    Invariant(
        "order_total_equals_items",
        "an order's total equals the sum of its items",
        """
        SELECT o.order_id, o.total_minor, sum(i.quantity * i.unit_price_minor) AS items_total
        FROM orders o JOIN order_items i USING (order_id)
        GROUP BY o.order_id, o.total_minor HAVING o.total_minor <> sum(i.quantity * i.unit_price_minor)
        """,
    ),
    Invariant(
        "verified_amount_equals_intent",
        "a verified amount equals the intent amount, or the intent is in needs_review",
        """
        SELECT v.payment_intent_id, v.amount_minor, p.amount_minor AS intent_amount, p.status
        FROM verifications v JOIN payment_intents p USING (payment_intent_id)
        WHERE (v.amount_minor <> p.amount_minor OR v.currency <> p.currency) AND p.status <> 'needs_review'
        """,
    ),
    Invariant(
        "verified_payment_has_an_outcome",
        "every verified payment is an order, or in needs_refund / needs_review, or has a live finalize job",
        """
        SELECT p.payment_intent_id, p.status FROM payment_intents p
        JOIN verifications v USING (payment_intent_id)
        WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.payment_intent_id = p.payment_intent_id)
          AND p.status NOT IN ('needs_refund', 'needs_review')
          AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.kind = 'finalize_order'
                          AND j.payload ->> 'payment_intent_id' = p.payment_intent_id
                          AND j.status IN ('pending', 'running', 'retryable'))
        """,
    ),
    Invariant(
        "order_created_has_order",
        "an intent marked order_created has its order",
        """
        SELECT p.payment_intent_id FROM payment_intents p
        WHERE p.status = 'order_created'
          AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.payment_intent_id = p.payment_intent_id)
        """,
    ),
    Invariant(
        "no_stuck_jobs",
        "no job runs past its lease by more than 5 minutes",
        """
        SELECT job_id, kind, locked_until FROM jobs
        WHERE status = 'running' AND locked_until < now() - interval '5 minutes'
        """,
    ),
    Invariant(
        "fulfillment_status_valid",
        "fulfillment_status is one of the allowed values",
        """
        SELECT order_id, product_id, fulfillment_status FROM order_items
        WHERE fulfillment_status NOT IN ('pending', 'processing', 'shipped', 'delivered', 'returned', 'refunded')
        """,
    ),
    Invariant(
        "one_webhook_event_per_id",
        "one webhook event per (provider, event_id)",
        "SELECT provider, event_id FROM webhook_events GROUP BY provider, event_id HAVING count(*) > 1",
    ),
]


def extra_invariants() -> list[Invariant]:
    """Invariants contributed by later areas (metrics), imported lazily to keep imports inward."""
    try:
        from shared.flows.metrics import METRICS_INVARIANTS
    except ImportError:
        return []
    return list(METRICS_INVARIANTS)


def run_checks(conn: Connection, *, sample: int = 10) -> list[dict[str, Any]]:
    """Every invariant with its breach count and a few breaching rows."""
    results = []
    for invariant in INVARIANTS + extra_invariants():
        rows = conn.fetch_all(f"SELECT * FROM ({invariant.sql}) breach LIMIT {int(sample) + 1}")
        results.append({
            "name": invariant.name,
            "description": invariant.description,
            "ok": not rows,
            "breaches": len(rows) if len(rows) <= sample else f"more than {sample}",
            "sample": rows[:sample],
        })
    return results
