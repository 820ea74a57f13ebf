"""What every adapter does the same way: one HTTP client with the gateway timeout, and error mapping.

A gateway that cannot be reached, times out, or answers something that is not the JSON it
documents raises `errors.GatewayUnavailable` — never a verdict about the payment. Messages name
the provider and what went wrong, never a URL with credentials or a header value.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import httpx

from shared import errors

log = logging.getLogger("orderpipe.gateways")


class GatewayHttp:
    """A lazily built `httpx.Client` (connection reuse between calls) with the configured timeout."""

    def __init__(self, provider: str, timeout_s: float):
        self.provider = provider
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # No automatic retries: a create call retried blindly could start two payments.
                self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s), follow_redirects=False)
            return self._client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; a timeout or transport failure becomes GatewayUnavailable."""
        try:
            return self._get_client().request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            log.warning("gateway timed out", extra={"provider": self.provider, "timeout_s": self.timeout_s})
            raise errors.GatewayUnavailable(f"{self.provider} did not answer within {self.timeout_s:g} s.") from exc
        except httpx.HTTPError as exc:
            log.warning("gateway unreachable", extra={"provider": self.provider, "error": type(exc).__name__})
            raise errors.GatewayUnavailable(f"{self.provider} could not be reached.") from exc

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def json_object(response: httpx.Response, provider: str, *, raw_numbers: bool = False) -> dict[str, Any]:
    """The response body as a JSON object, or GatewayUnavailable.

    `raw_numbers` keeps every JSON number as the text the gateway wrote ("1000.0" stays "1000.0"),
    so amounts can be converted exactly and signatures checked over the original strings.
    """
    try:
        if raw_numbers:
            value = json.loads(response.content, parse_float=str, parse_int=str)
        else:
            value = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        log.warning("gateway answered non-JSON", extra={"provider": provider, "status": response.status_code})
        raise errors.GatewayUnavailable(f"{provider} answered something that is not JSON "
                                        f"(HTTP {response.status_code}).") from None
    if not isinstance(value, dict):
        raise errors.GatewayUnavailable(f"{provider} answered JSON that is not an object.")
    return value


def unavailable_for_status(response: httpx.Response, provider: str) -> errors.GatewayUnavailable:
    """The error for an HTTP status that is not an answer about the payment.

    401/403 means our key is wrong: that is our misconfiguration, logged as an ERROR so someone
    acts, but still GatewayUnavailable to the caller because nothing is known about the payment.
    """
    status = response.status_code
    if status in (401, 403):
        log.error("gateway refused our credentials; check the configured secret key",
                  extra={"provider": provider, "status": status})
        return errors.GatewayUnavailable(f"{provider} refused our credentials (HTTP {status}).")
    log.warning("gateway answered an error status", extra={"provider": provider, "status": status})
    return errors.GatewayUnavailable(f"{provider} answered HTTP {status}.")


def rule_violation(code: str, message: str, details: dict[str, Any] | None = None) -> errors.BusinessRuleViolated:
    """A BusinessRuleViolated (422) with its own `code`, e.g. "amount_below_minimum"."""
    exc = errors.BusinessRuleViolated(message, details=details)
    exc.code = code
    return exc


def nonsense(provider: str, what: str) -> errors.GatewayUnavailable:
    """A well-formed answer that does not say what the docs promise: not a verdict, retry later."""
    log.warning("gateway answered nonsense", extra={"provider": provider, "problem": what})
    return errors.GatewayUnavailable(f"{provider} answered unexpectedly: {what}.")
