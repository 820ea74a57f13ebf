"""reconcile: the sweeps Cloud Scheduler runs so nothing is ever left where nothing will pick it up.

Each task runs under its own PostgreSQL advisory lock: a run that overlaps another skips the tasks
the other holds and says so. Each task bounds its work per run and returns counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared import errors, jobs
from shared.db import idempotency
from shared.db.pool import advisory_lock
from shared.jobs import store
from shared.runtime import Runtime

log = logging.getLogger(__name__)

TaskName = Literal["dispatch_due_jobs", "rescue_stale_jobs", "expire_reservations", "heal_paid_without_order",
                   "poll_stragglers", "reconcile_metrics", "purge_old_jobs"]
TASK_ORDER: tuple[str, ...] = ("rescue_stale_jobs", "dispatch_due_jobs", "expire_reservations",
                               "heal_paid_without_order", "poll_stragglers", "reconcile_metrics", "purge_old_jobs")
# How long an intent stays unconfirmed before it is asked about at the gateway, and how often it is
# asked again: settings STRAGGLER_AFTER_S (180) and STRAGGLER_REPOLL_S (300).
STRAGGLER_WINDOW_H = 72  # how far back late payments are looked for
STRAGGLERS_PER_RUN = 50
IDEMPOTENCY_RETENTION_DAYS = 7


class ReconcileIn(BaseModel):
    model_config = ConfigDict(strict=True)
    tasks: list[TaskName] | None = Field(default=None, min_length=1, max_length=len(TASK_ORDER))
    window_hours: int = Field(default=48, ge=1, le=24 * 31)


def run(runtime: Runtime, request: ReconcileIn) -> dict[str, Any]:
    """Run the requested tasks (all by default) in a fixed order; report what ran and what was skipped.

    Every task's lock is tried before any task runs and held until the run ends, so two runs that
    overlap split the tasks between them: each task runs once, the other run lists it as skipped.
    """
    wanted = [name for name in TASK_ORDER if name in set(request.tasks or TASK_ORDER)]
    ran: dict[str, Any] = {}
    skipped: list[str] = []
    with runtime.db.connection() as lock_conn, ExitStack() as held:
        mine = []
        for name in wanted:
            if held.enter_context(advisory_lock(lock_conn, f"reconcile:{name}", wait=False)):
                mine.append(name)
            else:
                skipped.append(name)
        for name in mine:
            try:
                ran[name] = TASKS[name](runtime, request)
            except errors.OrderpipeError as exc:
                log.warning("reconcile task failed", extra={"task": name, "code": exc.code})
                ran[name] = {"error": exc.code}
    return {"ran": ran, "skipped": skipped}


def _dispatch_due_jobs(runtime: Runtime, request: ReconcileIn) -> dict[str, int]:
    return jobs.dispatch_due_jobs(runtime.db)


def _rescue_stale_jobs(runtime: Runtime, request: ReconcileIn) -> dict[str, int]:
    return jobs.rescue_stale_jobs(runtime.db)


def _expire_reservations(runtime: Runtime, request: ReconcileIn) -> dict[str, int]:
    from shared.flows.expiry import expire_lapsed

    return expire_lapsed(runtime.db)


SELECT_PAID_WITHOUT_ORDER = """
SELECT p.payment_intent_id FROM payment_intents p
WHERE p.status = 'paid'
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.payment_intent_id = p.payment_intent_id)
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.kind = 'finalize_order' AND j.key = 'finalize:' || p.payment_intent_id
                  AND j.status IN ('pending', 'running', 'retryable'))
ORDER BY p.paid_at
LIMIT :limit
"""


def _heal_paid_without_order(runtime: Runtime, request: ReconcileIn) -> dict[str, int]:
    """A paid intent with no order and no live finalize job (its job died) gets a new one."""
    healed = 0
    with runtime.db.transaction() as conn:
        for row in conn.fetch_all(SELECT_PAID_WITHOUT_ORDER, limit=500):
            pid = row["payment_intent_id"]
            jobs.enqueue(conn, "finalize_order", {"payment_intent_id": pid}, key=f"finalize:{pid}")
            healed += 1
    if healed:
        log.warning("paid intents without an order healed", extra={"count": healed})
    return {"healed": healed}


SELECT_STRAGGLERS = """
SELECT payment_intent_id, provider, amount_minor, currency, external_reference, status
FROM payment_intents
WHERE status IN ('awaiting_payment', 'verifying', 'expired')
  AND external_reference IS NOT NULL
  AND created_at > now() - make_interval(hours => :window_h)
  AND updated_at < now() - make_interval(secs => :after_s)
  AND (last_checked_at IS NULL OR last_checked_at < now() - make_interval(secs => :repoll_s))
ORDER BY last_checked_at NULLS FIRST, created_at
LIMIT :limit
"""


def _poll_stragglers(runtime: Runtime, request: ReconcileIn) -> dict[str, int]:
    """Ask the gateway about intents nobody confirmed (eSewa and Khalti have no webhooks; Stripe's may be lost)."""
    from shared.db import payments
    from shared.flows.verification import check_straggler

    with runtime.db.connection() as conn:
        stragglers = conn.fetch_all(SELECT_STRAGGLERS, window_h=STRAGGLER_WINDOW_H,
                                    after_s=runtime.settings.straggler_after_s,
                                    repoll_s=runtime.settings.straggler_repoll_s, limit=STRAGGLERS_PER_RUN)
    counts = {"checked": 0, "verified": 0, "pending": 0, "failed": 0, "mismatch": 0, "unavailable": 0}
    for intent in stragglers:
        with runtime.db.connection() as conn:
            payments.mark_checked(conn, intent["payment_intent_id"])
        try:
            outcome = check_straggler(runtime.db, runtime.gateways[intent["provider"]], intent)
        except errors.TransientError:
            counts["unavailable"] += 1
            continue
        except errors.OrderpipeError as exc:
            log.warning("straggler check refused", extra={"payment_intent_id": intent["payment_intent_id"],
                                                          "code": exc.code})
            continue
        counts["checked"] += 1
        counts[outcome.verification] = counts.get(outcome.verification, 0) + 1
    return counts


def _reconcile_metrics(runtime: Runtime, request: ReconcileIn) -> dict[str, Any]:
    from shared.flows import metrics

    return metrics.reconcile_metrics(runtime.db, window_hours=request.window_hours)


def _purge_old_jobs(runtime: Runtime, request: ReconcileIn) -> dict[str, int]:
    with runtime.db.transaction() as conn:
        purged = store.purge_finished(conn, older_than_days=runtime.settings.job_retention_days)
        keys = idempotency.purge_old(conn, IDEMPOTENCY_RETENTION_DAYS)
    return {"jobs_purged": purged, "idempotency_keys_purged": keys}


TASKS: dict[str, Callable[[Runtime, ReconcileIn], Any]] = {
    "dispatch_due_jobs": _dispatch_due_jobs,
    "rescue_stale_jobs": _rescue_stale_jobs,
    "expire_reservations": _expire_reservations,
    "heal_paid_without_order": _heal_paid_without_order,
    "poll_stragglers": _poll_stragglers,
    "reconcile_metrics": _reconcile_metrics,
    "purge_old_jobs": _purge_old_jobs,
}
