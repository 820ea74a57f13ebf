"""Live metrics: vendor and platform daily figures, kept fresh by coalesced jobs, healed by reconcile.

Definitions (money is integer minor units everywhere):

- A **day** is a calendar date in METRICS_TIMEZONE (`settings.metrics_timezone`, default UTC):
  `day_of(ts)`; in SQL `CAST(ts AT TIME ZONE tz AS date)`.
- A vendor's day counts the **confirmed** orders created that day. Cancelled orders count nowhere:
  neither their lines nor the refunds of their payment.
  - `orders`: distinct orders with at least one line of the vendor.
  - `gmv_minor`: Σ quantity × unit_price_minor of the vendor's lines.
  - `platform_fees_minor`: Σ per line of round-half-up(line_total × platform_fee_bps / 10000), with the
    line's own fee snapshot, in integer arithmetic: (line_total × bps + 5000) div 10000.
  - `refunds_minor`: Σ refund_allocations.amount_minor of the refunds whose refunded_at falls on that day.
  - `payouts_minor`: what the vendor earned that day: gmv − fees − refunds (may be negative).
- The platform's day is the sum over vendors, except `orders`, which counts each order once.
- `pending_payout_minor` (dashboard): all-time Σ vendor_daily.payouts_minor − Σ vendor_payouts.amount_minor.
- A row exists for every vendor and every day in range, zeros included (refresh, reconcile and
  backfill write zero rows; `platform_daily` fills gaps with zeros when reading).

How the tables stay equal to a recomputation:

- Whatever changes a vendor-day (an order finalized, a refund recorded, an order cancelled) calls
  `enqueue_refresh` in its own transaction: one `refresh_metrics` job row, coalesced per vendor-day,
  so a burst of orders costs one recomputation. It cannot fail the order: it only writes a job row,
  inside a savepoint, and logs and moves on if even that fails (reconcile heals the day).
- The job recomputes that vendor-day row and that platform-day row from source rows in two
  idempotent UPSERTs. All writers of one day (jobs, reconcile, backfill) first take the day's
  transaction-level advisory lock, in a statement of its own, so each UPSERT's snapshot is newer
  than the previous writer's commit: two concurrent refreshes can never leave the older result.
- `reconcile_metrics` (nightly, 48 h) and `backfill` recompute every vendor × day set-wise, one
  transaction per day. The `METRICS_INVARIANTS` report drift for yesterday and today.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared import errors, jobs
from shared.config import get_settings
from shared.db import metrics as metrics_db
from shared.db.connection import Connection
from shared.db.pool import Database
from shared.flows.invariants import Invariant
from shared.jobs.registry import job_handler
from shared.jobs.store import Job

log = logging.getLogger(__name__)

REFRESH_KIND = "refresh_metrics"
MAX_BACKFILL_DAYS = 3660
MAX_RECONCILE_WINDOW_HOURS = 31 * 24
MAX_PLATFORM_DAYS = 366
DASHBOARD_DAYS = 30
DASHBOARD_CACHE_TTL_S = 5.0

__all__ = [
    "METRICS_INVARIANTS", "backfill", "day_of", "enqueue_refresh", "platform_daily", "reconcile_metrics",
    "record_refund", "refresh_metrics", "refresh_platform_day", "refresh_vendor_day", "vendor_dashboard",
]


# --- days ---------------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise errors.ConfigurationError(f"METRICS_TIMEZONE {name!r} is not a known time zone.") from exc


def day_of(ts: datetime, settings: Any) -> date:
    """The metrics day of `ts`: its date in METRICS_TIMEZONE (a naive `ts` is taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(_zone(settings.metrics_timezone)).date()


def _today(settings: Any) -> date:
    return day_of(datetime.now(UTC), settings)


def _timezone_of(settings: Any) -> str:
    name = settings.metrics_timezone
    _zone(name)
    return name


def _vendor_key(vendor_id: Any) -> str:
    """The canonical text of a vendor id (job keys and payloads must match the SQL's uuid text)."""
    try:
        return str(uuid.UUID(str(vendor_id)))
    except ValueError as exc:
        raise errors.ValidationFailed("vendor_id must be a UUID.", details={"vendor_id": str(vendor_id)}) from exc


# --- refresh: the job and its two steps ---------------------------------------------------------


def enqueue_refresh(conn: Connection, vendor_id: Any, day: date) -> None:
    """Ask for vendor-day `day` (and its platform day) to be recomputed once this transaction commits.

    Call it inside the transaction of the change (order finalization, refund, cancellation), as late
    as possible: a concurrent transaction enqueuing the same vendor-day waits for this one to commit.
    It never fails the caller: a failure to write the job is logged and left to reconcile.
    """
    if isinstance(day, datetime) or not isinstance(day, date):
        raise TypeError("enqueue_refresh takes the metrics day as a date (see day_of)")
    if not conn.in_transaction:
        raise RuntimeError("enqueue_refresh must run inside the transaction of the change it is about")
    vendor = _vendor_key(vendor_id)
    try:
        with conn.transaction():  # a savepoint: whatever happens here, the caller's work stands
            _enqueue_refresh_job(conn, vendor, day)
    except errors.OrderpipeError as exc:
        if conn.broken:
            raise
        log.warning("metrics refresh not enqueued; reconcile will heal the day",
                    extra={"vendor_id": vendor, "day": day.isoformat(), "reason": exc.code})


def _enqueue_refresh_job(conn: Connection, vendor: str, day: date) -> None:
    # Coalesced on the vendor-day key; a waiting job we join cannot start before we commit (jobs.store).
    delay = get_settings().metrics_refresh_delay_s
    jobs.enqueue(conn, REFRESH_KIND, {"vendor_id": vendor, "day": day.isoformat()},
                 key=f"metrics:{vendor}:{day.isoformat()}",
                 run_at=datetime.now(UTC) + timedelta(seconds=delay) if delay else None)


@job_handler(REFRESH_KIND)
def refresh_metrics(conn: Connection, job: Job) -> None:
    """Job `refresh_metrics` {vendor_id, day}: recompute that vendor-day row and that platform-day row."""
    try:
        vendor = str(uuid.UUID(str(job.payload["vendor_id"])))
        day = date.fromisoformat(str(job.payload["day"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.PermanentJobError("refresh_metrics needs {vendor_id: uuid, day: YYYY-MM-DD}.") from exc
    tz = _timezone_of(get_settings())
    metrics_db.lock_day(conn, day)
    metrics_db.upsert_vendor_day(conn, vendor_id=vendor, day=day, tz=tz)
    metrics_db.upsert_platform_day(conn, day=day, tz=tz)


def refresh_vendor_day(conn: Connection, vendor_id: Any, day: date) -> bool:
    """Recompute one vendor-day row from source rows; True when the stored row was created or corrected."""
    tz = _timezone_of(get_settings())
    vendor = _vendor_key(vendor_id)
    with _transaction(conn):
        metrics_db.lock_day(conn, day)
        return bool(metrics_db.upsert_vendor_day(conn, vendor_id=vendor, day=day, tz=tz))


def refresh_platform_day(conn: Connection, day: date) -> bool:
    """Recompute one platform-day row from source rows; True when the stored row was created or corrected."""
    tz = _timezone_of(get_settings())
    with _transaction(conn):
        metrics_db.lock_day(conn, day)
        return bool(metrics_db.upsert_platform_day(conn, day=day, tz=tz))


def _transaction(conn: Connection) -> AbstractContextManager[Any]:
    """The caller's transaction when one is open (the day lock lasts until it ends), else a new one."""
    return nullcontext() if conn.in_transaction else conn.transaction()


# --- whole days: reconcile and backfill ---------------------------------------------------------


def _recompute_day(conn: Connection, day: date, tz: str) -> dict[str, int]:
    metrics_db.lock_day(conn, day)
    vendors = metrics_db.count_vendors(conn)
    changed = metrics_db.upsert_all_vendors_day(conn, day=day, tz=tz)
    platform = metrics_db.upsert_platform_day(conn, day=day, tz=tz)
    return {"vendor_rows": vendors, "changed": len(changed), "created": sum(1 for r in changed if r["created"]),
            "platform_changed": len(platform)}


def _recompute_days(db: Database, days: Sequence[date],
                    progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    tz = _timezone_of(db.settings)
    totals = {"days": 0, "vendor_rows": 0, "changed": 0, "created": 0, "platform_changed": 0}
    for done, day in enumerate(days, start=1):
        counts = db.run_in_transaction(lambda conn, day=day: _recompute_day(conn, day, tz))
        totals["days"] += 1
        for name, value in counts.items():
            totals[name] += value
        if progress is not None:
            progress(done, len(days))
    return totals


def _days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def reconcile_metrics(db: Database, *, window_hours: int = 48) -> dict[str, int]:
    """Recompute every vendor × day touching the last `window_hours`: create missing rows, fix drift.

    One transaction per day, so the work is bounded by vendors × (window_hours / 24 + 1) rows.
    Returns {days, vendor_rows, changed, created, platform_changed}.
    """
    if not 1 <= window_hours <= MAX_RECONCILE_WINDOW_HOURS:
        raise errors.ValidationFailed(f"window_hours must be between 1 and {MAX_RECONCILE_WINDOW_HOURS}.",
                                      details={"window_hours": window_hours})
    now = datetime.now(UTC)
    days = _days_between(day_of(now - timedelta(hours=window_hours), db.settings), day_of(now, db.settings))
    totals = _recompute_days(db, days)
    corrected = totals["changed"] - totals["created"]
    if corrected:
        # Rows that existed with other figures: a refresh was lost or someone edited the table.
        log.warning("metrics rows had drifted and were corrected",
                    extra={"rows_corrected": corrected, "first_day": days[0].isoformat()})
    log.info("metrics reconciled", extra={"metrics_days": totals["days"], "rows_changed": totals["changed"],
                                          "rows_created": totals["created"]})
    return totals


def backfill(db: Database, *, days: int, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Recompute every vendor × each of the last `days` days (today included), oldest first.

    One transaction per day; `progress(done, total)` is called after each day.
    Returns {days, vendor_rows, changed, created, platform_changed}.
    """
    if not 1 <= days <= MAX_BACKFILL_DAYS:
        raise errors.ValidationFailed(f"days must be between 1 and {MAX_BACKFILL_DAYS}.", details={"days": days})
    today = _today(db.settings)
    return _recompute_days(db, _days_between(today - timedelta(days=days - 1), today), progress)


# --- reading: dashboards ------------------------------------------------------------------------

# Short-lived answers per Database (a WeakKeyDictionary, so a closed pool's answers go with it).
_dashboard_cache: weakref.WeakKeyDictionary[Database, dict[str, tuple[float, dict[str, Any]]]] = (
    weakref.WeakKeyDictionary())
_dashboard_lock = threading.Lock()
_DASHBOARD_CACHE_MAX = 1024


def vendor_dashboard(db: Database, vendor_id: Any) -> dict[str, Any]:
    """A vendor's figures for today and the last 30 days (today included), and the payout still owed.

    "today" is read from today's vendor_daily row, not recomputed from orders: the refresh jobs
    write it within moments of each order (one coalesced recomputation per burst), so the read is
    two index lookups however busy the vendor is, and it can never disagree with the 30-day sums
    beside it. The whole answer is cached in this process for DASHBOARD_CACHE_TTL_S seconds, which
    absorbs a dashboard polling every second from many tabs; a figure is therefore at most that
    plus the job latency old. Unknown vendor → NotFound.
    """
    try:
        vendor = str(uuid.UUID(str(vendor_id)))
    except ValueError as exc:
        raise errors.NotFound("No vendor with that id.", details={"vendor_id": str(vendor_id)}) from exc
    ttl = DASHBOARD_CACHE_TTL_S
    now = time.monotonic()
    with _dashboard_lock:
        cached = _dashboard_cache.get(db, {}).get(vendor)
    if cached is not None and cached[0] > now:
        return copy.deepcopy(cached[1])

    today = _today(db.settings)
    with db.connection() as conn:
        row = metrics_db.vendor_dashboard(conn, vendor_id=vendor, today=today,
                                          first_day=today - timedelta(days=DASHBOARD_DAYS - 1))
    if row is None:
        raise errors.NotFound("No vendor with that id.", details={"vendor_id": vendor})
    answer = {
        "vendor_id": vendor,
        "today": {
            "orders": int(row["today_orders"]),
            "gmv_minor": int(row["today_gmv_minor"]),
            "refunds_minor": int(row["today_refunds_minor"]),
            "platform_fees_minor": int(row["today_platform_fees_minor"]),
        },
        "last_30_days": {
            "orders": int(row["month_orders"]),
            "gmv_minor": int(row["month_gmv_minor"]),
            "payouts_minor": int(row["month_payouts_minor"]),
            "refunds_minor": int(row["month_refunds_minor"]),
            "platform_fees_minor": int(row["month_platform_fees_minor"]),
            "pending_payout_minor": int(row["pending_payout_minor"]),
        },
        "generated_at": datetime.now(UTC),
    }
    if ttl > 0:
        with _dashboard_lock:
            entries = _dashboard_cache.setdefault(db, {})
            if len(entries) >= _DASHBOARD_CACHE_MAX:
                entries.clear()
            entries[vendor] = (now + ttl, copy.deepcopy(answer))
    return answer


def platform_daily(db: Database, *, days: int = 30) -> list[dict[str, Any]]:
    """The platform's figures for each of the last `days` days (today included), oldest first, zeros included."""
    if not 1 <= days <= MAX_PLATFORM_DAYS:
        raise errors.ValidationFailed(f"days must be between 1 and {MAX_PLATFORM_DAYS}.", details={"days": days})
    today = _today(db.settings)
    with db.connection() as conn:
        rows = metrics_db.platform_series(conn, first_day=today - timedelta(days=days - 1), last_day=today)
    return [{"day": row["day"], "orders": int(row["orders"]), "gmv_minor": int(row["gmv_minor"]),
             "refunds_minor": int(row["refunds_minor"]), "platform_fees_minor": int(row["platform_fees_minor"])}
            for row in rows]


# --- refunds ------------------------------------------------------------------------------------


def allocate_by_weight(amount_minor: int, weights: dict[str, int]) -> dict[str, int]:
    """Split `amount_minor` over `weights` proportionally; largest remainder, so the parts sum exactly.

    Ties in the remainder go to the smaller key, so the split is deterministic. Pure integer math.
    """
    total = sum(weights.values())
    if amount_minor < 0 or total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError("allocate_by_weight needs a non-negative amount and positive total weight")
    shares = {key: amount_minor * weight // total for key, weight in weights.items()}
    left = amount_minor - sum(shares.values())
    by_remainder = sorted(weights, key=lambda key: (-(amount_minor * weights[key] % total), key))
    for key in by_remainder[:left]:
        shares[key] += 1
    return shares


def record_refund(conn: Connection, *, payment_intent_id: str, provider: str, external_refund_id: str,
                  amount_minor: int, currency: str, refunded_at: datetime) -> bool:
    """Store a gateway refund once and share it among the order's vendors; False if already recorded.

    The refund is allocated to the vendors of the intent's order in proportion to their line totals
    (largest remainder: the allocations sum to the refund exactly), and each vendor's refund day is
    queued for a metrics refresh. A refund of an intent without an order is stored unallocated: no
    vendor sold anything. Runs in the caller's transaction (a savepoint if one is open).
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise errors.ValidationFailed("amount_minor must be a positive integer.",
                                      details={"amount_minor": amount_minor})
    if refunded_at.tzinfo is None:
        refunded_at = refunded_at.replace(tzinfo=UTC)
    with conn.transaction():
        intent_currency = metrics_db.intent_currency(conn, payment_intent_id)
        if intent_currency is None:
            raise errors.NotFound("No payment intent with that id.",
                                  details={"payment_intent_id": payment_intent_id})
        if currency != intent_currency:
            raise errors.ValidationFailed("The refund's currency differs from the payment's.",
                                          details={"currency": currency, "payment_currency": intent_currency})
        refund_id = metrics_db.insert_refund(conn, payment_intent_id=payment_intent_id, provider=provider,
                                             external_refund_id=external_refund_id, amount_minor=amount_minor,
                                             currency=currency, refunded_at=refunded_at)
        if refund_id is None:
            return False
        totals = metrics_db.vendor_totals_of_intent(conn, payment_intent_id)
        if not totals:
            log.warning("refund recorded for an intent without an order; not allocated to vendors",
                        extra={"payment_intent_id": payment_intent_id})
            return True
        day = day_of(refunded_at, get_settings())
        for vendor, share in allocate_by_weight(amount_minor, totals).items():
            metrics_db.insert_allocation(conn, refund_id=refund_id, vendor_id=vendor, amount_minor=share)
            if share:
                enqueue_refresh(conn, vendor, day)
    return True


# --- invariants ---------------------------------------------------------------------------------


def _metrics_invariants(tz: str) -> list[Invariant]:
    checks = metrics_db.drift_checks_sql(tz)
    return [
        Invariant(
            "metrics_vendor_daily_matches_orders",
            "vendor_daily rows of yesterday and today equal a recomputation from orders and refunds "
            "(vendor-days with a waiting refresh job excepted)",
            checks["vendor_drift"],
        ),
        Invariant(
            "metrics_platform_daily_matches_orders",
            "platform_daily rows of yesterday and today equal a recomputation from orders and refunds "
            "(days with a waiting refresh job excepted)",
            checks["platform_drift"],
        ),
        Invariant(
            "metrics_rows_exist",
            f"every vendor has a vendor_daily row, and the platform a platform_daily row, for yesterday and "
            f"today once the vendor and the day are {metrics_db.MISSING_ROW_GRACE} old (reconcile writes them)",
            checks["missing"],
        ),
    ]


class _MetricsInvariants(Sequence[Invariant]):
    """The metrics invariants for the METRICS_TIMEZONE in effect when they are read.

    Invariants are parameterless SQL, so the zone is written into them; building them on each read
    (not at import) keeps them right when settings change (tests, the dev server) and keeps import
    free of configuration.
    """

    def _current(self) -> list[Invariant]:
        return _metrics_invariants(_timezone_of(get_settings()))

    def __getitem__(self, index):  # type: ignore[override]
        return self._current()[index]

    def __len__(self) -> int:
        return len(self._current())

    def __iter__(self) -> Iterator[Invariant]:
        return iter(self._current())


METRICS_INVARIANTS: Sequence[Invariant] = _MetricsInvariants()
