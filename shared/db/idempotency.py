"""Stored first answers for requests carrying an Idempotency-Key."""

from __future__ import annotations

import json
from typing import Any

from shared.db.connection import Connection

# A claim still unanswered after its lease belongs to a request that died (SIGKILL, a timed-out
# instance, the database gone when the answer was to be stored): the same request may take it over.
# created_at is the time of the latest claim.
CLAIM_KEY = """
INSERT INTO idempotency_keys (scope, key, request_hash) VALUES (:scope, :key, :request_hash)
ON CONFLICT (scope, key) DO UPDATE SET created_at = now()
WHERE idempotency_keys.response_code IS NULL
  AND idempotency_keys.request_hash = EXCLUDED.request_hash
  AND idempotency_keys.created_at < now() - make_interval(secs => :lease_s)
RETURNING key
"""

SELECT_KEY = """
SELECT request_hash, response_code, response_body FROM idempotency_keys WHERE scope = :scope AND key = :key
"""

STORE_RESPONSE = """
UPDATE idempotency_keys SET response_code = :code, response_body = CAST(:body AS jsonb)
WHERE scope = :scope AND key = :key
"""

FORGET_KEY = "DELETE FROM idempotency_keys WHERE scope = :scope AND key = :key AND response_code IS NULL"

PURGE_OLD = """
DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(days => :days)
"""


def claim(conn: Connection, scope: str, key: str, request_hash: str, *, lease_s: int) -> bool:
    """True if this request now owns the key: the first with it, or the same request again after an
    unanswered claim's `lease_s` ran out."""
    return conn.fetch_one(CLAIM_KEY, scope=scope, key=key, request_hash=request_hash, lease_s=lease_s) is not None


def get(conn: Connection, scope: str, key: str) -> dict[str, Any] | None:
    row = conn.fetch_one(SELECT_KEY, scope=scope, key=key)
    if row and isinstance(row["response_body"], str):
        row["response_body"] = json.loads(row["response_body"])
    return row


def store_response(conn: Connection, scope: str, key: str, code: int, body: Any) -> None:
    conn.execute(STORE_RESPONSE, scope=scope, key=key, code=code, body=json.dumps(body))


def forget(conn: Connection, scope: str, key: str) -> None:
    """Drop an unanswered claim (the request failed transiently): a retry may run again."""
    conn.execute(FORGET_KEY, scope=scope, key=key)


def purge_old(conn: Connection, days: int) -> int:
    return conn.execute(PURGE_OLD, days=days)
