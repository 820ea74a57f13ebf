"""Simulated Khalti ePayment (KPG-2): initiate, lookup, the payment page and the return redirect.

Like the real one: `Authorization: Key <secret>` or 401, validation errors as
`{field: [message], "error_key": "validation_error"}`, and lookup answering `Expired` and
`User canceled` with HTTP 400 and the normal status body.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

from werkzeug.wrappers import Request, Response

from shared.simulator._common import SimError, decide_form, html_page, json_response, random_id

KEY_NAME = "khalti-secret-key"
MIN_AMOUNT = 1000
NEPAL = timezone(timedelta(hours=5, minutes=45))  # Khalti writes expires_at in Nepal time
_SENT_WITH_400 = ("Expired", "User canceled")


@dataclass
class KhaltiPayment:
    pidx: str
    amount: int
    return_url: str
    purchase_order_id: str
    purchase_order_name: str
    expires_at: float
    status: str = "Initiated"
    transaction_id: str | None = None
    total_amount: int | None = None


class KhaltiSim:
    def __init__(self, secrets: Any, *, expires_in_s: int):
        self._secrets = secrets
        self.expires_in_s = expires_in_s
        self._lock = threading.Lock()
        self._payments: dict[str, KhaltiPayment] = {}

    def _refuse_auth(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization")
        if not header:
            return json_response({"detail": "Authentication credentials were not provided.", "status_code": 401}, 401)
        expected = f"Key {self._secrets.get(KEY_NAME)}"
        if not hmac.compare_digest(header.encode(), expected.encode()):
            return json_response({"detail": "Invalid token.", "status_code": 401}, 401)
        return None

    # --- real paths ------------------------------------------------------------------------------

    def initiate(self, request: Request) -> Response:
        """POST /api/v2/epayment/initiate/."""
        refused = self._refuse_auth(request)
        if refused:
            return refused
        body = _body(request)
        if body is None:
            return json_response({"detail": "JSON parse error.", "error_key": "validation_error"}, 400)
        problems: dict[str, list[str]] = {}
        for name in ("return_url", "website_url", "purchase_order_id", "purchase_order_name", "amount"):
            if body.get(name) in (None, ""):
                problems[name] = ["This field is required."]
        for name in ("return_url", "website_url"):
            if name not in problems and not _is_url(body[name]):
                problems[name] = ["Enter a valid URL."]
        amount = _integer(body.get("amount"))
        if "amount" not in problems:
            if amount is None:
                problems["amount"] = ["A valid integer is required."]
            elif amount < MIN_AMOUNT:
                problems["amount"] = ["Amount should be greater than Rs. 10, that is 1000 paisa."]
        if problems:
            return json_response({**problems, "error_key": "validation_error"}, 400)
        pidx = random_id(22)
        expires_at = time.time() + self.expires_in_s
        with self._lock:
            self._payments[pidx] = KhaltiPayment(pidx, amount, str(body["return_url"]),
                                                 str(body["purchase_order_id"]), str(body["purchase_order_name"]),
                                                 expires_at)
        return json_response({
            "pidx": pidx,
            # Khalti's payment page lives on its own host; ours is this server, as the client reached it.
            "payment_url": f"{request.host_url.rstrip('/')}/sim/khalti/pay/?pidx={pidx}",
            "expires_at": datetime.fromtimestamp(expires_at, NEPAL).isoformat(),
            "expires_in": self.expires_in_s,
        })

    def lookup(self, request: Request) -> Response:
        """POST /api/v2/epayment/lookup/: 200, or 400 with the same body for Expired and User canceled."""
        refused = self._refuse_auth(request)
        if refused:
            return refused
        body = _body(request)
        pidx = body.get("pidx") if body else None
        if not pidx:
            return json_response({"pidx": ["This field is required."], "error_key": "validation_error"}, 400)
        with self._lock:
            payment = self._payments.get(str(pidx))
            if payment is None:
                return json_response({"detail": "Not found.", "error_key": "validation_error"}, 404)
            self._expire(payment)
            answer = {
                "pidx": payment.pidx,
                "total_amount": payment.total_amount if payment.total_amount is not None else payment.amount,
                "status": payment.status,
                "transaction_id": payment.transaction_id,
                "fee": 0,
                "refunded": False,
            }
        return json_response(answer, 400 if answer["status"] in _SENT_WITH_400 else 200)

    def page(self, request: Request) -> Response:
        """GET payment_url: the page the customer pays on."""
        pidx = request.args.get("pidx", "")
        with self._lock:
            payment = self._payments.get(pidx)
            if payment is None:
                return html_page("Khalti", "<p>Payment not found.</p>", 404)
            summary = f"Khalti — pay Rs. {payment.amount / 100:.2f} for {payment.purchase_order_name} (simulated)."
        return html_page("Khalti", decide_form("khalti", pidx, summary))

    # --- driving ---------------------------------------------------------------------------------

    def pay(self, reference: str, outcome: str, amount_minor: int | None) -> dict[str, Any]:
        """The customer finishes on Khalti: the return_url redirect with Khalti's query parameters."""
        with self._lock:
            payment = self._payments.get(reference)
            if payment is None:
                raise SimError(404, "unknown_reference", "No Khalti payment with this pidx.")
            self._expire(payment)
            if payment.status not in ("Initiated", "Pending"):
                raise SimError(409, "already_finished", f"This Khalti payment is already {payment.status}.")
            if outcome == "success":
                payment.status = "Completed"
                payment.transaction_id = random_id(22)
                payment.total_amount = amount_minor if amount_minor is not None else payment.amount
            elif outcome == "failure":
                payment.status = "User canceled"
            else:
                payment.status = "Pending"
            completed = payment.status == "Completed"
            amount = payment.total_amount if payment.total_amount is not None else payment.amount
            query = {
                "pidx": payment.pidx,
                "status": payment.status,
                "transaction_id": payment.transaction_id or "",
                "tidx": payment.transaction_id or "",
                "amount": amount,
                "total_amount": amount,
                "mobile": "98XXXXX904" if completed else "",
                "purchase_order_id": payment.purchase_order_id,
                "purchase_order_name": payment.purchase_order_name,
            }
            return_url = payment.return_url
        joiner = "&" if "?" in return_url else "?"
        return {"redirect_url": f"{return_url}{joiner}{urlencode(query)}"}

    def _expire(self, payment: KhaltiPayment) -> None:
        if payment.status == "Initiated" and time.time() > payment.expires_at:
            payment.status = "Expired"


def _body(request: Request) -> dict[str, Any] | None:
    """Khalti takes JSON or a form."""
    if request.mimetype == "application/json":
        try:
            value = json.loads(request.get_data() or b"null")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return dict(request.form)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
