"""A thin connector over one pg8000 connection: `:name` parameters in, dicts out, our errors out.

It works on any pg8000 connection — the native one we open from DATABASE_URL or the embedded
server, and the DB-API one the Cloud SQL connector hands back — by talking to pg8000's core
protocol layer directly. Statements are prepared once per connection and reused, so a query
costs one round trip instead of three.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import pg8000.converters
import pg8000.exceptions
from pg8000.converters import make_params
from pg8000.native import to_statement

from shared import errors

log = logging.getLogger(__name__)

# SQLSTATE → our error. https://www.postgresql.org/docs/current/errcodes-appendix.html
_RETRYABLE_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "55P03": "lock not available",
    "57014": "statement timeout",
}
_CONNECTION_SQLSTATES = {"57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004"}
_STATEMENT_CACHE_SIZE = 256


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a pg8000 DatabaseError, or None."""
    if isinstance(exc, pg8000.exceptions.DatabaseError) and exc.args and isinstance(exc.args[0], dict):
        return exc.args[0].get("C")
    return None


def translate_error(exc: BaseException) -> errors.OrderpipeError:
    """Map a driver error into the error tree, keeping SQL and row values out of the message."""
    code = sqlstate(exc)
    if code is not None:
        info = exc.args[0]
        constraint = info.get("n")
        details = {"sqlstate": code}
        if constraint:
            details["constraint"] = constraint
        if code == "23505":
            return errors.AlreadyExists(details=details)
        if code.startswith("23"):
            return errors.IntegrityError(details=details)
        if code in _RETRYABLE_SQLSTATES:
            reason = _RETRYABLE_SQLSTATES[code]
            return errors.RetryableDatabaseError(f"The database reported a {reason}.", details=details)
        if code in _CONNECTION_SQLSTATES:
            return errors.DatabaseUnavailable(details=details)
        if code == "22P02" or code.startswith("22"):
            return errors.ValidationFailed("A value has the wrong form.", details=details)
        return errors.OrderpipeError("The database refused the statement.", details=details)
    if isinstance(exc, UnicodeEncodeError):
        # A parameter that is not UTF-8 at all (an unpaired surrogate): refused while the statement was
        # being encoded, before anything was sent, so the connection is fine and the caller sent it.
        return errors.ValidationFailed("A text value is not valid Unicode.")
    # InterfaceError, OSError, a closed socket: the connection is gone.
    return errors.DatabaseUnavailable()


_TIMESTAMPTZ_OID, _DATE_OID = 1184, 1082


def _timestamptz_in(text: str) -> Any:
    # `2026-11-23 17:26:08.123456+00` — fromisoformat is ~50× faster than pg8000's strptime; anything
    # it cannot read (infinity, BC dates, years past 9999) goes to pg8000's own parser, as before.
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return pg8000.converters.timestamptz_in(text)


def _date_in(text: str) -> Any:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return pg8000.converters.date_in(text)


def _use_fast_date_parsers(raw: Any) -> None:
    """Parse timestamptz and date columns of this session faster (same values; before any statement is prepared)."""
    register = getattr(raw, "register_in_adapter", None)
    if register is not None:
        register(_TIMESTAMPTZ_OID, _timestamptz_in)
        register(_DATE_OID, _date_in)


