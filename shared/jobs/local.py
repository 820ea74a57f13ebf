"""The local task queue: delivers due jobs to order_worker over HTTP, the way Cloud Tasks would.

It runs inside `orderpipe dev`. Like a Cloud Tasks queue it keeps, per job and generation, a
delivery count (sent as `X-CloudTasks-TaskRetryCount`) and the time of the next delivery, applies
the queue's backoff after a failed delivery, redelivers when a delivery gets no answer, and stops
after the queue's max attempts (the worker dead-letters on that last attempt). The bookkeeping is
in the jobs table, so a restart resumes where the last process stopped.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared import errors
from shared.config import Settings
from shared.db.pool import Database
from shared.jobs.dispatch import LocalDispatcher, task_id
from shared.jobs.queues import queue_id, retry_policy

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2  # the longest a job written by another process waits to be noticed
# A delivery cut off by a crash would wait for its dispatch deadline; rescuing expired leases this
# often (reconcile does it every minute too) lets an interrupted job resume seconds after its lease.
RESCUE_INTERVAL_S = 5.0

TAKE_DELIVERIES = """
WITH due AS (
    SELECT job_id FROM jobs
    WHERE ((status IN ('pending', 'retryable') AND run_at <= now())
           OR (status = 'running' AND locked_until < now()))
      AND (next_delivery_at IS NULL OR next_delivery_at <= now())
    ORDER BY run_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
SET next_delivery_at = now() + make_interval(secs => :deadline_s),
    delivery_attempts = j.delivery_attempts + 1,
    dispatched_at = coalesce(j.dispatched_at, now())
FROM due
WHERE j.job_id = due.job_id
RETURNING j.job_id, j.queue, j.dispatch_generation, j.delivery_attempts, j.run_at
"""

# At start, deliveries the previous dispatcher had in flight (or was backing off) died with it.
FORGET_PREVIOUS_DELIVERIES = """
UPDATE jobs SET next_delivery_at = NULL
WHERE status IN ('pending', 'retryable', 'running') AND next_delivery_at > now() AND next_delivery_at < 'infinity'
"""

DELIVERY_DONE = """
UPDATE jobs SET next_delivery_at = NULL
WHERE job_id = :job_id AND dispatch_generation = :generation
"""

DELIVERY_FAILED = """
UPDATE jobs SET next_delivery_at = now() + make_interval(secs => :delay_s)
WHERE job_id = :job_id AND dispatch_generation = :generation
"""

# After the queue's last attempt the task is gone, as in Cloud Tasks; reconcile starts a new generation.
DELIVERIES_EXHAUSTED = """
UPDATE jobs SET next_delivery_at = 'infinity'
WHERE job_id = :job_id AND dispatch_generation = :generation
"""


@dataclass(frozen=True)
class Delivery:
    job_id: int
    queue: str
    generation: int
    retry_count: int
    previous_response: int | None = None


class LocalDeliveryLoop:
    def __init__(self, db: Database, settings: Settings, dispatcher: LocalDispatcher, *, worker_url: str,
                 token: str):
        self.db = db
        self.settings = settings
        self.dispatcher = dispatcher
        self.worker_url = worker_url.rstrip("/") + "/tasks"
        self.token = token
        self.policy = retry_policy(settings)
        self.concurrency = settings.local_dispatch_concurrency
        self._stop = threading.Event()
        self._inflight = threading.Semaphore(self.concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="deliver")
        self._http = WorkerHttp(self.worker_url, timeout_s=settings.jobs_dispatch_deadline_s)
        self._thread = threading.Thread(target=self._run, name="local-dispatcher", daemon=True)
        self._more_due = False  # the last take filled every free slot: more work may be waiting
        self.delivered = 0

    def start(self) -> None:
        self.dispatcher.loop_alive = self._thread.is_alive
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.dispatcher.wakeup.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def _run(self) -> None:
        from shared.jobs import expire_leases_of_dead_local_workers, rescue_stale_jobs

        try:
            # A previous dev server killed mid-job left leases and deliveries nobody will finish:
            # resume that work now rather than after the lease or the dispatch deadline.
            expire_leases_of_dead_local_workers(self.db)
            with self.db.connection() as conn:
                conn.execute(FORGET_PREVIOUS_DELIVERIES)
        except errors.OrderpipeError:
            log.warning("could not take over the previous dispatcher's work")
        next_rescue = 0.0
        while not self._stop.is_set():
            self.dispatcher.wakeup.clear()
            try:
                if time.monotonic() >= next_rescue:
                    rescue_stale_jobs(self.db)
                    next_rescue = time.monotonic() + RESCUE_INTERVAL_S
                look_again = self._take_and_deliver()
            except errors.OrderpipeError as exc:
                log.warning("local dispatcher cannot reach the database", extra={"code": exc.code})
                self._stop.wait(1.0)
                continue
            except Exception:
                log.exception("local dispatcher loop error")
                self._stop.wait(1.0)
                continue
            if not look_again:
                # Nothing more is due now. A job committed in this process rings the bell (wakeup is
                # cleared before the take, so none is missed); others are found by the next poll.
                self.dispatcher.wakeup.wait(POLL_INTERVAL_S)

    def _take_and_deliver(self) -> bool:
        """Hand due jobs to free delivery slots; True when more may be due at once (look again now)."""
        free = 0
        while free < self.concurrency and self._inflight.acquire(blocking=False):
            free += 1
        if free == 0:
            # Every delivery slot is busy: wait for one rather than spin.
            self._more_due = True
            self._inflight.acquire(timeout=POLL_INTERVAL_S) and self._inflight.release()
            return True
        try:
            with self.db.connection() as conn:
                rows = conn.fetch_all(TAKE_DELIVERIES, limit=free, deadline_s=self.settings.jobs_dispatch_deadline_s)
        except BaseException:
            for _ in range(free):
                self._inflight.release()
            raise
        for _ in range(free - len(rows)):
            self._inflight.release()
        self._more_due = len(rows) == free
        for row in rows:
            delivery = Delivery(row["job_id"], row["queue"], row["dispatch_generation"], row["delivery_attempts"] - 1)
            self._pool.submit(self._deliver_and_release, delivery)
        return self._more_due

    def _deliver_and_release(self, delivery: Delivery) -> None:
        try:
            self._deliver(delivery)
        except errors.OrderpipeError as exc:
            # The database is away (restart, outage): the delivery's outcome is not recorded, and the job
            # is delivered again after its dispatch deadline, or sooner by rescue. Nothing is lost.
            log.warning("local delivery outcome not recorded", extra={"job_id": delivery.job_id, "code": exc.code})
        except Exception:
            log.exception("local delivery bookkeeping failed", extra={"job_id": delivery.job_id})
        finally:
            self._inflight.release()
            if self._more_due:
                self.dispatcher.wakeup.set()  # a slot is free and work was left waiting: take it now

    def _deliver(self, delivery: Delivery) -> None:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token}",
            "X-CloudTasks-QueueName": queue_id(self.settings, delivery.queue),
            "X-CloudTasks-TaskName": task_id(delivery.job_id, delivery.generation),
            "X-CloudTasks-TaskRetryCount": str(delivery.retry_count),
            "X-CloudTasks-TaskExecutionCount": str(delivery.retry_count),
            "X-CloudTasks-TaskETA": f"{time.time():.6f}",
        }
        status, retry_after, completed = None, 0, False
        try:
            status, retry_after_header, body = self._http.post(json.dumps({"job_id": delivery.job_id}).encode(),
                                                               headers)
            retry_after = _int(retry_after_header)
            completed = 200 <= status < 300 and _completed(body)
        except (OSError, http.client.HTTPException) as exc:
            log.info("local delivery got no answer", extra={"job_id": delivery.job_id, "error": type(exc).__name__})
        self.delivered += 1
        if completed:
            return  # the worker's completion cleared next_delivery_at in the job's own transaction
        with self.db.connection() as conn:
            if status is not None and 200 <= status < 300:
                conn.execute(DELIVERY_DONE, job_id=delivery.job_id, generation=delivery.generation)
            elif self.policy.is_last_attempt(delivery.retry_count):
                conn.execute(DELIVERIES_EXHAUSTED, job_id=delivery.job_id, generation=delivery.generation)
            else:
                delay = self.policy.backoff_s(delivery.retry_count)
                if status in (429, 503) and retry_after:
                    delay = min(max(delay, retry_after), self.policy.max_backoff_s)
                conn.execute(DELIVERY_FAILED, job_id=delivery.job_id, generation=delivery.generation, delay_s=delay)


class WorkerHttp:
    """POSTs to the worker over one keep-alive connection per delivery thread.

    Plain http.client: a delivery is one small POST to a known URL, and httpx's machinery costs
    several times more CPU per call — CPU the dev server's functions share under one GIL.
    """

    def __init__(self, url: str, *, timeout_s: float):
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, body); OSError or HTTPException when there is no answer."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                conn = connection_class(self._host, self._port, timeout=self._timeout_s)
                self._local.conn = conn
                with self._lock:
                    self._open.add(conn)
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._forget(conn)
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: send again on a new one
                raise
            except BaseException:
                self._forget(conn)
                raise
            if response.will_close:
                self._forget(conn)
            return response.status, response.getheader("Retry-After"), data
        raise AssertionError("unreachable")

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            self._open.discard(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()


def _completed(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(answer, dict) and answer.get("status") == "completed"


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
