"""Handing committed jobs to a task queue: Cloud Tasks on Google Cloud, a local loop on a laptop.

The hand-off is a doorbell, never the record: it happens after commit, and if it fails the job is
still in `jobs` with `dispatched_at` NULL, where reconcile's `dispatch_due_jobs` finds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.config import Settings
from shared.jobs.queues import queue_id
from shared.jobs.store import Job

log = logging.getLogger(__name__)

CLOUD_TASKS_HORIZON = timedelta(days=30)
# A job whose run_at is further out than this waits for reconcile (Cloud Tasks refuses > 30 days).
DISPATCH_HORIZON_S = 29 * 24 * 3600


class Dispatcher(Protocol):
    def dispatch(self, jobs: Sequence[Job]) -> list[int]:
        """Hand these committed jobs to the queue; return the ids handed over."""
        ...

    def cancel(self, job: Job) -> None:
        """Withdraw the task of a cancelled job, when the queue allows it (best effort)."""
        ...

    def check(self) -> str:
        """'ok' when the queue is reachable, else 'degraded' or 'failed'."""
        ...


def task_id(job_id: int, generation: int) -> str:
    """The task name id for (job, generation): hashed, so names do not share sequential prefixes."""
    return "j" + hashlib.sha256(f"orderpipe-job:{job_id}:{generation}".encode()).hexdigest()[:40]


class CloudTasksDispatcher:
    """Creates one HTTP task per (job, generation) aimed at order_worker, with an OIDC token.

    Every call is one attempt bounded by `rpc_timeout_s`: the client's default retries (20 s for
    GetQueue and DeleteTask) would stall a readiness check or a request thread, and a hand-off that
    fails is retried by reconcile anyway.
    """

    rpc_timeout_s: float = 10.0
    check_timeout_s: float = 5.0

    def __init__(self, settings: Settings, *, client: Any = None, on_dispatched=None):
        self.settings = settings
        self._client = client
        self._lock = threading.Lock()
        self._on_dispatched = on_dispatched  # callable(job_id, generation) recording dispatched_at

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import tasks_v2  # imported on first use only

                if self.settings.tasks_api_endpoint:
                    import grpc
                    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

                    channel = grpc.insecure_channel(self.settings.tasks_api_endpoint)
                    self._client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
                else:
                    self._client = tasks_v2.CloudTasksClient()
            return self._client

    def queue_path(self, queue: str) -> str:
        s = self.settings
        return f"projects/{s.gcp_project}/locations/{s.gcp_region}/queues/{queue_id(s, queue)}"

    def build_task(self, job: Job, *, now: datetime | None = None) -> dict[str, Any]:
        """The CreateTask request for a job (pure: tested directly)."""
        from google.protobuf import duration_pb2, timestamp_pb2

        s = self.settings
        url = (s.order_worker_url or "").rstrip("/") + "/tasks"
        http_request: dict[str, Any] = {
            "http_method": "POST",
            "url": url,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"job_id": job.job_id}).encode(),
        }
        if s.tasks_service_account:
            http_request["oidc_token"] = {
                "service_account_email": s.tasks_service_account,
                "audience": (s.order_worker_url or "").rstrip("/"),
            }
        task: dict[str, Any] = {
            "name": f"{self.queue_path(job.queue)}/tasks/{task_id(job.job_id, job.dispatch_generation)}",
            "http_request": http_request,
            "dispatch_deadline": duration_pb2.Duration(seconds=s.jobs_dispatch_deadline_s),
        }
        now = now or datetime.now(UTC)
        if job.run_at > now:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(job.run_at.astimezone(UTC))
            task["schedule_time"] = stamp
        return task

    def dispatch(self, jobs: Sequence[Job]) -> list[int]:
        from google.api_core import exceptions as gexc

        handed = []
        now = datetime.now(UTC)
        for index, job in enumerate(jobs):
            if job.run_at - now >= CLOUD_TASKS_HORIZON:
                continue  # too far ahead for Cloud Tasks; reconcile hands it over when it is closer
            try:
                self.client.create_task(
                    request={"parent": self.queue_path(job.queue), "task": self.build_task(job, now=now)},
                    retry=None, timeout=self.rpc_timeout_s,
                )
            except gexc.AlreadyExists:
                pass  # this generation's task exists already: the hand-off happened before
            except gexc.DeadlineExceeded:
                # No answer at all: every further job would wait as long. Reconcile hands the rest over.
                log.warning("cloud tasks did not answer; hand-off of this batch stopped",
                            extra={"job_id": job.job_id, "left": len(jobs) - index})
                break
            except Exception:
                log.warning("cloud tasks hand-off failed; reconcile will retry", extra={"job_id": job.job_id},
                            exc_info=True)
                continue
            handed.append(job.job_id)
            if self._on_dispatched:
                self._on_dispatched(job.job_id, job.dispatch_generation)
        return handed

    def cancel(self, job: Job) -> None:
        from google.api_core import exceptions as gexc

        name = f"{self.queue_path(job.queue)}/tasks/{task_id(job.job_id, job.dispatch_generation)}"
        try:
            self.client.delete_task(request={"name": name}, retry=None, timeout=self.rpc_timeout_s)
        except (gexc.NotFound, gexc.FailedPrecondition, gexc.MethodNotImplemented):
            pass  # already ran, already gone, or an emulator without DeleteTask: the worker ignores it anyway
        except Exception:
            log.warning("could not delete the task of a cancelled job", extra={"job_id": job.job_id}, exc_info=True)

    def check(self) -> str:
        try:
            self.client.get_queue(request={"name": self.queue_path("orders")}, retry=None,
                                  timeout=self.check_timeout_s)
            return "ok"
        except Exception:
            return "failed"


class LocalDispatcher:
    """The embedded default: the delivery loop (shared.jobs.local) is the queue; this rings its bell."""

    def __init__(self) -> None:
        self.wakeup = threading.Event()
        self.loop_alive = lambda: False  # replaced by the running loop

    def dispatch(self, jobs: Sequence[Job]) -> list[int]:
        self.wakeup.set()
        return [job.job_id for job in jobs]

    def cancel(self, job: Job) -> None:
        """Nothing to withdraw: the loop never delivers a cancelled job."""

    def check(self) -> str:
        return "ok" if self.loop_alive() else "degraded"


def build_dispatcher(settings: Settings, on_dispatched=None) -> Dispatcher:
    if settings.task_backend == "cloud_tasks":
        return CloudTasksDispatcher(settings, on_dispatched=on_dispatched)
    return LocalDispatcher()
