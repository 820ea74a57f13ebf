"""What an operator does from admin: watch and retry jobs, read the health report, look up orders and the catalog.

Every use case takes the database and plain values; the admin function only parses, authorises and calls.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared import errors, jobs
from shared.db import admin as queries
from shared.db.connection import Connection
from shared.db.pool import Database
from shared.flows.invariants import Invariant, run_checks
from shared.jobs import store

JobStatus = Literal["pending", "running", "completed", "retryable", "dead", "cancelled"]
JobKind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# OFFSET is a bigint in SQL; far past any real table, and never an overflow.
MAX_OFFSET = 2**31 - 1
MAX_JOB_ID = 2**63 - 1
# How many intents of each action list the health report shows (the count is always exact).
ACTION_LIST_LIMIT = 100
_JOB_ID = re.compile(r"^[0-9]{1,19}$")


class _Query(BaseModel):
    """Query-string parameters: strings coerced to their types; an empty value means "not given"."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value not in ("", None)}
        return data


class JobsQuery(_Query):
    status: JobStatus | None = None
    kind: JobKind | None = None
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class VendorsQuery(_Query):
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ProductsQuery(_Query):
    vendor_id: uuid.UUID | None = None
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class DaysQuery(_Query):
    days: int = Field(default=30, ge=1, le=366)


# --- identifiers in paths ------------------------------------------------------------------------


def _invalid(field: str, message: str, kind: str) -> errors.ValidationFailed:
    return errors.ValidationFailed(details={"fields": [{"field": field, "message": message, "type": kind}]})


def job_id_param(value: str) -> int:
    """A job id from a path: a positive bigint, or 422."""
    if not _JOB_ID.match(value) or not 0 < int(value) <= MAX_JOB_ID:
        raise _invalid("job_id", "must be a positive integer", "int_parsing")
    return int(value)


