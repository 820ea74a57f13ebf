"""The jobs table: every state change of a job, as plain SQL.

Statuses: pending → running → completed; running → retryable → running …; running → dead
(the dead-letter queue); pending/retryable → cancelled. A `key` coalesces waiting jobs: at most one
pending/retryable job per key. A running job does not absorb new work under its key, because it
may already have read the data the new work is about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import errors
from shared.db.connection import Connection

JOB_COLUMNS = """job_id, kind, queue, payload, key, status, attempts, max_attempts, run_at, locked_until,
    locked_by, last_error, created_at, updated_at, started_at, completed_at, failed_at, cancelled_at,
    dispatch_generation, dispatched_at, delivery_attempts, next_delivery_at"""

FINISHED = ("completed", "dead", "cancelled")
WAITING = ("pending", "retryable")


@dataclass(frozen=True)
class Job:
    job_id: int
    kind: str
    queue: str
    payload: dict[str, Any]
    key: str | None
    status: str
    attempts: int
    max_attempts: int
    run_at: datetime
    locked_until: datetime | None
    locked_by: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    dispatch_generation: int
    dispatched_at: datetime | None
    delivery_attempts: int
    next_delivery_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        payload = row["payload"]
        if isinstance(payload, str):
            payload = json.loads(payload)
        return cls(**{**row, "payload": payload})

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


INSERT_JOB = f"""
INSERT INTO jobs (kind, queue, payload, key, run_at, max_attempts)
VALUES (:kind, :queue, CAST(:payload AS jsonb), :key, COALESCE(CAST(:run_at AS timestamptz), now()), :max_attempts)
ON CONFLICT (key) WHERE key IS NOT NULL AND status IN ('pending', 'retryable') DO NOTHING
RETURNING {JOB_COLUMNS}, true AS created
"""


def insert_for_rows_sql(source: str, payload: str) -> str:
    """One statement: the data-modifying CTE `source` (… RETURNING cols) and one keyless job per row it
    returns, whose payload is the SQL expression `payload` over those columns."""
    return f"""
WITH source AS ({source})
INSERT INTO jobs (kind, queue, payload, max_attempts)
SELECT CAST(:job_kind AS text), CAST(:job_queue AS text), {payload}, CAST(:job_max_attempts AS integer) FROM source
RETURNING {JOB_COLUMNS}
"""


# FOR SHARE: the waiting job cannot be claimed until the caller's transaction ends, so when it runs
# it sees the state change this caller was coalescing into it (a claim in between would miss it).
SELECT_WAITING_BY_KEY = f"""
SELECT {JOB_COLUMNS}, false AS created FROM jobs
WHERE key = :key AND status IN ('pending', 'retryable')
FOR SHARE
"""


def insert(conn: Connection, *, kind: str, queue: str, payload: dict[str, Any], key: str | None,
           run_at: datetime | None, max_attempts: int) -> tuple[Job, bool]:
    """Insert a job, or return the waiting job with the same key. The bool says whether it is new."""
    for _ in range(5):
        row = conn.fetch_one(INSERT_JOB, kind=kind, queue=queue, payload=json.dumps(payload), key=key,
                             run_at=run_at, max_attempts=max_attempts)
        if row is None:
            row = conn.fetch_one(SELECT_WAITING_BY_KEY, key=key)
        if row is not None:
            created = row.pop("created")
            return Job.from_row(row), created
        # The waiting job we collided with started running in between: try again.
    raise errors.RetryableDatabaseError("Could not enqueue a coalesced job; retry.")


SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = :job_id"


def get(conn: Connection, job_id: int) -> Job | None:
    row = conn.fetch_one(SELECT_JOB, job_id=job_id)
    return Job.from_row(row) if row else None


# A job may be claimed when it is due and waiting, or running under a lease that has expired.
CLAIM_JOB = f"""
UPDATE jobs
SET status = 'running', attempts = attempts + 1, started_at = now(), updated_at = now(),
    locked_until = now() + make_interval(secs => :lease_s), locked_by = :worker
WHERE job_id = :job_id
  AND run_at <= now()
  AND (status IN ('pending', 'retryable') OR (status = 'running' AND locked_until < now()))
RETURNING {JOB_COLUMNS}
"""


def claim(conn: Connection, job_id: int, *, worker: str, lease_s: int) -> Job | None:
    row = conn.fetch_one(CLAIM_JOB, job_id=job_id, worker=worker, lease_s=lease_s)
    return Job.from_row(row) if row else None


COMPLETE_JOB = """
UPDATE jobs
SET status = 'completed', completed_at = now(), updated_at = now(), locked_until = NULL, locked_by = NULL,
    next_delivery_at = NULL
