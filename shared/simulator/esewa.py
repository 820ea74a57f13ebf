"""Simulated eSewa ePay v2: the form endpoint, the status API, and the signed success redirect.

The signing here is written out again on purpose rather than imported from the adapter, so a
mistake in the adapter's signing cannot be mirrored by the simulator and go unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from werkzeug.wrappers import Request, Response

from shared.simulator._common import SimError, decide_form, html_page, json_response, random_id

KEY_NAME = "esewa-secret-key"
REQUIRED_FIELDS = ("amount", "tax_amount", "product_service_charge", "product_delivery_charge", "total_amount",
                   "transaction_uuid", "product_code", "success_url", "failure_url", "signed_field_names",
                   "signature")
REDIRECT_SIGNED_FIELDS = "transaction_code,status,total_amount,transaction_uuid,product_code,signed_field_names"
OUTAGE = {"code": 0, "error_message": "Service is currently unavailable"}
_UUID = re.compile(r"[A-Za-z0-9-]+")
_REF = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _sign(fields: dict[str, str], names: str, secret: str) -> str:
    message = ",".join(f"{name}={fields[name]}" for name in names.split(","))
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()).decode()


def _rupees(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


def _as_written(value: Decimal) -> str:
    """eSewa writes amounts as a float would print: 1000 → "1000.0", 1500.5 → "1500.5"."""
    return repr(float(value))


@dataclass
class EsewaTransaction:
    transaction_uuid: str
    product_code: str
    total_amount: Decimal  # what the form asked for
    success_url: str
    failure_url: str
    status: str = "PENDING"  # eSewa's word for "initiated, not completed yet"
    ref_id: str | None = None
    paid_amount: Decimal | None = None


class EsewaSim:
    def __init__(self, secrets: Any, product_code: str):
        self._secrets = secrets
        self.product_code = product_code
        self._lock = threading.Lock()
        self._transactions: dict[str, EsewaTransaction] = {}

    # --- real paths ------------------------------------------------------------------------------

    def form(self, request: Request) -> Response:
        """POST /api/epay/main/v2/form: check the fields and signature, record, show the login page."""
        fields = {name: request.form.get(name, "") for name in REQUIRED_FIELDS}
        missing = [name for name, value in fields.items() if not value.strip()]
        if missing:
            return _refuse(f"Required fields are missing or empty: {', '.join(missing)}.")
        amounts = {name: _rupees(fields[name]) for name in
                   ("amount", "tax_amount", "product_service_charge", "product_delivery_charge", "total_amount")}
        if any(value is None for value in amounts.values()):
            return _refuse("Amounts must be non-negative numbers.")
        parts = amounts["amount"] + amounts["tax_amount"] + amounts["product_service_charge"] \
            + amounts["product_delivery_charge"]
        if parts != amounts["total_amount"] or amounts["total_amount"] <= 0:
            return _refuse("total_amount must be the sum of amount and the charges, and above zero.")
        if not _UUID.fullmatch(fields["transaction_uuid"]):
            return _refuse("transaction_uuid may hold letters, digits and hyphens only.")
        if fields["product_code"] != self.product_code:
            return _refuse("Unknown product_code.")
        names = fields["signed_field_names"]
        if any(name not in request.form for name in names.split(",")) or not {
                "total_amount", "transaction_uuid", "product_code"} <= set(names.split(",")):
            return _refuse("signed_field_names must name total_amount, transaction_uuid and product_code.")
        signed_values = {name: request.form[name] for name in names.split(",")}
        expected = _sign(signed_values, names, self._secrets.get(KEY_NAME))
        if not hmac.compare_digest(expected.encode(), fields["signature"].encode()):
            return _refuse("Invalid payload signature.")
        uuid = fields["transaction_uuid"]
        with self._lock:
            known = self._transactions.get(uuid)
            if known is not None and (known.status != "PENDING" or known.total_amount != amounts["total_amount"]):
                return _refuse("This transaction_uuid has already been used.")
            if known is None:
                self._transactions[uuid] = EsewaTransaction(
                    uuid, fields["product_code"], amounts["total_amount"], fields["success_url"],
                    fields["failure_url"])
        summary = f"eSewa login — pay Rs. {fields['total_amount']} for {uuid} (simulated)."
        return html_page("eSewa", decide_form("esewa", uuid, summary))

    def status(self, request: Request) -> Response:
        """GET /api/epay/transaction/status/: the status body of GATEWAYS.md."""
        product_code = request.args.get("product_code", "")
        total_amount = request.args.get("total_amount", "")
        uuid = request.args.get("transaction_uuid", "")
        asked = _rupees(total_amount)
        if not product_code or not uuid or asked is None:
            return json_response({"code": 0, "error_message": "Invalid request parameters"}, 400)
        with self._lock:
            known = self._transactions.get(uuid)
            found = known is not None and known.product_code == product_code and asked == (
                known.paid_amount if known.paid_amount is not None else known.total_amount)
            if not found:
                # eSewa looks a payment up by all three values: any mismatch finds nothing.
                return json_response({"product_code": product_code, "transaction_uuid": uuid,
                                      "total_amount": float(asked), "status": "NOT_FOUND", "ref_id": None})
            amount = known.paid_amount if known.paid_amount is not None else known.total_amount
            return json_response({"product_code": known.product_code, "transaction_uuid": uuid,
                                  "total_amount": float(amount), "status": known.status, "ref_id": known.ref_id})

    # --- driving ---------------------------------------------------------------------------------

    def pay(self, reference: str, outcome: str, amount_minor: int | None) -> dict[str, Any]:
        """The customer finishes on eSewa: the redirect eSewa would send the browser to."""
        with self._lock:
            txn = self._transactions.get(reference)
            if txn is None:
                raise SimError(404, "unknown_reference",
                               "No eSewa transaction with this transaction_uuid: POST the form first.")
            if txn.status != "PENDING":
                raise SimError(409, "already_finished", f"This eSewa transaction is already {txn.status}.")
            if outcome == "pending":
                return {"redirect_url": txn.failure_url}  # eSewa sends PENDING to failure_url too
            if outcome == "failure":
                txn.status = "CANCELED"
                return {"redirect_url": txn.failure_url}
            txn.status = "COMPLETE"
            txn.ref_id = random_id(7, _REF)
            txn.paid_amount = (Decimal(amount_minor).scaleb(-2) if amount_minor is not None else txn.total_amount)
            data = {
                "transaction_code": txn.ref_id,
                "status": "COMPLETE",
                "total_amount": _as_written(txn.paid_amount),
                "transaction_uuid": txn.transaction_uuid,
                "product_code": txn.product_code,
                "signed_field_names": REDIRECT_SIGNED_FIELDS,
            }
            success_url = txn.success_url
        data["signature"] = _sign(data, REDIRECT_SIGNED_FIELDS, self._secrets.get(KEY_NAME))
        encoded = base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()
        # Appended as eSewa does it: raw base64, so a '+' in it arrives as ' ' to a naive parser.
        joiner = "&" if "?" in success_url else "?"
        return {"redirect_url": f"{success_url}{joiner}data={encoded}", "transaction_code": txn.ref_id}


def _refuse(message: str) -> Response:
    return html_page("eSewa — payment request refused", f"<p>{html.escape(message)}</p>", 400)
