"""Daily metrics (vendor_daily, platform_daily) and refunds, as plain SQL.

Every figure is recomputed from source rows (orders, order_items, refunds, refund_allocations) by
one set of CTEs, built by `_source_ctes`, so the refresh job, reconcile, backfill and the drift
invariants all count the same way. Money stays exact: sums of bigint become numeric and the fee
uses `div()` on numerics (integer division), never a float.

A day is a calendar date in the metrics time zone. Rows are bucketed with
`CAST(ts AT TIME ZONE tz AS date)` (the same as Python's `ts.astimezone(tz).date()`); the
timestamp range around the days only serves the `orders_created` index, widened by 3 hours so a
DST shift at midnight cannot drop a row at the edge.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from shared.db.connection import Connection

# --- recomputation from source rows -------------------------------------------------------------


def _source_ctes(*, tz: str, first_day: str, last_day: str, one_vendor: bool) -> str:
    """CTEs `days`, `lines` (one row per confirmed order line) and `refunded`
    (allocations per vendor and day of refunds of confirmed orders) for days first..last.

    `tz`, `first_day` and `last_day` are SQL expressions (parameters, or literals for the invariants).
    With `one_vendor`, lines and refunds are limited to `:vendor_id`.
    """
    line_filter = "AND i.vendor_id = CAST(:vendor_id AS uuid)" if one_vendor else ""
    refund_filter = "AND a.vendor_id = CAST(:vendor_id AS uuid)" if one_vendor else ""
    # Written inline (not in a CTE) so the planner sees a narrow range and walks the time index.
    lo = f"((CAST({first_day} AS timestamp) AT TIME ZONE {tz}) - interval '3 hours')"
    hi = f"((CAST({last_day} + 1 AS timestamp) AT TIME ZONE {tz}) + interval '3 hours')"
    return f"""
days AS (
    SELECT CAST(g AS date) AS day
    FROM generate_series(CAST({first_day} AS timestamp), CAST({last_day} AS timestamp), interval '1 day') AS g
),
lines AS (
    SELECT o.order_id, i.vendor_id, CAST(o.created_at AT TIME ZONE {tz} AS date) AS day,
           CAST(i.quantity AS numeric) * i.unit_price_minor AS line_total,
           -- round half up, per line, with the fee snapshot taken when the order was made
           div(CAST(i.quantity AS numeric) * i.unit_price_minor * i.platform_fee_bps + 5000, 10000) AS line_fee
    FROM orders o
    JOIN order_items i ON i.order_id = o.order_id
    WHERE o.created_at >= {lo} AND o.created_at < {hi} AND o.status = 'confirmed' {line_filter}
),
refunded AS (
    SELECT a.vendor_id, CAST(r.refunded_at AT TIME ZONE {tz} AS date) AS day, sum(a.amount_minor) AS refunds_minor
    FROM refunds r
    JOIN refund_allocations a ON a.refund_id = r.refund_id
    -- a cancelled order counts nowhere: neither its sale nor its refund
    JOIN orders o ON o.payment_intent_id = r.payment_intent_id AND o.status = 'confirmed'
    WHERE r.refunded_at >= {lo} AND r.refunded_at < {hi} {refund_filter}
    GROUP BY a.vendor_id, CAST(r.refunded_at AT TIME ZONE {tz} AS date)
)"""


def _vendor_days_cte(*, one_vendor: bool) -> str:
    """CTE `vendor_days`: one row per vendor (or `:vendor_id`) and day, zeros included."""
    vendor_filter = "WHERE v.vendor_id = CAST(:vendor_id AS uuid)" if one_vendor else ""
    return f"""
