"""Numbered SQL migrations, applied once each, in order, under an advisory lock.

`migrations/NNNN_name.sql` are applied in order, each in its own transaction together with its
row in `schema_migrations` (version, name, sha256 checksum). A file changed after it was applied
is refused loudly: the database and the code would no longer agree on what the schema is.
`schema.sql` is the declared whole schema; a test proves the migrations produce exactly it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared import errors
from shared.db.connection import Connection
from shared.db.pool import advisory_lock

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SCHEMA_FILE = Path(__file__).parent / "schema.sql"
_LOCK_NAME = "orderpipe:migrate"
_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES (:version, :name, :checksum)"
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL AS present"


class MigrationChanged(errors.ConfigurationError):
    code = "migration_changed"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    state: str  # applied | pending | changed | unknown (applied here, file missing)
    applied_at: datetime | None


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if not match:
            raise errors.ConfigurationError(f"Migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise errors.ConfigurationError("Two migration files share a version number")
    return found


def status(conn: Connection, directory: Path = MIGRATIONS_DIR) -> list[MigrationState]:
    """Each known migration and whether it is applied, pending, or changed since it was applied."""
    applied = {}
    if conn.fetch_value(MIGRATIONS_TABLE_EXISTS):
        applied = {row["version"]: row for row in conn.fetch_all(SELECT_APPLIED)}
    states = []
    files = discover(directory)
    for migration in files:
        row = applied.get(migration.version)
        if row is None:
            states.append(MigrationState(migration.version, migration.name, "pending", None))
        elif row["checksum"] != migration.checksum:
            states.append(MigrationState(migration.version, migration.name, "changed", row["applied_at"]))
        else:
            states.append(MigrationState(migration.version, migration.name, "applied", row["applied_at"]))
    known = {m.version for m in files}
    for version, row in applied.items():
        if version not in known:
            states.append(MigrationState(version, row["name"], "unknown", row["applied_at"]))
    return sorted(states, key=lambda s: s.version)


def is_current(conn: Connection, directory: Path = MIGRATIONS_DIR) -> bool:
    """True when every migration is applied unchanged."""
    return all(state.state == "applied" for state in status(conn, directory))


def migrate(conn: Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration; return the ones applied by this call.

    Concurrent callers wait on one advisory lock, so each migration runs exactly once.
    """
    with advisory_lock(conn, _LOCK_NAME):
        conn.execute_script(CREATE_MIGRATIONS_TABLE)
        states = {s.version: s for s in status(conn, directory)}
        changed = [s for s in states.values() if s.state == "changed"]
        if changed:
            names = ", ".join(f"{s.version:04d}_{s.name}" for s in changed)
            raise MigrationChanged(
                f"Applied migration(s) {names} were edited after they ran. Never edit an applied "
                "migration; add a new one. (Restore the file to what was applied.)"
            )
        applied_now = []
        for migration in discover(directory):
            if states[migration.version].state == "applied":
                continue
            with conn.transaction():
                conn.execute_script(migration.sql)
                conn.execute(INSERT_APPLIED, version=migration.version, name=migration.name,
                             checksum=migration.checksum)
            applied_now.append(migration)
        return applied_now
