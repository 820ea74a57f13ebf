"""JSON for the values rows carry: RFC 3339 UTC times, ISO dates, UUIDs as strings, exact decimals."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return str(value)


def plain(value: Any) -> Any:
    """`value` as plain JSON types (what a client will read back), e.g. for storing a response to replay."""
    return json.loads(json.dumps(value, default=json_default))