vendor_days AS (
    SELECT v.vendor_id, v.created_at AS vendor_created_at, d.day,
           CAST(coalesce(s.orders, 0) AS integer) AS orders,
           CAST(coalesce(s.gmv_minor, 0) AS bigint) AS gmv_minor,
           CAST(coalesce(f.refunds_minor, 0) AS bigint) AS refunds_minor,
           CAST(coalesce(s.platform_fees_minor, 0) AS bigint) AS platform_fees_minor,
           CAST(coalesce(s.gmv_minor, 0) - coalesce(s.platform_fees_minor, 0) - coalesce(f.refunds_minor, 0)
                AS bigint) AS payouts_minor
    FROM vendors v
    CROSS JOIN days d
    LEFT JOIN (SELECT vendor_id, day, count(DISTINCT order_id) AS orders, sum(line_total) AS gmv_minor,
                      sum(line_fee) AS platform_fees_minor
               FROM lines GROUP BY vendor_id, day) s ON s.vendor_id = v.vendor_id AND s.day = d.day
    LEFT JOIN refunded f ON f.vendor_id = v.vendor_id AND f.day = d.day
    {vendor_filter}
)"""


# Orders are counted once per order, not once per vendor; money is the sum over every line.
_PLATFORM_DAYS_CTE = """
platform_days AS (
    SELECT d.day,
           CAST(coalesce(s.orders, 0) AS integer) AS orders,
           CAST(coalesce(s.gmv_minor, 0) AS bigint) AS gmv_minor,
           CAST(coalesce(f.refunds_minor, 0) AS bigint) AS refunds_minor,
           CAST(coalesce(s.platform_fees_minor, 0) AS bigint) AS platform_fees_minor
    FROM days d
    LEFT JOIN (SELECT day, count(DISTINCT order_id) AS orders, sum(line_total) AS gmv_minor,
                      sum(line_fee) AS platform_fees_minor
               FROM lines GROUP BY day) s ON s.day = d.day
    LEFT JOIN (SELECT day, sum(refunds_minor) AS refunds_minor FROM refunded GROUP BY day) f ON f.day = d.day
)"""

_VENDOR_FIGURES = "orders, gmv_minor, refunds_minor, platform_fees_minor, payouts_minor"
_PLATFORM_FIGURES = "orders, gmv_minor, refunds_minor, platform_fees_minor"


def _upsert_vendor_days(*, one_vendor: bool) -> str:
    ctes = _source_ctes(tz=":tz", first_day="CAST(:day AS date)", last_day="CAST(:day AS date)",
                        one_vendor=one_vendor)
    # Unchanged rows are not rewritten: RETURNING lists exactly the rows created or corrected.
    return f"""
WITH {ctes},
{_vendor_days_cte(one_vendor=one_vendor)}
INSERT INTO vendor_daily AS stored (vendor_id, day, {_VENDOR_FIGURES})
SELECT vendor_id, day, {_VENDOR_FIGURES} FROM vendor_days
ON CONFLICT (vendor_id, day) DO UPDATE
SET orders = EXCLUDED.orders, gmv_minor = EXCLUDED.gmv_minor, refunds_minor = EXCLUDED.refunds_minor,
    platform_fees_minor = EXCLUDED.platform_fees_minor, payouts_minor = EXCLUDED.payouts_minor, computed_at = now()
WHERE (stored.orders, stored.gmv_minor, stored.refunds_minor, stored.platform_fees_minor, stored.payouts_minor)
      IS DISTINCT FROM
      (EXCLUDED.orders, EXCLUDED.gmv_minor, EXCLUDED.refunds_minor, EXCLUDED.platform_fees_minor,
       EXCLUDED.payouts_minor)
RETURNING vendor_id, (xmax = 0) AS created
"""


UPSERT_VENDOR_DAY = _upsert_vendor_days(one_vendor=True)
UPSERT_ALL_VENDORS_DAY = _upsert_vendor_days(one_vendor=False)

UPSERT_PLATFORM_DAY = f"""
WITH {_source_ctes(tz=":tz", first_day="CAST(:day AS date)", last_day="CAST(:day AS date)", one_vendor=False)},
{_PLATFORM_DAYS_CTE}
INSERT INTO platform_daily AS stored (day, {_PLATFORM_FIGURES})
SELECT day, {_PLATFORM_FIGURES} FROM platform_days
ON CONFLICT (day) DO UPDATE
SET orders = EXCLUDED.orders, gmv_minor = EXCLUDED.gmv_minor, refunds_minor = EXCLUDED.refunds_minor,
    platform_fees_minor = EXCLUDED.platform_fees_minor, computed_at = now()
WHERE (stored.orders, stored.gmv_minor, stored.refunds_minor, stored.platform_fees_minor)
      IS DISTINCT FROM
      (EXCLUDED.orders, EXCLUDED.gmv_minor, EXCLUDED.refunds_minor, EXCLUDED.platform_fees_minor)