WHERE job_id = :job_id AND status = 'running' AND locked_by = :worker
"""


def complete(conn: Connection, job_id: int, *, worker: str) -> bool:
    """Mark a job completed, only if this worker still holds its lease (fencing)."""
    return conn.execute(COMPLETE_JOB, job_id=job_id, worker=worker) == 1


FAIL_JOB = """
UPDATE jobs
SET status = :status, last_error = :error, failed_at = now(), updated_at = now(),
    locked_until = NULL, locked_by = NULL
WHERE job_id = :job_id AND status = 'running' AND locked_by = :worker
"""

SUPERSEDE_JOB = """
UPDATE jobs
SET status = 'cancelled', cancelled_at = now(), updated_at = now(), locked_until = NULL, locked_by = NULL,
    last_error = :error
WHERE job_id = :job_id AND status = 'running' AND locked_by = :worker
"""


def fail(conn: Connection, job_id: int, *, worker: str, error: str, dead: bool) -> str | None:
    """Record a failed run: `dead` (dead-letter) or `retryable`. Returns the new status, None if the lease was lost.

    A retryable job whose key already has a newer waiting job is cancelled as superseded: the
    newer job does the same work later.
    """
    status = "dead" if dead else "retryable"
    try:
        with conn.transaction():
            touched = conn.execute(FAIL_JOB, job_id=job_id, worker=worker, error=error[:2000], status=status)
    except errors.AlreadyExists:
        touched = conn.execute(SUPERSEDE_JOB, job_id=job_id, worker=worker,
                               error=f"superseded by a newer job with the same key after: {error}"[:2000])
        status = "cancelled"
    return status if touched else None


CANCEL_JOB = f"""
UPDATE jobs SET status = 'cancelled', cancelled_at = now(), updated_at = now()
WHERE job_id = :job_id AND status IN ('pending', 'retryable')
RETURNING {JOB_COLUMNS}
"""


def cancel(conn: Connection, job_id: int) -> Job | None:
    """Cancel a job that has not started; None if it is running or finished."""
    row = conn.fetch_one(CANCEL_JOB, job_id=job_id)
    return Job.from_row(row) if row else None


# Retrying starts a new dispatch generation: a new task with a fresh retry count.
RETRY_JOB = f"""
UPDATE jobs
SET status = 'pending', attempts = 0, run_at = now(), updated_at = now(), failed_at = NULL,
    dispatch_generation = dispatch_generation + 1, dispatched_at = NULL,
    delivery_attempts = 0, next_delivery_at = NULL
WHERE job_id = :job_id AND status IN ('dead', 'retryable')
RETURNING {JOB_COLUMNS}
"""


def retry(conn: Connection, job_id: int) -> Job | None:
    """Bring a dead or failed job back to pending; None if it is in another state."""
    row = conn.fetch_one(RETRY_JOB, job_id=job_id)
    return Job.from_row(row) if row else None


# Running past the lease: the worker died or hung. Its attempt stays counted; the job waits for
# a new task (new generation), or is dead-lettered if that was its last attempt.
RESCUE_STALE = f"""
WITH stale AS (
    SELECT job_id FROM jobs
    WHERE status = 'running' AND locked_until < now()
    ORDER BY locked_until
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
SET status = CASE
        WHEN j.attempts >= j.max_attempts THEN 'dead'
        WHEN j.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM jobs w WHERE w.key = j.key AND w.status IN ('pending', 'retryable')) THEN 'cancelled'
        ELSE 'retryable' END,
    cancelled_at = CASE WHEN j.attempts < j.max_attempts AND j.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM jobs w WHERE w.key = j.key AND w.status IN ('pending', 'retryable')) THEN now() END,
    last_error = 'lease expired while running (worker lost); rescued',
    failed_at = now(), updated_at = now(), locked_until = NULL, locked_by = NULL,
    dispatch_generation = j.dispatch_generation + 1, dispatched_at = NULL,
    delivery_attempts = 0, next_delivery_at = NULL
