"""Verifying a payment with the gateway, and recording what the gateway said — in one transaction.

`verify_payment` (the storefront's call), the Stripe webhook and reconcile's straggler polling all end
in `apply_check`, so a payment verified by any of them, in any order, at the same time, yields one
verification row and one finalize_order job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from shared import errors, jobs
from shared.db import payments
from shared.db.connection import Connection
from shared.db.pool import Database
from shared.flows.order_status import stage_of_intent
from shared.gateways.base import Gateway, IntentRef, PaymentCheck

log = logging.getLogger(__name__)

PaymentIntentId = Annotated[str, StringConstraints(pattern=r"^opi_[0-9a-f]{32}$")]


class EsewaProof(BaseModel):
    model_config = ConfigDict(strict=True)
    data: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class KhaltiProof(BaseModel):
    model_config = ConfigDict(strict=True)
    pidx: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class VerifyIn(BaseModel):
    model_config = ConfigDict(strict=True)
    payment_intent_id: PaymentIntentId
    esewa: EsewaProof | None = None
    khalti: KhaltiProof | None = None


class AmountMismatch(errors.Conflict):
    code = "amount_mismatch"
    default_message = "The gateway reports a different amount than the intent's; it is held for review."


@dataclass
class Outcome:
    verification: str  # verified | pending | failed | mismatch
    idempotent: bool
    details: dict[str, Any] = field(default_factory=dict)


def verify_payment(db: Database, gateways: dict[str, Gateway], request: VerifyIn) -> dict[str, Any]:
    """Ask the gateway about the intent's payment and record the answer (CONTRACT.md verify_payment)."""
    with db.connection() as conn:
        intent = payments.get_intent(conn, request.payment_intent_id)
        if intent is None:
            raise errors.NotFound("No payment intent with that id.").with_code("payment_intent_not_found")
        verified = payments.get_verification(conn, request.payment_intent_id)
    if verified is None:
        if intent["status"] == "needs_review":
            raise AmountMismatch(details={"idempotent": True, "status_reason": intent["status_reason"]})
        if not intent["external_reference"]:
            raise errors.Conflict("The payment was never started at the gateway.").with_code("payment_not_started")
        proof = _proof_for(intent["provider"], request)
        check = gateways[intent["provider"]].check_payment(_intent_ref(intent), proof)
        outcome = db.run_in_transaction(
            lambda conn: apply_check(conn, intent["payment_intent_id"], intent["provider"], check,
                                     source="verify_payment"))
    else:
        outcome = Outcome("verified", idempotent=True)
    if outcome.verification == "mismatch":
        raise AmountMismatch(details=outcome.details)
    with db.connection() as conn:
        stage = stage_of_intent(conn, request.payment_intent_id)
    return {"payment_intent_id": request.payment_intent_id, "verification": outcome.verification, "stage": stage,
            "idempotent": outcome.idempotent}


def _proof_for(provider: str, request: VerifyIn) -> dict[str, Any] | None:
    given = {name for name in ("esewa", "khalti") if getattr(request, name) is not None}
    if given - {provider}:
        raise errors.ValidationFailed(
            f"This intent is paid with {provider}; send no proof for another gateway.",
            details={"fields": [{"field": name, "message": "not this intent's gateway", "type": "unexpected"}
                                for name in sorted(given - {provider})]})
    proof = getattr(request, provider, None) if provider in ("esewa", "khalti") else None
    return proof.model_dump() if proof is not None else None


def _intent_ref(intent: dict[str, Any]) -> IntentRef:
    return IntentRef(payment_intent_id=intent["payment_intent_id"], amount_minor=intent["amount_minor"],
                     currency=intent["currency"], external_reference=intent["external_reference"])


def check_straggler(db: Database, gateway: Gateway, intent: dict[str, Any]) -> Outcome:
    """Reconcile's poll of an intent nobody confirmed: the gateway's answer, recorded like a verify call."""
    check = gateway.check_payment(_intent_ref(intent), None)
    return db.run_in_transaction(
        lambda conn: apply_check(conn, intent["payment_intent_id"], intent["provider"], check, source="reconcile"))