RETURNING day, (xmax = 0) AS created
"""

# Serializes every writer of one day's rows. Taken in its own statement, before the upserts, so
# that their snapshot is newer than the last writer's commit: the last write is never the stalest.
LOCK_DAY = "SELECT pg_advisory_xact_lock(hashtextextended('orderpipe:metrics:day:' || CAST(:day AS text), 0))"

COUNT_VENDORS = "SELECT count(*) AS vendors FROM vendors"


def lock_day(conn: Connection, day: date) -> None:
    """Hold the day's metrics lock until the current transaction ends."""
    conn.execute(LOCK_DAY, day=day.isoformat())


def upsert_vendor_day(conn: Connection, *, vendor_id: str, day: date, tz: str) -> list[dict[str, Any]]:
    """Recompute one vendor-day; returns the row if it was created or corrected, else nothing."""
    return conn.fetch_all(UPSERT_VENDOR_DAY, vendor_id=vendor_id, day=day.isoformat(), tz=tz)


def upsert_all_vendors_day(conn: Connection, *, day: date, tz: str) -> list[dict[str, Any]]:
    """Recompute every vendor's row of one day; returns the rows created or corrected."""
    return conn.fetch_all(UPSERT_ALL_VENDORS_DAY, day=day.isoformat(), tz=tz)


def upsert_platform_day(conn: Connection, *, day: date, tz: str) -> list[dict[str, Any]]:
    """Recompute the platform's row of one day; returns it if it was created or corrected."""
    return conn.fetch_all(UPSERT_PLATFORM_DAY, day=day.isoformat(), tz=tz)


def count_vendors(conn: Connection) -> int:
    """How many vendors exist (the vendor rows one day has)."""
    return int(conn.fetch_value(COUNT_VENDORS))


# FOR SHARE blocks the job's claim (an UPDATE) until the caller's transaction ends.
# --- reading ------------------------------------------------------------------------------------

SELECT_VENDOR_DASHBOARD = """
SELECT v.vendor_id,
       coalesce(t.orders, 0) AS today_orders,
       coalesce(t.gmv_minor, 0) AS today_gmv_minor,
       coalesce(t.refunds_minor, 0) AS today_refunds_minor,
       coalesce(t.platform_fees_minor, 0) AS today_platform_fees_minor,
       CAST(coalesce(m.orders, 0) AS bigint) AS month_orders,
       CAST(coalesce(m.gmv_minor, 0) AS bigint) AS month_gmv_minor,
       CAST(coalesce(m.payouts_minor, 0) AS bigint) AS month_payouts_minor,
       CAST(coalesce(m.refunds_minor, 0) AS bigint) AS month_refunds_minor,
       CAST(coalesce(m.platform_fees_minor, 0) AS bigint) AS month_platform_fees_minor,
       CAST(coalesce(e.earned_minor, 0) - coalesce(p.paid_minor, 0) AS bigint) AS pending_payout_minor
FROM vendors v
LEFT JOIN vendor_daily t ON t.vendor_id = v.vendor_id AND t.day = CAST(:today AS date)
CROSS JOIN LATERAL (
    SELECT sum(orders) AS orders, sum(gmv_minor) AS gmv_minor, sum(payouts_minor) AS payouts_minor,
           sum(refunds_minor) AS refunds_minor, sum(platform_fees_minor) AS platform_fees_minor
    FROM vendor_daily
    WHERE vendor_id = v.vendor_id AND day BETWEEN CAST(:first_day AS date) AND CAST(:today AS date)
) m
CROSS JOIN LATERAL (SELECT sum(payouts_minor) AS earned_minor FROM vendor_daily WHERE vendor_id = v.vendor_id) e
CROSS JOIN LATERAL (SELECT sum(amount_minor) AS paid_minor FROM vendor_payouts WHERE vendor_id = v.vendor_id) p
WHERE v.vendor_id = CAST(:vendor_id AS uuid)
"""

