"""Migrations: applied once each, refused when edited, safe to run concurrently, equal to schema.sql."""

import os
import shutil
import subprocess
import sys

import pg8000.native
import pytest

from shared.db import migrations
from shared.db.connection import Connection
from shared.db.pool import parse_database_url

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, ordinal_position
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
        ORDER BY table_name, column_name""",
    "constraints": """
        SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
          AND conrelid::regclass::text <> 'schema_migrations'
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> 'schema_migrations' ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_functiondef(oid) AS def FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text AS tbl, tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger
        WHERE NOT tgisinternal ORDER BY 1, 2""",
    "sequences": "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = 'public' ORDER BY 1",
}


def connect(url):
    return Connection(pg8000.native.Connection(**parse_database_url(url)))


def describe(conn):
    return {name: conn.fetch_all(sql) for name, sql in CATALOG_QUERIES.items()}


def test_migrations_produce_exactly_the_declared_schema(empty_database_url, server_url):
    from shared.db.pool import with_database
    from tests.conftest import create_database, drop_database

    migrated = connect(empty_database_url)
    migrations.migrate(migrated)
    declared_name = create_database(server_url)
    declared = connect(with_database(server_url, declared_name))
    try:
        declared.execute_script(migrations.SCHEMA_FILE.read_text())
        assert describe(migrated) == describe(declared)
    finally:
        migrated.close()
        declared.close()
        drop_database(server_url, declared_name)


def test_migrate_applies_each_migration_once_and_then_nothing(empty_database_url):
    conn = connect(empty_database_url)
    try:
        first = migrations.migrate(conn)
        assert [m.version for m in first] == [m.version for m in migrations.discover()]
        assert migrations.migrate(conn) == []
        assert migrations.is_current(conn)
        assert conn.fetch_value("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        conn.close()


def test_an_edited_applied_migration_is_refused_loudly(empty_database_url, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, folder)
    conn = connect(empty_database_url)
    try:
        migrations.migrate(conn, folder)
        edited = sorted(folder.glob("*.sql"))[0]
        edited.write_text(edited.read_text() + "\n-- a quiet edit\n")
        with pytest.raises(migrations.MigrationChanged) as caught:
            migrations.migrate(conn, folder)
        assert "0001_core" in caught.value.message
        assert [s.state for s in migrations.status(conn, folder)][0] == "changed"
        assert not migrations.is_current(conn, folder)
    finally:
        conn.close()


def test_pending_migrations_show_as_pending_until_applied(empty_database_url, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, folder)
    (folder / "9999_probe_table.sql").write_text("CREATE TABLE probe_table (id int PRIMARY KEY);\n")
    conn = connect(empty_database_url)
    try:
        migrations.migrate(conn)  # the real ones only
        states = {s.name: s.state for s in migrations.status(conn, folder)}
        assert states["probe_table"] == "pending"
        applied = migrations.migrate(conn, folder)
        assert [m.name for m in applied] == ["probe_table"]
    finally:
        conn.close()


def test_two_concurrent_orderpipe_migrate_runs_both_succeed_and_apply_once(empty_database_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": empty_database_url, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "shared.cli", "migrate", "--data-dir", str(tmp_path / "unused")]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    printed = "".join(out for out, _ in outputs)
    assert printed.count("applied 0001_core") == 1
    assert "up to date" in printed
    conn = connect(empty_database_url)
    try:
        assert conn.fetch_value("SELECT count(*) FROM schema_migrations WHERE version = 1") == 1
    finally:
        conn.close()
