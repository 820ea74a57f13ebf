"""eSewa ePay v2: a signed form the browser posts, a signed redirect back, and the status API.

The redirect is only a hint: its signature is checked (a forged one is refused outright), and
then the status API — server to server — decides. eSewa speaks rupees with decimals; amounts
are converted with `money` exactly. GATEWAYS.md holds the protocol facts and test vectors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from shared import errors
from shared.gateways._http import GatewayHttp, json_object, nonsense, rule_violation, unavailable_for_status
from shared.gateways.base import IntentRef, PaymentCheck, PaymentRequest, PaymentStart, PaymentState
from shared.gateways.money import MoneyError, major_to_minor, minor_to_major_string

log = logging.getLogger("orderpipe.gateways.esewa")

PROVIDER = "eSewa"
CURRENCY = "NPR"
KEY_NAME = "esewa-secret-key"
FORM_SIGNED_FIELD_NAMES = "total_amount,transaction_uuid,product_code"
# A redirect's own signed_field_names must cover these, or its signature would prove nothing about them.
_MUST_BE_SIGNED = frozenset({"total_amount", "transaction_uuid", "product_code"})
_MAX_DATA_CHARS = 8192
_TRANSACTION_UUID = re.compile(r"[A-Za-z0-9-]{1,64}")

STATUS_STATES: dict[str, PaymentState] = {
    "COMPLETE": "completed",
    "PENDING": "pending",
    "AMBIGUOUS": "pending",
    "NOT_FOUND": "failed",
    "CANCELED": "failed",
    "FULL_REFUND": "failed",
    "PARTIAL_REFUND": "failed",
}


def signature(fields: Mapping[str, str], signed_field_names: str, secret: str) -> str:
    """Base64 HMAC-SHA256 over `name=value` pairs in `signed_field_names` order, joined by ","."""
    message = ",".join(f"{name}={fields[name]}" for name in signed_field_names.split(","))
    digest = hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def transaction_uuid_for(payment_intent_id: str) -> str:
    """eSewa's transaction_uuid for an intent: the id itself when it is letters, digits and hyphens.

    Any other id is hashed into hex, which keeps it unique per intent and always derivable again.
    """
    if _TRANSACTION_UUID.fullmatch(payment_intent_id):
        return payment_intent_id
    return hashlib.sha256(payment_intent_id.encode("utf-8")).hexdigest()[:40]


def decode_redirect_data(data: Any, secret: str) -> dict[str, str]:
    """The fields of a success redirect's `data`, after checking eSewa's signature over them.

    Every value stays the raw string eSewa wrote (total_amount "1000.0" is not re-formatted), since
    that is what was signed. Undecodable or forged data raises `errors.InvalidSignature`.
    """
    if not isinstance(data, str) or not data or len(data) > _MAX_DATA_CHARS:
        raise errors.InvalidSignature("The eSewa payment data is missing or malformed.")
    fields = _decode_json(data)
    names = fields.get("signed_field_names")
    sent_signature = fields.get("signature")
    if not names or not sent_signature:
        raise errors.InvalidSignature("The eSewa payment data carries no signature.")
    name_list = names.split(",")
    if not set(name_list) >= _MUST_BE_SIGNED or any(name not in fields for name in name_list):
        raise errors.InvalidSignature("The eSewa payment data does not sign the fields that matter.")
    expected = signature(fields, names, secret)
    if not hmac.compare_digest(expected.encode("ascii"), sent_signature.encode("utf-8")):
        raise errors.InvalidSignature("The eSewa payment data is not signed by eSewa.")
    return fields


def _decode_json(data: str) -> dict[str, str]:
    text = data.strip().replace(" ", "+")  # a '+' that went through form decoding comes back as ' '
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text)
        else:
            raw = base64.b64decode(text, validate=True)
        value = json.loads(raw, parse_float=str, parse_int=str)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurd nesting
        raise errors.InvalidSignature("The eSewa payment data is not base64 JSON.") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise errors.InvalidSignature("The eSewa payment data is not a flat JSON object.")
    if not all(_is_unicode(text) for pair in value.items() for text in pair):
        # "\ud800" is valid JSON but no text: it cannot be UTF-8 encoded to check a signature over it.
        raise errors.InvalidSignature("The eSewa payment data is not valid Unicode.")
    return value


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class EsewaGateway:
    """The eSewa adapter: signs the form at intent creation, confirms with the status API."""

    name = "esewa"

    def __init__(self, settings: Any, secrets: Any):
        self.product_code = settings.esewa_product_code
        self.form_url = settings.esewa_form_url
        self.status_url = settings.esewa_status_url
        self._secrets = secrets
        self._http = GatewayHttp(PROVIDER, settings.gateway_timeout_s)

    def start_payment(self, request: PaymentRequest) -> PaymentStart:
        """The form fields of CONTRACT.md, signed; no call to eSewa (the browser posts the form)."""
        _require_npr(request.currency)
        if request.amount_minor <= 0:
            raise rule_violation("amount_not_positive", "eSewa needs an amount above zero.")
        amount = minor_to_major_string(request.amount_minor, CURRENCY)
        transaction_uuid = transaction_uuid_for(request.payment_intent_id)
        fields = {
            "amount": amount,
            "tax_amount": "0",
            "product_service_charge": "0",
            "product_delivery_charge": "0",
            "total_amount": amount,
            "transaction_uuid": transaction_uuid,
            "product_code": self.product_code,
            "success_url": request.success_url,
            "failure_url": request.failure_url,
            "signed_field_names": FORM_SIGNED_FIELD_NAMES,
        }
        fields["signature"] = signature(fields, FORM_SIGNED_FIELD_NAMES, self._secrets.get(KEY_NAME))
        return PaymentStart(external_reference=transaction_uuid,
                            client={"form_url": self.form_url, "fields": fields})

    def check_payment(self, intent: IntentRef, proof: dict[str, Any] | None) -> PaymentCheck:
        """Check the redirect's signature when there is one, then always ask the status API."""
        _require_npr(intent.currency)
        total_amount = minor_to_major_string(intent.amount_minor, CURRENCY)
        data = (proof or {}).get("data")
        if data is not None:
            fields = decode_redirect_data(data, self._secrets.get(KEY_NAME))
            if fields["transaction_uuid"] != intent.external_reference or fields["product_code"] != self.product_code:
                raise errors.BadRequest("The eSewa payment data is about another payment.")
            # eSewa signed what was paid; ask the status API about that amount, so a payment of
            # another amount is reported as it is rather than looked up as a payment that never was.
            try:
                total_amount = minor_to_major_string(major_to_minor(fields["total_amount"], CURRENCY), CURRENCY)
            except MoneyError:
                raise errors.BadRequest("The eSewa payment data has an unreadable total_amount.") from None
        return self._status(intent.external_reference, total_amount)

    def _status(self, transaction_uuid: str, total_amount: str) -> PaymentCheck:
        response = self._http.request("GET", self.status_url, params={
            "product_code": self.product_code, "total_amount": total_amount, "transaction_uuid": transaction_uuid,
        })
        if response.status_code != 200:
            raise unavailable_for_status(response, PROVIDER)
        body = json_object(response, PROVIDER, raw_numbers=True)
        if "error_message" in body or "status" not in body:
            # eSewa reports an outage as 200 {"code":0,"error_message":…}: not a verdict.
            log.warning("eSewa reported an error", extra={"provider": PROVIDER})
            raise errors.GatewayUnavailable("eSewa says its service is unavailable.")
        status = body.get("status")
        state = STATUS_STATES.get(status) if isinstance(status, str) else None
        if state is None:
            raise nonsense(PROVIDER, f"unknown status {str(status)[:40]!r}")
        if body.get("transaction_uuid") not in (None, transaction_uuid):
            raise nonsense(PROVIDER, "the status is about another transaction_uuid")
        raw = {key: body.get(key) for key in ("product_code", "transaction_uuid", "total_amount", "status", "ref_id")}
        if state != "completed":
            return PaymentCheck(state=state, gateway_status=status, raw=raw)
        ref_id = body.get("ref_id")
        if not isinstance(ref_id, str) or not ref_id:
            raise nonsense(PROVIDER, "COMPLETE without a ref_id")
        try:
            amount_minor = major_to_minor(body.get("total_amount"), CURRENCY)
        except MoneyError:
            raise nonsense(PROVIDER, "COMPLETE with an unreadable total_amount") from None
        return PaymentCheck(state="completed", external_transaction_id=ref_id, amount_minor=amount_minor,
                            currency=CURRENCY, gateway_status=status, raw=raw)

    def dry_run(self) -> str:
        """The secret loads, a form signature computes, the URLs are set: 'ok'. No network, no money."""
        try:
            sample = {"total_amount": "100", "transaction_uuid": "dry-run", "product_code": self.product_code}
            computed = signature(sample, FORM_SIGNED_FIELD_NAMES, self._secrets.get(KEY_NAME))
            ok = len(base64.b64decode(computed)) == 32 and bool(self.form_url and self.status_url)
        except Exception as exc:
            log.warning("eSewa dry run failed", extra={"provider": PROVIDER, "error": type(exc).__name__})
            return "failed"
        return "ok" if ok else "failed"


def _require_npr(currency: str) -> None:
    if currency.upper() != CURRENCY:
        raise rule_violation("currency_not_supported", f"eSewa takes NPR only, not {currency[:8]!r}.")
