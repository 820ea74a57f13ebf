"""Job kinds and their handlers.

A handler is `handler(conn, job)`. It runs inside the same transaction that marks the job
completed, so a job's database effects and its completion commit together or not at all.
It raises `TransientError` (or anything unexpected) to be retried with backoff, and
`PermanentJobError` to be dead-lettered at once. Handlers must be idempotent: delivery is at
least once, and a retry after a crash may find part of the world already changed.

The modules defining handlers are imported by `load_handlers()`, so that every process — the
worker, the CLI, the tests — sees the same table without import-time side effects elsewhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from shared.db.connection import Connection
from shared.jobs.queues import ORDERS
from shared.jobs.store import Job

Handler = Callable[[Connection, Job], None]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    queue: str


_KINDS: dict[str, JobKind] = {}

# Modules that register handlers with @job_handler. Later issues add theirs here.
HANDLER_MODULES = (
    "shared.jobs.builtin",
    "shared.flows.finalization",  # finalize_order
    "shared.flows.webhooks",  # process_webhook_event
    "shared.flows.expiry",  # expire_reservation
    "shared.flows.post_purchase",  # verification_deadline
    "shared.flows.metrics",  # refresh_metrics
)


def job_handler(name: str, *, queue: str = ORDERS) -> Callable[[Handler], Handler]:
    """Register `handler` for job kind `name`."""

    def register(handler: Handler) -> Handler:
        _KINDS[name] = JobKind(name, handler, queue)
        return handler

    return register


def load_handlers() -> dict[str, JobKind]:
    """Import every handler module once; return the registry."""
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    return _KINDS


def kind(name: str) -> JobKind | None:
    load_handlers()
    return _KINDS.get(name)