def uuid_param(field: str, value: str) -> uuid.UUID:
    """A UUID from a path, or 422 naming `field`."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _invalid(field, "must be a UUID", "uuid_parsing") from None


# --- jobs ----------------------------------------------------------------------------------------


def list_jobs(db: Database, query: JobsQuery) -> dict[str, Any]:
    """A page of jobs, newest first."""
    with db.connection() as conn:
        page, total = store.list_jobs(conn, status=query.status, kind=query.kind, limit=query.limit,
                                      offset=query.offset)
    return {"jobs": [job.as_dict() for job in page], "total": total, "limit": query.limit, "offset": query.offset,
            "has_more": query.offset + len(page) < total}


def get_job(db: Database, job_id: int) -> dict[str, Any]:
    with db.connection() as conn:
        job = store.get(conn, job_id)
    if job is None:
        raise _job_not_found(job_id)
    return job.as_dict()


def retry_job(db: Database, job_id: int) -> dict[str, Any]:
    """A dead or retryable job back to pending and handed to the queue again; 409 from any other status."""
    job = jobs.retry(db, job_id)
    if job is not None:
        return job.as_dict()
    with db.connection() as conn:
        current = store.get(conn, job_id)
    if current is None:
        raise _job_not_found(job_id)
    raise errors.Conflict(
        f"Only dead or retryable jobs can be retried; this one is {current.status}.",
        details={"job_id": job_id, "status": current.status},
    ).with_code("job_not_retryable")


def rescue_stale(db: Database) -> dict[str, int]:
    """Jobs running past their lease go back to waiting (or dead after their last attempt)."""
    return jobs.rescue_stale_jobs(db)


def queue_stats(db: Database) -> dict[str, Any]:
    with db.connection() as conn:
        return store.queue_stats(conn)


def _job_not_found(job_id: int) -> errors.NotFound:
    return errors.NotFound("No job with that id.", details={"job_id": job_id}).with_code("job_not_found")


# --- health --------------------------------------------------------------------------------------


# Checks the operator sees beside the invariants: states that are allowed for a while, not for long.
OPERATOR_CHECKS = [
    Invariant(
        "paid_intents_get_orders",
        f"no paid intent waits more than {queries.PAID_WITHOUT_ORDER_GRACE_MINUTES} minutes for its order "
        "(finalize_order late, retrying or dead)",
        queries.PAID_WITHOUT_ORDER,
    ),
]


def _run_operator_checks(conn: Connection, *, sample: int = 10) -> list[dict[str, Any]]:
    """The OPERATOR_CHECKS in the shape of `run_checks`."""
    results = []
    for check in OPERATOR_CHECKS:
        found = conn.fetch_all(f"SELECT * FROM ({check.sql}) breach LIMIT {int(sample) + 1}")
        results.append({"name": check.name, "description": check.description, "ok": not found,
                        "breaches": len(found) if len(found) <= sample else f"more than {sample}",
                        "sample": found[:sample]})
    return results


def health_report(db: Database) -> dict[str, Any]:
    """Every invariant (ok or breached, with samples) and the lists a person must act on."""
    with db.connection() as conn:
        checks = run_checks(conn) + _run_operator_checks(conn)
        needs_refund, refund_count = queries.intents_in_status(conn, "needs_refund", limit=ACTION_LIST_LIMIT)
        needs_review, review_count = queries.intents_in_status(conn, "needs_review", limit=ACTION_LIST_LIMIT)
        dead = queries.dead_jobs(conn)
    return {
        "ok": all(check["ok"] for check in checks),
        "action_required": bool(refund_count or review_count or dead),
        "generated_at": datetime.now(UTC),
        "checks": checks,
        "needs_refund": needs_refund,
        "needs_review": needs_review,
        "counts": {"needs_refund": refund_count, "needs_review": review_count, "dead_jobs": dead,
                   "breached_checks": sum(not check["ok"] for check in checks)},
    }


# --- catalog and orders --------------------------------------------------------------------------


def list_vendors(db: Database, query: VendorsQuery) -> dict[str, Any]:
    with db.connection() as conn:
        rows, total = queries.vendors(conn, limit=query.limit, offset=query.offset)
    return {"vendors": rows, "total": total, "limit": query.limit, "offset": query.offset,
            "has_more": query.offset + len(rows) < total}


def list_products(db: Database, query: ProductsQuery) -> dict[str, Any]:
    with db.connection() as conn:
        if query.vendor_id is not None and not queries.vendor_exists(conn, query.vendor_id):
            raise _vendor_not_found(query.vendor_id)
        rows, total = queries.products(conn, vendor_id=query.vendor_id, limit=query.limit, offset=query.offset)
    return {"products": rows, "total": total, "limit": query.limit, "offset": query.offset,
            "has_more": query.offset + len(rows) < total}


def vendor_daily(db: Database, vendor_id: uuid.UUID, *, days: int, timezone: str) -> list[dict[str, Any]]:
    """A vendor's metrics for each of the last `days` days (today included, in the metrics time zone)."""
    today = datetime.now(ZoneInfo(timezone)).date()
    with db.connection() as conn:
        if not queries.vendor_exists(conn, vendor_id):
            raise _vendor_not_found(vendor_id)
        return queries.vendor_days(conn, vendor_id, first_day=today - timedelta(days=days - 1), last_day=today)


def get_order(db: Database, order_id: uuid.UUID) -> dict[str, Any]:
    """One order with its items, payment intent, verification, identity-check session and refunds."""
    with db.connection() as conn:
        order = queries.order(conn, order_id)
        if order is None:
            raise errors.NotFound("No order with that id.", details={"order_id": str(order_id)}
                                  ).with_code("order_not_found")
        intent_id = order["payment_intent_id"]
        return {
            **order,
            "items": queries.order_items(conn, order_id),
            "payment_intent": queries.intent(conn, intent_id),
            "verification": queries.verification(conn, intent_id),
            "verification_session": queries.verification_session(conn, order_id),
            "refunds": queries.refunds(conn, intent_id),
        }


def _vendor_not_found(vendor_id: uuid.UUID) -> errors.NotFound:
    return errors.NotFound("No vendor with that id.", details={"vendor_id": str(vendor_id)}
                           ).with_code("vendor_not_found")