FROM stale
WHERE j.job_id = stale.job_id
RETURNING {", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))}
"""


def rescue_stale(conn: Connection, *, limit: int = 500) -> list[Job]:
    """Release jobs whose lease expired; returns them with their new status."""
    return [Job.from_row(row) for row in conn.fetch_all(RESCUE_STALE, limit=limit)]


# Jobs the task queue should hold but may not: never handed over (dispatched_at NULL) and due
# within the horizon, or due and idle for longer than any live task would stay silent.
SELECT_UNDISPATCHED = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE status IN ('pending', 'retryable')
  AND (
        (dispatched_at IS NULL AND run_at <= now() + make_interval(secs => :horizon_s))
     OR (run_at <= now() AND updated_at < now() - make_interval(secs => :lost_after_s)
         AND dispatched_at < now() - make_interval(secs => :lost_after_s))
  )
ORDER BY run_at
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""

NEW_GENERATION = """
UPDATE jobs
SET dispatch_generation = dispatch_generation + 1, dispatched_at = NULL, delivery_attempts = 0,
    next_delivery_at = NULL, updated_at = now()
WHERE job_id = :job_id AND dispatched_at IS NOT NULL
"""


def take_undispatched(conn: Connection, *, horizon_s: int, lost_after_s: int, limit: int) -> list[Job]:
    """Jobs to hand to the task queue now; a lost task's job gets a new generation first."""
    jobs = []
    for row in conn.fetch_all(SELECT_UNDISPATCHED, horizon_s=horizon_s, lost_after_s=lost_after_s, limit=limit):
        if row["dispatched_at"] is not None:
            conn.execute(NEW_GENERATION, job_id=row["job_id"])
            row = conn.fetch_one(SELECT_JOB, job_id=row["job_id"])
        jobs.append(Job.from_row(row))
    return jobs


MARK_DISPATCHED = """
UPDATE jobs SET dispatched_at = now()
WHERE job_id = :job_id AND dispatch_generation = :generation AND dispatched_at IS NULL
"""


def mark_dispatched(conn: Connection, job_id: int, generation: int) -> None:
    conn.execute(MARK_DISPATCHED, job_id=job_id, generation=generation)


PURGE_FINISHED = """
WITH old AS (
    SELECT job_id FROM jobs
    WHERE status IN ('completed', 'cancelled') AND updated_at < now() - make_interval(days => :days)
    ORDER BY job_id
    LIMIT :limit
)
DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM old)
"""


def purge_finished(conn: Connection, *, older_than_days: int, limit: int = 5000) -> int:
    """Delete completed and cancelled jobs past retention (dead jobs stay until a person acts)."""
    return conn.execute(PURGE_FINISHED, days=older_than_days, limit=limit)


def list_jobs(conn: Connection, *, status: str | None, kind: str | None, limit: int, offset: int
              ) -> tuple[list[Job], int]:
    """A page of jobs, newest first, and the total matching the filters."""
    rows = conn.fetch_all(
        f"""
        SELECT {JOB_COLUMNS}, count(*) OVER () AS total FROM jobs
        WHERE (CAST(:status AS text) IS NULL OR status = :status)
          AND (CAST(:kind AS text) IS NULL OR kind = :kind)
        ORDER BY job_id DESC
        LIMIT :limit OFFSET :offset
        """,
        status=status, kind=kind, limit=limit, offset=offset,
    )
    if not rows and offset:
        total = conn.fetch_value(
            "SELECT count(*) FROM jobs WHERE (CAST(:status AS text) IS NULL OR status = :status)"
            " AND (CAST(:kind AS text) IS NULL OR kind = :kind)", status=status, kind=kind)
    else:
        total = rows[0]["total"] if rows else 0
    for row in rows:
        row.pop("total")
    return [Job.from_row(row) for row in rows], int(total)


QUEUE_STATS = """
SELECT
    (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
       FROM (SELECT status, count(*) AS n FROM jobs GROUP BY status) s) AS by_status,
    (SELECT count(*) FROM jobs WHERE status = 'running' AND locked_until < now()) AS stuck,
    (SELECT count(*) FROM jobs WHERE failed_at > now() - interval '1 hour') AS failed_last_hour,
    (SELECT count(*) FROM jobs WHERE status = 'dead') AS dead,
    (SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::bigint
       FROM jobs WHERE status IN ('pending', 'retryable') AND run_at <= now()) AS oldest_due_age_s
"""


def queue_stats(conn: Connection) -> dict[str, Any]:
    row = conn.fetch_one(QUEUE_STATS)
    by_status = row["by_status"]
    if isinstance(by_status, str):
        by_status = json.loads(by_status)
    return {**row, "by_status": by_status}