class Connection:
    """One database session. Not thread-safe: a pool hands it to one thread at a time."""

    def __init__(self, raw: Any, *, label: str = "pg"):
        self._raw = raw
        _use_fast_date_parsers(raw)
        self._statements: OrderedDict[str, tuple[bytes, Any, Any, Any]] = OrderedDict()
        self.label = label
        self.broken = False
        self._after_commit: list[Any] = []
        self._depth = 0

    # --- queries ----------------------------------------------------------------------------

    def fetch_all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Run a statement and return every row as a dict."""
        context = self._execute(sql, params)
        if context.rows is None or not context.columns:
            return []
        names = [column["name"] for column in context.columns]
        return [dict(zip(names, row, strict=True)) for row in context.rows]

    def fetch_one(self, sql: str, **params: Any) -> dict[str, Any] | None:
        """Run a statement and return its first row, or None."""
        rows = self.fetch_all(sql, **params)
        return rows[0] if rows else None

    def fetch_value(self, sql: str, **params: Any) -> Any:
        """Run a statement and return the first column of its first row, or None."""
        row = self.fetch_one(sql, **params)
        return None if row is None else next(iter(row.values()))

    def execute(self, sql: str, **params: Any) -> int:
        """Run a statement; return the number of rows it touched."""
        return self._execute(sql, params).row_count

    def execute_script(self, sql: str) -> None:
        """Run several statements without parameters (migrations)."""
        try:
            self._raw.execute_simple(sql)
        except Exception as exc:
            raise self._fail(exc) from exc

    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        try:
            return self._run_prepared(sql, params)
        except pg8000.exceptions.DatabaseError as exc:
            if sqlstate(exc) == "0A000" and "cached plan" in str(exc):
                # The schema changed under a cached statement (a migration ran): prepare again once.
                self._forget_statements()
                try:
                    return self._run_prepared(sql, params)
                except Exception as again:
                    raise self._fail(again) from again
            raise self._fail(exc) from exc
        except Exception as exc:
            raise self._fail(exc) from exc

    def _run_prepared(self, sql: str, params: dict[str, Any]) -> Any:
        prepared = self._statements.get(sql)
        if prepared is None:
            statement, make_vals = to_statement(sql)
            name_bin, columns, input_funcs = self._raw.prepare_statement(statement, ())
            prepared = (name_bin, columns, input_funcs, make_vals)
            self._statements[sql] = prepared
            if len(self._statements) > _STATEMENT_CACHE_SIZE:
                _, (old_name, *_rest) = self._statements.popitem(last=False)
                self._raw.close_prepared_statement(old_name)
        else:
            self._statements.move_to_end(sql)
        name_bin, columns, input_funcs, make_vals = prepared
        values = make_params(self._raw.py_types, make_vals(params))
        return self._raw.execute_named(name_bin, values, columns, input_funcs, sql)

    def _forget_statements(self) -> None:
        for name_bin, *_ in self._statements.values():
            try:
                self._raw.close_prepared_statement(name_bin)
            except Exception:  # noqa: S110 - best effort; the statements die with the session anyway
                pass
        self._statements.clear()

    def _fail(self, exc: BaseException) -> errors.OrderpipeError:
        translated = translate_error(exc)
        if isinstance(translated, errors.DatabaseUnavailable):
            self.broken = True
        return translated

    # --- transactions -----------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN … COMMIT, or ROLLBACK on error; nested use becomes a savepoint."""
        if self._depth:
            savepoint = f"sp_{self._depth}"
            self.execute_script(f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if not self.broken:
                    self.execute_script(f"ROLLBACK TO SAVEPOINT {savepoint}")
                raise
            self._depth -= 1
            self.execute_script(f"RELEASE SAVEPOINT {savepoint}")
            return

        self.execute_script("BEGIN")
        self._depth = 1
        self._after_commit = []
        try:
            yield self
        except BaseException:
            self._depth = 0
            self._after_commit = []
            if not self.broken:
                try:
                    self.execute_script("ROLLBACK")
                except errors.OrderpipeError:
                    self.broken = True
            raise
        self._depth = 0
        callbacks, self._after_commit = self._after_commit, []
        self.execute_script("COMMIT")
        for callback in callbacks:
            try:
                callback()
            except Exception:
                # A failed after-commit hand-off loses nothing: the row is committed and reconcile finds it.
                log.warning("after-commit callback failed", exc_info=True)

    def after_commit(self, callback: Any) -> None:
        """Run `callback` once the current transaction has committed (never if it rolls back)."""
        if not self._depth:
            raise RuntimeError("after_commit needs an open transaction")
        self._after_commit.append(callback)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """True when the session is outside any transaction (safe to hand to the next user)."""
        return getattr(self._raw, "_transaction_status", b"I") == b"I"

    def reset(self) -> None:
        """Make the session clean for the next user, or mark it broken."""
        if self.broken:
            return
        try:
            if not self.idle:
                self._raw.execute_simple("ROLLBACK")
        except Exception:
            self.broken = True

    def close(self) -> None:
        try:
            self._raw.close()
        except Exception:  # noqa: S110 - closing a dead socket is allowed to fail
            pass
