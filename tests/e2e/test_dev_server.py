"""`orderpipe dev` as a user runs it: starts, serves, stops cleanly, keeps its rows, resumes its jobs."""

import subprocess

import httpx

from shared.db.embedded import EmbeddedPostgres
from tests.helpers import DevProcess, probe_runs, wait_for


def postgres_processes_for(pgdata):
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if "postgres" in line and str(pgdata) in line]


def test_dev_on_the_embedded_server_serves_stops_cleanly_and_keeps_rows(tmp_path):
    data_dir = tmp_path / "data"
    env = {"LOG_LEVEL": "WARNING", "DATABASE_URL": ""}  # the embedded default, even when the suite uses a server
    with DevProcess(data_dir, env) as dev:
        assert httpx.get(f"{dev.url}/self_test/healthz").status_code == 200
        assert httpx.get(f"{dev.url}/self_test/readyz").status_code == 200
        url = EmbeddedPostgres(data_dir).url()
        import pg8000.native

        from shared.db.pool import parse_database_url

        conn = pg8000.native.Connection(**parse_database_url(url))
        conn.run("INSERT INTO vendors (business_name) VALUES ('survives a restart')")
        conn.close()
        assert dev.terminate() == 0
    assert postgres_processes_for(data_dir / "pgdata") == []

    with DevProcess(data_dir, env) as dev:
        conn = pg8000.native.Connection(**parse_database_url(EmbeddedPostgres(data_dir).url()))
        names = [row[0] for row in conn.run("SELECT business_name FROM vendors")]
        conn.close()
        assert "survives a restart" in names
        assert "Everest Gear" in names  # the demo catalog, seeded once
        assert dev.terminate() == 0
    assert postgres_processes_for(data_dir / "pgdata") == []


def test_dev_runs_a_committed_job_and_resumes_one_interrupted_by_sigkill(tmp_path, database_url, db, app_env):
    from shared import jobs
    from shared.jobs import store

    data_dir = tmp_path / "dev"
    env = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "JOB_LEASE_SECONDS": "2",
           "ORDERPIPE_PROBE_JOBS": "1"}
    dev = DevProcess(data_dir, env).start()
    try:
        with db.transaction() as conn:
            quick = jobs.enqueue(conn, "probe", {"record": "quick"})
            slow = jobs.enqueue(conn, "probe", {"record": "slow", "sleep_s": 60, "sleep_attempts": 1})

        def status(job_id):
            with db.connection() as conn:
                return store.get(conn, job_id).status

        wait_for(lambda: status(quick.job_id) == "completed", timeout=5, what="the quick job under dev")
        wait_for(lambda: probe_runs(data_dir, "slow"), timeout=10, what="the slow job to start")
        dev.kill()  # SIGKILL in the middle of the slow job
        assert status(slow.job_id) == "running"
        dev = DevProcess(data_dir, env, port=dev.port, sim_port=dev.sim_port).start()
        wait_for(lambda: status(slow.job_id) == "completed", timeout=30, what="the interrupted job to finish")
        assert [attempt for _, attempt, _ in probe_runs(data_dir, "slow")] == [1, 2]
        assert len(probe_runs(data_dir, "quick")) == 1
    finally:
        if dev.process.poll() is None:
            dev.terminate()
