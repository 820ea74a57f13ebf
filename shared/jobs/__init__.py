"""Durable jobs: PostgreSQL is the record, the task queue is the doorbell.

    with db.transaction() as conn:
        ...state change...
        enqueue(conn, "finalize_order", {"payment_intent_id": pid}, key=f"finalize:{pid}")

The job row commits with the state change that needs it (transactional outbox); the hand-off to
the task queue happens after commit. `dispatch_due_jobs` and `rescue_stale_jobs` are what
reconcile runs so that no job is ever left where nothing will pick it up.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from shared.config import get_settings
from shared.db.connection import Connection
from shared.db.pool import Database
from shared.jobs import store
from shared.jobs.dispatch import DISPATCH_HORIZON_S, Dispatcher, LocalDispatcher
from shared.jobs.queues import ORDERS, QUEUES
from shared.jobs.store import Job

log = logging.getLogger(__name__)

__all__ = ["Job", "enqueue", "enqueue_for_rows", "cancel", "retry", "set_dispatcher", "current_dispatcher",
           "dispatch_due_jobs", "rescue_stale_jobs"]

_dispatcher_lock = threading.Lock()
_dispatcher: Dispatcher | None = None


def set_dispatcher(dispatcher: Dispatcher | None) -> None:
    """Install the process's dispatcher (the runtime does this when it is built)."""
    global _dispatcher
    with _dispatcher_lock:
        _dispatcher = dispatcher


def current_dispatcher() -> Dispatcher:
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None:
            _dispatcher = LocalDispatcher()
        return _dispatcher


def enqueue(conn: Connection, kind: str, payload: dict[str, Any] | None = None, *, run_at: datetime | None = None,
            key: str | None = None, queue: str = ORDERS, max_attempts: int | None = None) -> Job:
    """Write a job in the caller's transaction; it is handed to the task queue after commit.

    With a `key`, a job already waiting under that key is returned instead of a new one.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")
    if not conn.in_transaction:
        raise RuntimeError("enqueue must run inside the transaction of the state change that needs the job")
    job, created = store.insert(conn, kind=kind, queue=queue, payload=payload or {}, key=key, run_at=run_at,
                                max_attempts=max_attempts or get_settings().jobs_max_attempts)
    if created:
        conn.after_commit(lambda: current_dispatcher().dispatch([job]))
    return job


def enqueue_for_rows(conn: Connection, source: str, kind: str, job_payload: str, /, *, queue: str = ORDERS,
                     max_attempts: int | None = None, **params: Any) -> list[Job]:
    """Write rows and one job per row in a single statement; return the jobs (none: `source` wrote nothing).

    `source` is a data-modifying statement ending in `RETURNING …` (its `:name` parameters come in
    `params`), `job_payload` a SQL expression over the returned columns that builds each job's jsonb
    payload. Rows and jobs commit together: in the caller's transaction (handed to the queue after its
    commit), or — outside one — as a statement of its own, without BEGIN/COMMIT round trips, handed over
    as soon as it returns.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")
    rows = conn.fetch_all(store.insert_for_rows_sql(source, job_payload), job_kind=kind, job_queue=queue,
                          job_max_attempts=max_attempts or get_settings().jobs_max_attempts, **params)
    created = [Job.from_row(row) for row in rows]
    if created:
        if conn.in_transaction:
            conn.after_commit(lambda: current_dispatcher().dispatch(created))
        else:
            current_dispatcher().dispatch(created)
    return created


def cancel(conn: Connection, job_id: int) -> Job | None:
    """Cancel scheduled work that is no longer needed; its task is withdrawn after commit when possible."""
    job = store.cancel(conn, job_id)
    if job is not None and conn.in_transaction:
        conn.after_commit(lambda: current_dispatcher().cancel(job))
    elif job is not None:
        current_dispatcher().cancel(job)
    return job


def retry(db: Database, job_id: int) -> Job | None:
    """Bring a dead or failed job back to pending and hand it over again (new task generation)."""
    with db.transaction() as conn:
        job = store.retry(conn, job_id)
        if job is not None:
            conn.after_commit(lambda: current_dispatcher().dispatch([job]))
    return job


def rescue_stale_jobs(db: Database, *, limit: int = 500) -> dict[str, int]:
    """Jobs running past their lease go back to waiting (or dead if that was their last attempt)."""
    with db.transaction() as conn:
        rescued = store.rescue_stale(conn, limit=limit)
        waiting = [job for job in rescued if job.status == "retryable"]
        if waiting:
            conn.after_commit(lambda: current_dispatcher().dispatch(waiting))
    counts = {"rescued": len(rescued), "dead": sum(j.status == "dead" for j in rescued),
              "superseded": sum(j.status == "cancelled" for j in rescued)}
    if rescued:
        log.warning("stale jobs rescued", extra=counts)
    return counts


SELECT_LOCAL_LEASES = """
SELECT job_id, locked_by FROM jobs WHERE status = 'running' AND locked_by LIKE :prefix
"""
EXPIRE_LEASE = """
UPDATE jobs SET locked_until = now() - interval '1 second'
WHERE job_id = :job_id AND status = 'running' AND locked_by = :locked_by
"""


def expire_leases_of_dead_local_workers(db: Database) -> int:
    """Expire the leases held by worker processes of this host that no longer exist.

    Only meaningful where the workers run on this machine (`orderpipe dev`): a dev server killed
    mid-job left leases that nobody will ever finish, so a restart need not wait them out.
    """
    import os
    import socket

    expired = 0
    with db.connection() as conn:
        for row in conn.fetch_all(SELECT_LOCAL_LEASES, prefix=f"{socket.gethostname()}:%"):
            try:
                pid = int(row["locked_by"].split(":")[1])
                os.kill(pid, 0)
                continue  # the worker is alive: its lease stands
            except ProcessLookupError:
                pass
            except (ValueError, IndexError, PermissionError):
                continue
            expired += conn.execute(EXPIRE_LEASE, job_id=row["job_id"], locked_by=row["locked_by"])
    return expired


# A job with a live task is never silent this long: the longest backoff is far shorter.
LOST_TASK_AFTER_S = 15 * 60


def dispatch_due_jobs(db: Database, *, limit: int = 500) -> dict[str, int]:
    """Hand over every job due (or due within the queue's horizon) that no task holds."""
    with db.transaction() as conn:
        jobs = store.take_undispatched(conn, horizon_s=DISPATCH_HORIZON_S, lost_after_s=LOST_TASK_AFTER_S,
                                       limit=limit)
    handed = current_dispatcher().dispatch(jobs) if jobs else []
    return {"found": len(jobs), "dispatched": len(handed)}


def mark_dispatched(db: Database, job_id: int, generation: int) -> None:
    with db.connection() as conn:
        store.mark_dispatched(conn, job_id, generation)