# A row for every day, zeros where nothing is stored.
SELECT_PLATFORM_SERIES = """
SELECT CAST(g AS date) AS day,
       coalesce(p.orders, 0) AS orders,
       coalesce(p.gmv_minor, 0) AS gmv_minor,
       coalesce(p.refunds_minor, 0) AS refunds_minor,
       coalesce(p.platform_fees_minor, 0) AS platform_fees_minor
FROM generate_series(CAST(CAST(:first_day AS date) AS timestamp), CAST(CAST(:last_day AS date) AS timestamp),
                     interval '1 day') AS g
LEFT JOIN platform_daily p ON p.day = CAST(g AS date)
ORDER BY 1
"""


def vendor_dashboard(conn: Connection, *, vendor_id: str, today: date, first_day: date) -> dict[str, Any] | None:
    """Today's row, the sums of first_day..today and the pending payout of a vendor; None if no such vendor."""
    return conn.fetch_one(SELECT_VENDOR_DASHBOARD, vendor_id=vendor_id, today=today.isoformat(),
                          first_day=first_day.isoformat())


def platform_series(conn: Connection, *, first_day: date, last_day: date) -> list[dict[str, Any]]:
    """One platform row per day of first_day..last_day, oldest first, zeros where nothing is stored."""
    return conn.fetch_all(SELECT_PLATFORM_SERIES, first_day=first_day.isoformat(), last_day=last_day.isoformat())


# --- refunds ------------------------------------------------------------------------------------

SELECT_INTENT_CURRENCY = "SELECT currency FROM payment_intents WHERE payment_intent_id = :payment_intent_id"

INSERT_REFUND = """
INSERT INTO refunds (payment_intent_id, provider, external_refund_id, amount_minor, currency, refunded_at)
VALUES (:payment_intent_id, :provider, :external_refund_id, :amount_minor, :currency,
        CAST(:refunded_at AS timestamptz))
ON CONFLICT (provider, external_refund_id) DO NOTHING
RETURNING refund_id
"""

# What each vendor sold in the intent's order: the weights a refund is shared by.
SELECT_VENDOR_TOTALS_OF_INTENT = """
SELECT i.vendor_id, CAST(sum(CAST(i.quantity AS numeric) * i.unit_price_minor) AS bigint) AS line_total
FROM orders o JOIN order_items i ON i.order_id = o.order_id
WHERE o.payment_intent_id = :payment_intent_id
GROUP BY i.vendor_id
ORDER BY i.vendor_id
"""

INSERT_ALLOCATION = """
INSERT INTO refund_allocations (refund_id, vendor_id, amount_minor) VALUES (:refund_id, :vendor_id, :amount_minor)
"""


def intent_currency(conn: Connection, payment_intent_id: str) -> str | None:
    return conn.fetch_value(SELECT_INTENT_CURRENCY, payment_intent_id=payment_intent_id)


def insert_refund(conn: Connection, *, payment_intent_id: str, provider: str, external_refund_id: str,
                  amount_minor: int, currency: str, refunded_at: datetime) -> str | None:
    """The new refund's id, or None when (provider, external_refund_id) is already recorded."""
    refund_id = conn.fetch_value(INSERT_REFUND, payment_intent_id=payment_intent_id, provider=provider,
                                 external_refund_id=external_refund_id, amount_minor=amount_minor,
                                 currency=currency, refunded_at=refunded_at.isoformat())
    return None if refund_id is None else str(refund_id)


def vendor_totals_of_intent(conn: Connection, payment_intent_id: str) -> dict[str, int]:
    """Each vendor's line total in the intent's order (empty when the intent has no order)."""
    rows = conn.fetch_all(SELECT_VENDOR_TOTALS_OF_INTENT, payment_intent_id=payment_intent_id)
    return {str(row["vendor_id"]): int(row["line_total"]) for row in rows}


def insert_allocation(conn: Connection, *, refund_id: str, vendor_id: str, amount_minor: int) -> None:
    conn.execute(INSERT_ALLOCATION, refund_id=refund_id, vendor_id=vendor_id, amount_minor=amount_minor)


# --- drift checks (shared.flows.invariants runs them without parameters) ----------------------

_TZ_NAME = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")

# A missing row whose figures would all be zero is only a breach once the nightly reconcile has had
# its chance (it runs daily and writes every vendor's zero rows): the vendor (for the platform: the
# first vendor) and the day are older than this.
MISSING_ROW_GRACE = "26 hours"

