"""The pool and transactions against a real PostgreSQL."""

import threading

import pytest

from shared import errors
from shared.db.pool import advisory_lock


def count_vendors(db):
    with db.connection() as conn:
        return conn.fetch_value("SELECT count(*) FROM vendors")


def test_a_committed_transaction_is_visible_and_a_failed_one_leaves_nothing(db):
    with db.transaction() as conn:
        conn.execute("INSERT INTO vendors (business_name) VALUES ('kept')")
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO vendors (business_name) VALUES ('rolled back')")
        raise RuntimeError("boom")
    with db.connection() as conn:
        assert [r["business_name"] for r in conn.fetch_all("SELECT business_name FROM vendors")] == ["kept"]


def test_after_commit_callbacks_run_only_after_a_commit(db):
    calls = []
    with db.transaction() as conn:
        conn.after_commit(lambda: calls.append(conn.fetch_value("SELECT count(*) FROM vendors")))
        conn.execute("INSERT INTO vendors (business_name) VALUES ('v')")
        assert calls == []
    assert calls == [1]
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.after_commit(lambda: calls.append("never"))
        raise RuntimeError
    assert calls == [1]


def test_nested_transactions_are_savepoints(db):
    with db.transaction() as conn:
        conn.execute("INSERT INTO vendors (business_name) VALUES ('outer')")
        with pytest.raises(errors.IntegrityError), conn.transaction():
            conn.execute("INSERT INTO vendors (business_name, platform_fee_bps) VALUES ('bad', 99999)")
        conn.execute("INSERT INTO vendors (business_name) VALUES ('after')")
    assert count_vendors(db) == 2


def test_unique_violations_become_already_exists(db):
    with db.transaction() as conn:
        vendor = conn.fetch_value("INSERT INTO vendors (business_name) VALUES ('v') RETURNING vendor_id")
    with pytest.raises(errors.AlreadyExists), db.transaction() as conn:
        conn.execute("INSERT INTO vendors (vendor_id, business_name) VALUES (:id, 'dup')", id=str(vendor))


def test_sessions_carry_statement_and_lock_timeouts(db):
    with db.connection() as conn:
        assert conn.fetch_value("SHOW statement_timeout") == "15s"
        assert conn.fetch_value("SHOW lock_timeout") == "5s"


def test_a_deadlock_is_retryable_and_run_in_transaction_recovers(db):
    with db.transaction() as conn:
        a = conn.fetch_value("INSERT INTO vendors (business_name) VALUES ('a') RETURNING vendor_id")
        b = conn.fetch_value("INSERT INTO vendors (business_name) VALUES ('b') RETURNING vendor_id")
    barrier = threading.Barrier(2)
    outcomes = []

    def lock_both(first, second):
        attempts = {"n": 0}

        def work(conn):
            attempts["n"] += 1
            conn.execute("UPDATE vendors SET platform_fee_bps = platform_fee_bps + 1 WHERE vendor_id = :id",
                         id=str(first))
            if attempts["n"] == 1:
                barrier.wait(timeout=10)
            conn.execute("UPDATE vendors SET platform_fee_bps = platform_fee_bps + 1 WHERE vendor_id = :id",
                         id=str(second))
            return attempts["n"]

        outcomes.append(db.run_in_transaction(work))

    threads = [threading.Thread(target=lock_both, args=pair) for pair in ((a, b), (b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 2
    assert max(outcomes) >= 2  # one of them was chosen as the deadlock victim and re-ran
    with db.connection() as conn:
        fees = conn.fetch_all("SELECT platform_fee_bps FROM vendors ORDER BY business_name")
    assert [row["platform_fee_bps"] for row in fees] == [1002, 1002]


def test_a_killed_session_is_replaced_by_the_pool(db):
    with db.connection() as doomed:
        doomed_pid = doomed.fetch_value("SELECT pg_backend_pid()")
        with db.connection() as killer:
            killer.execute("SELECT pg_terminate_backend(:pid)", pid=doomed_pid)
    # The dead session went back to the pool; the next transaction finds it broken and opens a new one.
    assert db.run_in_transaction(lambda conn: conn.fetch_value("SELECT pg_backend_pid()")) != doomed_pid


def test_advisory_lock_is_exclusive_across_sessions(db):
    with db.connection() as first, db.connection() as second:
        with advisory_lock(first, "probe", wait=False) as taken_first:
            assert taken_first
            with advisory_lock(second, "probe", wait=False) as taken_second:
                assert not taken_second
        with advisory_lock(second, "probe", wait=False) as taken_after:
            assert taken_after


def test_nothing_connects_at_import_time(tmp_path):
    import subprocess
    import sys

    code = ("import shared.runtime, shared.jobs, shared.flows.health, shared.http, shared.devserver;"
            "import shared.db.pool as p; print('ok')")
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