def apply_check(conn: Connection, payment_intent_id: str, provider: str, check: PaymentCheck, *,
                source: str) -> Outcome:
    """Record a gateway's answer about an intent's payment. Runs inside the caller's transaction.

    completed + exact amount → verification row, intent `paid`, finalize_order job;
    completed + other amount → intent `needs_review` (a person decides);
    pending → intent `verifying`; failed → intent `failed` and its stock released.
    """
    intent = payments.get_intent(conn, payment_intent_id, for_update=True)
    if payments.get_verification(conn, payment_intent_id) is not None:
        return Outcome("verified", idempotent=True)
    if check.state == "completed":
        return _record_completed(conn, intent, provider, check, source)
    if check.state == "pending":
        if intent["status"] == "awaiting_payment":
            payments.set_status(conn, payment_intent_id, "verifying", f"gateway says {check.gateway_status}")
            payments.record_attempt(conn, payment_intent_id, "pending", _attempt_detail(check, source))
            return Outcome("pending", idempotent=False)
        return Outcome("pending", idempotent=True)
    # failed: a definite "no" from the gateway
    if intent["status"] in payments.OPEN:
        payments.release_held(conn, payment_intent_id)
        payments.set_status(conn, payment_intent_id, "failed", f"gateway says {check.gateway_status}")
        payments.record_attempt(conn, payment_intent_id, "failed", _attempt_detail(check, source))
        return Outcome("failed", idempotent=False)
    return Outcome("failed", idempotent=True)


def _record_completed(conn: Connection, intent: dict[str, Any], provider: str, check: PaymentCheck,
                      source: str) -> Outcome:
    payment_intent_id = intent["payment_intent_id"]
    mismatch = {
        "expected_minor": intent["amount_minor"], "received_minor": check.amount_minor,
        "currency": intent["currency"], "received_currency": check.currency,
    }
    if intent["status"] == "needs_review":
        return Outcome("mismatch", idempotent=True, details={**mismatch, "idempotent": True})
    if check.amount_minor != intent["amount_minor"] or check.currency != intent["currency"]:
        payments.set_status(conn, payment_intent_id, "needs_review",
                            f"amount mismatch: gateway {check.amount_minor} {check.currency}, "
                            f"intent {intent['amount_minor']} {intent['currency']}")
        payments.record_attempt(conn, payment_intent_id, "amount_mismatch", {**_attempt_detail(check, source),
                                                                            **mismatch})
        log.warning("payment amount mismatch", extra={"payment_intent_id": payment_intent_id, **mismatch})
        return Outcome("mismatch", idempotent=False, details={**mismatch, "idempotent": False})
    other = payments.intent_of_transaction(conn, provider, check.external_transaction_id)
    if other is not None and other != payment_intent_id:
        # One gateway transaction cannot pay two intents: a person must look.
        payments.set_status(conn, payment_intent_id, "needs_review",
                            f"gateway transaction already verified for {other}")
        return Outcome("mismatch", idempotent=False, details={**mismatch, "reason": "transaction_reused"})
    payments.insert_verification(
        conn, payment_intent_id=payment_intent_id, provider=provider,
        external_transaction_id=check.external_transaction_id, amount_minor=check.amount_minor,
        currency=check.currency, source=source, gateway_response=check.raw,
    )
    payments.set_status(conn, payment_intent_id, "paid", f"verified by {source}")
    jobs.enqueue(conn, "finalize_order", {"payment_intent_id": payment_intent_id},
                 key=f"finalize:{payment_intent_id}")
    log.info("payment verified", extra={"payment_intent_id": payment_intent_id, "source": source})
    return Outcome("verified", idempotent=False)


def _attempt_detail(check: PaymentCheck, source: str) -> dict[str, Any]:
    return {"source": source, "gateway_status": check.gateway_status,
            "external_transaction_id": check.external_transaction_id}