# Work already queued for a vendor-day is not drift: the waiting (or running) job will write it.
_LIVE_REFRESH_JOB = """
SELECT 1 FROM jobs j
WHERE j.kind = 'refresh_metrics' AND j.status IN ('pending', 'running', 'retryable')
"""


def drift_checks_sql(tz: str) -> dict[str, str]:
    """The drift queries for yesterday and today in `tz`, by name; each returns one row per breach.

    `tz` is written into the SQL as a literal (invariants take no parameters); it must be a
    plain zone name, which is checked here.
    """
    if not _TZ_NAME.match(tz):
        raise ValueError(f"not a time zone name: {tz!r}")
    literal = f"'{tz}'"
    today = f"CAST(now() AT TIME ZONE {literal} AS date)"
    ctes = _source_ctes(tz=literal, first_day=f"({today} - 1)", last_day=today, one_vendor=False)
    day_start = f"(CAST(r.day AS timestamp) AT TIME ZONE {literal})"
    vendor_drift = f"""
WITH {ctes},
{_vendor_days_cte(one_vendor=False)}
SELECT r.vendor_id, r.day,
       s.orders AS stored_orders, r.orders,
       s.gmv_minor AS stored_gmv_minor, r.gmv_minor,
       s.refunds_minor AS stored_refunds_minor, r.refunds_minor,
       s.platform_fees_minor AS stored_platform_fees_minor, r.platform_fees_minor,
       s.payouts_minor AS stored_payouts_minor, r.payouts_minor
FROM vendor_days r
LEFT JOIN vendor_daily s ON s.vendor_id = r.vendor_id AND s.day = r.day
WHERE (s.vendor_id IS NOT NULL OR (r.orders, r.gmv_minor, r.refunds_minor, r.platform_fees_minor) <> (0, 0, 0, 0))
  AND (s.orders, s.gmv_minor, s.refunds_minor, s.platform_fees_minor, s.payouts_minor)
      IS DISTINCT FROM (r.orders, r.gmv_minor, r.refunds_minor, r.platform_fees_minor, r.payouts_minor)
  AND NOT EXISTS ({_LIVE_REFRESH_JOB}
                  AND j.key = 'metrics:' || CAST(r.vendor_id AS text) || ':' || to_char(r.day, 'YYYY-MM-DD'))
"""
    platform_drift = f"""
WITH {ctes},
{_PLATFORM_DAYS_CTE}
SELECT r.day,
       s.orders AS stored_orders, r.orders,
       s.gmv_minor AS stored_gmv_minor, r.gmv_minor,
       s.refunds_minor AS stored_refunds_minor, r.refunds_minor,
       s.platform_fees_minor AS stored_platform_fees_minor, r.platform_fees_minor
FROM platform_days r
LEFT JOIN platform_daily s ON s.day = r.day
WHERE (s.day IS NOT NULL OR (r.orders, r.gmv_minor, r.refunds_minor, r.platform_fees_minor) <> (0, 0, 0, 0))
  AND (s.orders, s.gmv_minor, s.refunds_minor, s.platform_fees_minor)
      IS DISTINCT FROM (r.orders, r.gmv_minor, r.refunds_minor, r.platform_fees_minor)
  AND NOT EXISTS ({_LIVE_REFRESH_JOB} AND j.payload ->> 'day' = to_char(r.day, 'YYYY-MM-DD'))
"""
    missing = f"""
WITH {ctes},
{_vendor_days_cte(one_vendor=False)},
{_PLATFORM_DAYS_CTE.strip()}
SELECT 'vendor_daily' AS metrics_table, r.vendor_id, r.day
FROM vendor_days r
WHERE NOT EXISTS (SELECT 1 FROM vendor_daily s WHERE s.vendor_id = r.vendor_id AND s.day = r.day)
  AND greatest(r.vendor_created_at, {day_start}) < now() - interval '{MISSING_ROW_GRACE}'
UNION ALL
SELECT 'platform_daily', NULL, r.day
FROM platform_days r
WHERE NOT EXISTS (SELECT 1 FROM platform_daily s WHERE s.day = r.day)
  AND greatest((SELECT min(created_at) FROM vendors), {day_start}) < now() - interval '{MISSING_ROW_GRACE}'
"""
    return {"vendor_drift": vendor_drift, "platform_drift": platform_drift, "missing": missing}
