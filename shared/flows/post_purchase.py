"""Post-purchase identity verification: the 72-hour countdown for products that require it.

An order holding such a product opens a session and a `verification_deadline` job. The provider's
`verification.updated` webhook approves (session approved, deadline job cancelled and its task
withdrawn) or declines; a decline, or the deadline passing while still pending, cancels the order,
returns its stock, and puts the payment in `needs_refund`. Every transition happens once.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from shared import errors, jobs
from shared.config import get_settings
from shared.db import orders, payments
from shared.db.connection import Connection
from shared.jobs import Job
from shared.jobs.queues import TIMERS
from shared.jobs.registry import job_handler

log = logging.getLogger(__name__)


def open_session(conn: Connection, order_id: str) -> dict[str, Any] | None:
    """Open the order's verification session and schedule its deadline (inside finalization)."""
    session = orders.insert_session(conn, order_id, get_settings().verification_deadline_seconds)
    if session is None:
        return None
    job = jobs.enqueue(conn, "verification_deadline", {"order_id": order_id}, run_at=session["deadline_at"],
                       key=f"deadline:{order_id}", queue=TIMERS)
    orders.set_session_job(conn, session["session_id"], job.job_id)
    return session


def decide(conn: Connection, order_id: str, decision: str, decided_by: str) -> str:
    """Apply `approved` or `declined` to the order's session; returns what happened."""
    if decision not in ("approved", "declined"):
        raise errors.PermanentJobError(f"unknown verification decision {decision!r}")
    order = orders.get_order(conn, order_id, for_update=True)
    if order is None:
        return "unknown_order"
    session = orders.decide_session(conn, order_id, decision, decided_by)
    if session is None:
        return "already_decided"
    if session["deadline_job_id"] is not None:
        jobs.cancel(conn, session["deadline_job_id"])
    if decision == "declined":
        _cancel_order(conn, order, "identity verification declined")
    log.info("verification decided", extra={"order_id": order_id, "decision": decision})
    return decision


@job_handler("verification_deadline", queue=TIMERS)
def verification_deadline_job(conn: Connection, job: Job) -> None:
    order_id = job.payload.get("order_id")
    if not isinstance(order_id, str):
        raise errors.PermanentJobError("verification_deadline needs order_id")
    order = orders.get_order(conn, order_id, for_update=True)
    session = orders.verification_session(conn, order_id)
    if order is None or session is None or session["status"] != "pending":
        return  # decided in time (or never opened): nothing to do
    if not _is_past(conn, session["deadline_at"]):
        raise errors.RetryLater("deadline not reached yet", retry_after_s=5)
    orders.decide_session(conn, order_id, "expired", "deadline")
    _cancel_order(conn, order, "identity verification not completed before the deadline")


def _cancel_order(conn: Connection, order: dict[str, Any], reason: str) -> None:
    order_id = str(order["order_id"])
    if not orders.cancel_order(conn, order_id, reason):
        return
    items = orders.order_items(conn, order_id)
    for item in sorted(items, key=lambda i: str(i["product_id"])):
        payments.return_stock(conn, str(item["product_id"]), item["quantity"])
    payments.set_status(conn, order["payment_intent_id"], "needs_refund", f"order cancelled: {reason}")

    from shared.flows import metrics

    day = metrics.day_of(order["created_at"], get_settings())
    for vendor_id in sorted({str(item["vendor_id"]) for item in items}):
        metrics.enqueue_refresh(conn, vendor_id, day)
    log.warning("order cancelled; payment needs a refund", extra={"order_id": order_id, "reason": reason})


def _is_past(conn: Connection, moment: datetime) -> bool:
    return conn.fetch_value("SELECT :moment <= now() AS past", moment=moment) is True
