"""expire_reservation: at expires_at, an intent still waiting for its payment expires and its stock returns.

A payment that arrives later is still accepted (see finalization: the stock is taken again if it is
there, otherwise the intent goes to needs_refund).
"""

from __future__ import annotations

import logging

from shared import errors
from shared.db import payments
from shared.db.connection import Connection
from shared.db.pool import Database
from shared.jobs import Job
from shared.jobs.registry import job_handler

log = logging.getLogger(__name__)

SELECT_LAPSED = """
SELECT payment_intent_id FROM payment_intents
WHERE status IN ('awaiting_payment', 'verifying') AND expires_at <= now()
ORDER BY expires_at
LIMIT :limit
"""


@job_handler("expire_reservation", queue="timers")
def expire_reservation_job(conn: Connection, job: Job) -> None:
    payment_intent_id = job.payload.get("payment_intent_id")
    if not isinstance(payment_intent_id, str):
        raise errors.PermanentJobError("expire_reservation needs payment_intent_id")
    expire_intent(conn, payment_intent_id)


def expire_intent(conn: Connection, payment_intent_id: str) -> bool:
    """Expire the intent if it is still unpaid past its expiry; True if it changed."""
    intent = payments.get_intent(conn, payment_intent_id, for_update=True)
    if intent is None or intent["status"] not in payments.OPEN:
        return False
    if conn.fetch_value("SELECT :expires_at <= now() AS lapsed", expires_at=intent["expires_at"]) is not True:
        return False  # delivered early (a clock or a retry): the timer will come again
    payments.release_held(conn, payment_intent_id)
    payments.set_status(conn, payment_intent_id, "expired", "reservation lapsed before the payment was confirmed")
    log.info("payment intent expired", extra={"payment_intent_id": payment_intent_id})
    return True


def expire_lapsed(db: Database, *, limit: int = 500) -> dict[str, int]:
    """Reconcile's sweep: expire every lapsed intent the timer jobs have not (yet) handled."""
    with db.connection() as conn:
        lapsed = [row["payment_intent_id"] for row in conn.fetch_all(SELECT_LAPSED, limit=limit)]
    expired = 0
    for payment_intent_id in lapsed:
        if db.run_in_transaction(lambda conn, pid=payment_intent_id: expire_intent(conn, pid)):
            expired += 1
    return {"found": len(lapsed), "expired": expired}
