"""Where connections come from, and the small per-process pool that lends them out.

Three sources, chosen from settings: DATABASE_URL (TCP or a unix socket), CLOUD_SQL_INSTANCE
through cloud-sql-python-connector, or the embedded server the dev tooling started (which
reaches us as a DATABASE_URL too). Nothing here connects until the first connection is asked for.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlparse

import pg8000.native

from shared import errors
from shared.config import Settings
from shared.db.connection import Connection

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_ATTEMPTS = 4
TRANSACTION_ATTEMPTS = 4


def parse_database_url(url: str) -> dict[str, Any]:
    """pg8000 connect() arguments from a libpq-style URL.

    Accepts `postgresql://user:pass@host:port/db` and the unix-socket forms
    `postgresql://user@/db?host=/socket/dir` and `postgresql:///db?host=/socket/dir&port=5433`.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise errors.ConfigurationError("DATABASE_URL must start with postgresql://")
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    args: dict[str, Any] = {
        "user": unquote(parsed.username) if parsed.username else query.get("user", "postgres"),
        "database": unquote(parsed.path.lstrip("/")) or query.get("dbname", "postgres"),
    }
    password = unquote(parsed.password) if parsed.password else query.get("password")
    if password:
        args["password"] = password
    port = parsed.port or int(query.get("port", 5432))
    socket_dir = query.get("host") or (unquote(parsed.hostname) if parsed.hostname and "/" in parsed.hostname else None)
    if socket_dir and socket_dir.startswith("/"):
        args["unix_sock"] = f"{socket_dir.rstrip('/')}/.s.PGSQL.{port}"
    else:
        args["host"] = parsed.hostname or "localhost"
        args["port"] = port
    return args


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parsed = urlparse(url)
    return parsed._replace(path="/" + database).geturl()


class ConnectionFactory:
    """Opens one raw pg8000 connection per call, from the configured source."""

    def __init__(self, settings: Settings, password_source: Callable[[], str] | None = None):
        self._settings = settings
        self._password_source = password_source
        self._connector: Any = None
        self._lock = threading.Lock()
        # A socket timeout above the statement timeout: it only fires when the server is gone.
        self._socket_timeout = settings.db_statement_timeout_ms / 1000 + 15

    @property
    def description(self) -> str:
        if self._settings.database_url:
            args = parse_database_url(self._settings.database_url)
            where = args.get("unix_sock") or f"{args['host']}:{args['port']}"
            return f"postgresql at {where}/{args['database']}"
        if self._settings.cloud_sql_instance:
            return f"cloud sql {self._settings.cloud_sql_instance}/{self._settings.db_name}"
        return "no database configured"

    def open(self) -> Any:
        s = self._settings
        if s.database_url:
            args = parse_database_url(s.database_url)
            return pg8000.native.Connection(
                **args, timeout=self._socket_timeout, application_name="orderpipe"
            )
        if s.cloud_sql_instance:
            return self._open_cloud_sql()
        raise errors.ConfigurationError("Set DATABASE_URL or CLOUD_SQL_INSTANCE (or run under `orderpipe dev`).")

    def _open_cloud_sql(self) -> Any:
        from google.cloud.sql.connector import Connector, IPTypes  # imported on first use only

        s = self._settings
        with self._lock:
            if self._connector is None:
                # Lazy refresh: serverless instances may be throttled between requests (GCP.md).
                self._connector = Connector(refresh_strategy="lazy", ip_type=IPTypes[s.db_ip_type.upper()])
        kwargs: dict[str, Any] = {"user": s.db_user, "db": s.db_name, "timeout": int(s.db_connect_timeout_s)}
        if s.db_iam_auth:
            kwargs["enable_iam_auth"] = True
        else:
            if self._password_source is None:
                raise errors.ConfigurationError("Cloud SQL password auth needs the db-password secret.")
            kwargs["password"] = self._password_source()
        return self._connector.connect(s.cloud_sql_instance, "pg8000", **kwargs)

    def close(self) -> None:
        if self._connector is not None:
            self._connector.close()
            self._connector = None


class Database:
    """A small pool of sessions with timeouts set, lent one at a time."""

    def __init__(self, settings: Settings, factory: ConnectionFactory | None = None):
        self.settings = settings
        self.factory = factory or ConnectionFactory(settings)
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(settings.db_pool_size)
        self._closed = False

    # --- lending --------------------------------------------------------------------------

    @contextmanager
    def connection(self, *, wait_s: float = 30.0) -> Iterator[Connection]:
        """Borrow a session for the duration of the block."""
        if not self._slots.acquire(timeout=wait_s):
            raise errors.DatabaseUnavailable("Every database connection of this instance is busy.")
        conn: Connection | None = None
        try:
            conn = self._take()
            yield conn
        finally:
            if conn is not None:
                conn.reset()
                if conn.broken or self._closed:
                    conn.close()
                else:
                    self._idle.put(conn)
            self._slots.release()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Borrow a session and run the block in one transaction (no re-run; see `run_in_transaction`)."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def run_in_transaction(self, work: Callable[[Connection], T], *, attempts: int = TRANSACTION_ATTEMPTS) -> T:
        """Run `work(conn)` in one transaction, re-running it on deadlock, serialization or lost connection.

        `work` must be safe to re-run: it only touches the database through `conn`.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as conn:
                    return work(conn)
            except (errors.RetryableDatabaseError, errors.DatabaseUnavailable) as exc:
                if attempt == attempts:
                    raise
                delay = _backoff(attempt)
                log.info("transaction retried", extra={"attempt": attempt, "reason": exc.code, "delay_s": delay})
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _take(self) -> Connection:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return self._open_with_retry()
            if not conn.broken:
                return conn
            conn.close()

    def _open_with_retry(self) -> Connection:
        last: BaseException | None = None
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                raw = self.factory.open()
                conn = Connection(raw)
                conn.execute_script(
                    f"SET statement_timeout = {int(self.settings.db_statement_timeout_ms)};"
                    f" SET lock_timeout = {int(self.settings.db_lock_timeout_ms)};"
                    " SET idle_in_transaction_session_timeout = 60000;"
                    " SET TIME ZONE 'UTC';"
                )
                return conn
            except errors.ConfigurationError:
                raise
            except Exception as exc:  # OSError, InterfaceError, DatabaseError during startup
                last = exc
                if attempt < CONNECT_ATTEMPTS:
                    time.sleep(_backoff(attempt))
        log.warning("database unreachable", extra={"where": self.factory.description, "error": type(last).__name__})
        raise errors.DatabaseUnavailable() from last

    def close(self) -> None:
        """Close every idle session (borrowed ones close when returned)."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        self.factory.close()


def _backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter: 0.05 s, 0.1 s, 0.2 s … capped."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311


@contextmanager
def advisory_lock(conn: Connection, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold a session-level advisory lock named `name` for the block; yields False if not taken."""
    if wait:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(:name, 0))", name=name)
        taken = True
    else:
        taken = bool(conn.fetch_value("SELECT pg_try_advisory_lock(hashtextextended(:name, 0)) AS taken", name=name))
    try:
        yield taken
    finally:
        if taken and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(:name, 0))", name=name)
