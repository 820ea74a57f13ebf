"""Running one delivered job: claim it, run its handler, record the outcome.

The answer tells the task queue what to do next: `done` (2xx, stop delivering — completed,
already finished, cancelled or dead-lettered) or `retry` (503 with Retry-After — failed
transiently, leased by another worker, or not due yet).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import errors
from shared.config import Settings
from shared.db.pool import Database
from shared.jobs import registry, store
from shared.jobs.queues import retry_policy

log = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunOutcome:
    job_id: int
    status: str  # the job's status after this delivery (or "unknown")
    retry: bool  # True: the queue should deliver again later
    retry_after_s: int = 0
    detail: str | None = None

    def as_dict(self) -> dict:
        body = {"job_id": self.job_id, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        return body


def run_job(db: Database, settings: Settings, job_id: int, *, retry_count: int | None = None) -> RunOutcome:
    """Run job `job_id` once as delivery number `retry_count + 1` of its task."""
    # A fresh fencing token per run: two deliveries in one process must not share a lease.
    worker = f"{WORKER_ID}:{uuid.uuid4().hex[:8]}"
    policy = retry_policy(settings)
    with db.connection() as conn:
        job = store.claim(conn, job_id, worker=worker, lease_s=settings.job_lease_seconds)
        if job is None:
            return _not_claimed(conn, job_id)

        job_kind = registry.kind(job.kind)
        if job_kind is None:
            status = store.fail(conn, job.job_id, worker=worker, error=f"no handler for kind {job.kind!r}", dead=True)
            log.error("job has unknown kind", extra={"job_id": job.job_id, "kind": job.kind})
            return RunOutcome(job.job_id, status or "unknown", retry=False, detail="unknown kind")

        try:
            with conn.transaction():
                job_kind.handler(conn, job)
                if not store.complete(conn, job.job_id, worker=worker):
                    # Our lease expired and someone else claimed the job: undo our effects.
                    raise _LeaseLost()
        except _LeaseLost:
            log.warning("job lease lost; effects rolled back", extra={"job_id": job.job_id, "kind": job.kind})
            return RunOutcome(job.job_id, "running", retry=True, retry_after_s=settings.job_lease_seconds,
                              detail="lease lost")
        except errors.PermanentJobError as exc:
            return _record_failure(conn, job, worker, f"permanent: {exc.message}", dead=True, policy=policy,
                                   retry_count=retry_count)
        except errors.OrderpipeError as exc:
            if conn.broken:
                # The database went away mid-job: the lease will expire and the job be rescued.
                return RunOutcome(job.job_id, "running", retry=True, retry_after_s=5, detail=exc.code)
            return _record_failure(conn, job, worker, f"{exc.code}: {exc.message}", dead=False, policy=policy,
                                   retry_count=retry_count)
        except Exception as exc:
            log.exception("job handler crashed", extra={"job_id": job.job_id, "kind": job.kind})
            if conn.broken:
                return RunOutcome(job.job_id, "running", retry=True, retry_after_s=5, detail="crashed")
            return _record_failure(conn, job, worker, f"{type(exc).__name__}: {exc}", dead=False, policy=policy,
                                   retry_count=retry_count)
        log.info("job completed", extra={"job_id": job.job_id, "kind": job.kind, "attempt": job.attempts})
        return RunOutcome(job.job_id, "completed", retry=False)


class _LeaseLost(Exception):
    pass


def _record_failure(conn, job: store.Job, worker: str, error: str, *, dead: bool, policy, retry_count) -> RunOutcome:
    last_delivery = retry_count is not None and policy.is_last_attempt(retry_count)
    dead = dead or last_delivery or job.attempts >= job.max_attempts
    status = store.fail(conn, job.job_id, worker=worker, error=error, dead=dead)
    if status is None:
        return RunOutcome(job.job_id, "running", retry=True, retry_after_s=5, detail="lease lost")
    if status == "dead":
        log.error("job dead-lettered", extra={"job_id": job.job_id, "kind": job.kind, "attempts": job.attempts})
        return RunOutcome(job.job_id, "dead", retry=False, detail=error[:300])
    if status == "cancelled":
        return RunOutcome(job.job_id, "cancelled", retry=False, detail="superseded")
    delay = policy.backoff_s(retry_count if retry_count is not None else job.attempts - 1)
    log.warning("job failed; will retry", extra={"job_id": job.job_id, "kind": job.kind, "attempt": job.attempts})
    return RunOutcome(job.job_id, "retryable", retry=True, retry_after_s=max(1, int(delay)), detail=error[:300])


def _not_claimed(conn, job_id: int) -> RunOutcome:
    job = store.get(conn, job_id)
    if job is None:
        # Purged or never existed: nothing will ever run it, so stop the deliveries.
        return RunOutcome(job_id, "unknown", retry=False, detail="no such job")
    if job.status in store.FINISHED:
        return RunOutcome(job_id, job.status, retry=False)
    now = datetime.now(UTC)
    if job.status == "running":
        wait = (job.locked_until - now).total_seconds() if job.locked_until else 5
        return RunOutcome(job_id, "running", retry=True, retry_after_s=max(1, int(wait) + 1), detail="leased elsewhere")
    wait = (job.run_at - now).total_seconds()
    return RunOutcome(job_id, job.status, retry=True, retry_after_s=max(1, int(wait) + 1), detail="not due yet")
