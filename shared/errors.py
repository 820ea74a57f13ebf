"""The one error tree of orderpipe.

Every error knows the HTTP status and the machine-readable `code` it maps to, so entry points
translate errors without knowing where they came from. Messages are written for the caller:
they never carry SQL, stack traces or secret values.
"""

from __future__ import annotations

from typing import Any


class OrderpipeError(Exception):
    """Base of every error orderpipe raises on purpose."""

    status = 500
    code = "internal_error"
    default_message = "Something went wrong on our side."

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)

    def with_code(self, code: str) -> OrderpipeError:
        """The same error under a more specific machine-readable code (e.g. 404 `cart_not_found`)."""
        self.code = code
        return self

    @classmethod
    def replayed(cls, status: int, envelope: dict[str, Any]) -> OrderpipeError:
        """An error answered before (idempotent replay), raised again with its status, code and details."""
        error = envelope.get("error", {})
        exc = OrderpipeError(error.get("message"), details=error.get("details") or {})
        exc.status = status
        exc.code = error.get("code", cls.code)
        return exc


# --- the caller sent something wrong (4xx) -------------------------------------------------------


class BadRequest(OrderpipeError):
    status = 400
    code = "bad_request"
    default_message = "The request could not be understood."


class InvalidJson(BadRequest):
    code = "invalid_json"
    default_message = "The request body must be a JSON object."


class InvalidSignature(BadRequest):
    code = "invalid_signature"
    default_message = "The signature does not match."


class Unauthorized(OrderpipeError):
    status = 401
    code = "unauthorized"
    default_message = "A valid credential is required."


class WebhookSignatureInvalid(Unauthorized):
    """A webhook whose signature or timestamp does not check out: 401, and nothing is stored."""

    code = "invalid_signature"
    default_message = "The webhook signature is missing, wrong, or too old."


class NotFound(OrderpipeError):
    status = 404
    code = "not_found"
    default_message = "Nothing is here."


class MethodNotAllowed(OrderpipeError):
    status = 405
    code = "method_not_allowed"
    default_message = "This method is not allowed here."


class Conflict(OrderpipeError):
    status = 409
    code = "conflict"
    default_message = "The request conflicts with the current state."


class AlreadyExists(Conflict):
    code = "already_exists"
    default_message = "That already exists."


class PayloadTooLarge(OrderpipeError):
    status = 413
    code = "payload_too_large"
    default_message = "The request body is larger than 1 MiB."


class UnsupportedMediaType(OrderpipeError):
    status = 415
    code = "unsupported_media_type"
    default_message = "Send the body as application/json."


class ValidationFailed(OrderpipeError):
    status = 422
    code = "validation_error"
    default_message = "Some fields are not valid."


class BusinessRuleViolated(OrderpipeError):
    """A well-formed request that the current data does not allow (422 with its own code)."""

    status = 422
    code = "unprocessable"


class NotImplementedYet(OrderpipeError):
    status = 501
    code = "not_implemented"
    default_message = "This capability is not built yet."


# --- something outside the caller failed (5xx, retry later) --------------------------------------


class TransientError(OrderpipeError):
    """Worth retrying later: the answer may differ."""

    status = 503
    code = "unavailable"
    default_message = "Temporarily unavailable; retry later."
    retry_after_s = 5


class RetryLater(TransientError):
    """The work is not done yet; the caller (a task queue) should come back after `retry_after_s`."""

    code = "retry_later"
    default_message = "Not done yet; deliver again later."

    def __init__(self, message: str | None = None, *, retry_after_s: int = 5, details: dict | None = None):
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class DatabaseUnavailable(TransientError):
    code = "database_unavailable"
    default_message = "The database is not reachable right now."


class RetryableDatabaseError(TransientError):
    """Serialization failure, deadlock, lock or statement timeout: the transaction may be re-run."""

    code = "database_busy"
    default_message = "The database was busy; retry."


class GatewayUnavailable(TransientError):
    code = "gateway_unavailable"
    default_message = "The payment gateway did not answer; nothing was recorded, retry later."


class ConfigurationError(OrderpipeError):
    """The deployment is missing a setting or secret; an operator must act."""

    status = 500
    code = "configuration_error"
    default_message = "The service is not configured correctly."


class IntegrityError(OrderpipeError):
    """A schema constraint refused a write: a bug or a race the code should have handled."""

    status = 409
    code = "integrity_error"
    default_message = "The change would break a data invariant and was refused."


class PermanentJobError(OrderpipeError):
    """A job that can never succeed: dead-letter it at once instead of retrying."""

    status = 200
    code = "permanent_failure"
