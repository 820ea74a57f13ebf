"""The job layer on a real PostgreSQL: outbox, coalescing, claiming, retries, dead letters, rescue, timers."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared import jobs
from shared.jobs import store
from shared.jobs.worker import run_job
from tests.helpers import WorkerServer, probe_runs, wait_for


class RecordingDispatcher:
    """A task queue double at the Protocol boundary: remembers what it was handed."""

    def __init__(self):
        self.dispatched, self.cancelled = [], []

    def dispatch(self, handed):
        self.dispatched.extend(job.job_id for job in handed)
        return [job.job_id for job in handed]

    def cancel(self, job):
        self.cancelled.append(job.job_id)

    def check(self):
        return "ok"


@pytest.fixture
def recording(runtime):
    dispatcher = RecordingDispatcher()
    jobs.set_dispatcher(dispatcher)
    return dispatcher


def job_status(db, job_id):
    with db.connection() as conn:
        return store.get(conn, job_id).status


def test_a_job_written_in_a_rolled_back_transaction_never_exists_nor_is_handed_over(db, recording):
    with pytest.raises(RuntimeError), db.transaction() as conn:
        jobs.enqueue(conn, "noop")
        raise RuntimeError("the state change failed")
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM jobs") == 0
    assert recording.dispatched == []


def test_a_committed_job_is_handed_over_after_commit_only(db, recording):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "noop")
        assert recording.dispatched == []
    assert recording.dispatched == [job.job_id]


def test_enqueue_outside_a_transaction_is_refused(db):
    with db.connection() as conn, pytest.raises(RuntimeError):
        jobs.enqueue(conn, "noop")


def test_a_key_coalesces_waiting_jobs_but_not_running_ones(db, runtime, recording):
    with db.transaction() as conn:
        first = jobs.enqueue(conn, "noop", {"n": 1}, key="metrics:v1:2026-11-23")
        again = jobs.enqueue(conn, "noop", {"n": 2}, key="metrics:v1:2026-11-23")
    assert again.job_id == first.job_id
    assert recording.dispatched == [first.job_id]
    with db.connection() as conn:
        store.claim(conn, first.job_id, worker="w", lease_s=60)
    with db.transaction() as conn:
        later = jobs.enqueue(conn, "noop", {"n": 3}, key="metrics:v1:2026-11-23")
    assert later.job_id != first.job_id


def test_the_same_job_delivered_five_times_at_once_runs_its_handler_once(db, runtime, app_env):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"record": "five", "sleep_s": 0.3})
    barrier = threading.Barrier(5)

    def deliver(_):
        barrier.wait(5)
        return run_job(db, runtime.settings, job.job_id, retry_count=0)

    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(deliver, range(5)))
    assert len(probe_runs(app_env["ORDERPIPE_DATA_DIR"], "five")) == 1
    assert [o.status for o in outcomes].count("completed") == 1
    assert all(o.retry for o in outcomes if o.status != "completed")  # the others were told to come back
    # A duplicate delivery after completion is acknowledged and does nothing.
    late = run_job(db, runtime.settings, job.job_id, retry_count=3)
    assert (late.status, late.retry) == ("completed", False)
    assert len(probe_runs(app_env["ORDERPIPE_DATA_DIR"], "five")) == 1


def test_a_failing_handler_rolls_back_its_effects_and_is_retryable(db, runtime):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"fail_times": 1})
    outcome = run_job(db, runtime.settings, job.job_id, retry_count=0)
    assert (outcome.status, outcome.retry) == ("retryable", True)
    assert outcome.retry_after_s >= 1
    with db.connection() as conn:
        failed = store.get(conn, job.job_id)
    assert failed.last_error.startswith("unavailable: probe failing on attempt 1")
    assert run_job(db, runtime.settings, job.job_id, retry_count=1).status == "completed"


def test_a_permanent_error_dead_letters_at_once(db, runtime):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"permanent": True})
    outcome = run_job(db, runtime.settings, job.job_id, retry_count=0)
    assert (outcome.status, outcome.retry) == ("dead", False)
    with db.connection() as conn:
        assert "permanent" in store.get(conn, job.job_id).last_error


def test_the_queues_last_attempt_dead_letters_even_below_the_jobs_own_limit(db, runtime):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"fail_always": True})
    last = runtime.settings.jobs_max_attempts - 1
    assert run_job(db, runtime.settings, job.job_id, retry_count=last).status == "dead"


def test_an_unknown_kind_is_dead_lettered_not_retried_forever(db, runtime):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "no_such_kind")
    assert run_job(db, runtime.settings, job.job_id).status == "dead"


def test_an_unknown_job_id_is_acknowledged(db, runtime):
    outcome = run_job(db, runtime.settings, 987654321)
    assert (outcome.status, outcome.retry) == ("unknown", False)


def test_a_job_not_yet_due_is_refused_with_the_wait(db, runtime):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "noop", run_at=datetime.now(UTC) + timedelta(seconds=30))
    outcome = run_job(db, runtime.settings, job.job_id)
    assert outcome.retry and 25 <= outcome.retry_after_s <= 31


def test_a_stale_lease_is_rescued_and_the_job_runs_to_completion(db, runtime, app_env):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"record": "stale"})
    with db.connection() as conn:
        claimed = store.claim(conn, job.job_id, worker="a-worker-that-dies", lease_s=1)
    assert claimed.status == "running"
    assert jobs.rescue_stale_jobs(db) == {"rescued": 0, "dead": 0, "superseded": 0}  # lease still live
    wait_for(lambda: jobs.rescue_stale_jobs(db)["rescued"] == 1, timeout=5, what="the lease to expire")
    with db.connection() as conn:
        rescued = store.get(conn, job.job_id)
    assert (rescued.status, rescued.attempts, rescued.dispatch_generation) == ("retryable", 1, 1)
    assert run_job(db, runtime.settings, job.job_id).status == "completed"
    assert [attempt for _, attempt, _ in probe_runs(app_env["ORDERPIPE_DATA_DIR"], "stale")] == [2]


def test_a_stale_job_on_its_last_attempt_becomes_dead(db, runtime):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "noop", max_attempts=1)
    with db.connection() as conn:
        store.claim(conn, job.job_id, worker="dies", lease_s=1)
    wait_for(lambda: jobs.rescue_stale_jobs(db)["dead"] == 1, timeout=5, what="the lease to expire")
    assert job_status(db, job.job_id) == "dead"


def test_retry_brings_a_dead_job_back_with_a_new_generation(db, runtime, recording):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"permanent": True})
    run_job(db, runtime.settings, job.job_id)
    revived = jobs.retry(db, job.job_id)
    assert (revived.status, revived.attempts, revived.dispatch_generation) == ("pending", 0, 1)
    assert recording.dispatched == [job.job_id, job.job_id]
    assert jobs.retry(db, job.job_id) is None  # pending is not dead: nothing to retry


def test_cancel_withdraws_a_waiting_job_and_its_task(db, runtime, recording):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "noop", run_at=datetime.now(UTC) + timedelta(hours=1), queue="timers")
    with db.transaction() as conn:
        assert jobs.cancel(conn, job.job_id).status == "cancelled"
        assert recording.cancelled == []
    assert recording.cancelled == [job.job_id]
    outcome = run_job(db, runtime.settings, job.job_id)
    assert (outcome.status, outcome.retry) == ("cancelled", False)


def test_dispatch_due_jobs_hands_over_what_was_never_handed_over(db, runtime, recording):
    with db.transaction() as conn:
        never = store.insert(conn, kind="noop", queue="orders", payload={}, key=None, run_at=None, max_attempts=3)[0]
        far = store.insert(conn, kind="noop", queue="timers", payload={}, key=None,
                           run_at=datetime.now(UTC) + timedelta(days=45), max_attempts=3)[0]
    assert jobs.dispatch_due_jobs(db) == {"found": 1, "dispatched": 1}
    assert recording.dispatched == [never.job_id]
    assert far.job_id not in recording.dispatched  # beyond Cloud Tasks' 30 days: waits for a later reconcile


def test_a_lost_task_gets_a_new_generation(db, runtime, recording):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "noop")
        conn.execute("""UPDATE jobs SET dispatched_at = now() - interval '1 hour',
                        updated_at = now() - interval '1 hour', run_at = now() - interval '1 hour'
                        WHERE job_id = :id""", id=job.job_id)
    recording.dispatched.clear()
    assert jobs.dispatch_due_jobs(db)["dispatched"] == 1
    with db.connection() as conn:
        assert store.get(conn, job.job_id).dispatch_generation == 1


# --- through the local task queue over HTTP ----------------------------------------------------


def test_a_committed_job_runs_once_through_the_local_queue_within_a_second(db, runtime, app_env):
    with WorkerServer(runtime):
        started = time.time()
        with db.transaction() as conn:
            job = jobs.enqueue(conn, "probe", {"record": "fast"})
        wait_for(lambda: job_status(db, job.job_id) == "completed", timeout=5, what="the job to complete")
        runs = probe_runs(app_env["ORDERPIPE_DATA_DIR"], "fast")
    assert len(runs) == 1
    assert runs[0][2] - started < 1.0


def test_transient_failures_are_retried_with_the_queue_backoff(db, runtime, app_env, monkeypatch):
    monkeypatch.setenv("JOBS_MIN_BACKOFF_S", "0.4")
    monkeypatch.setenv("JOBS_MAX_DOUBLINGS", "3")
    from shared.runtime import get_runtime, reset_runtime

    reset_runtime()
    rt = get_runtime()
    with WorkerServer(rt):
        with rt.db.transaction() as conn:
            job = jobs.enqueue(conn, "probe", {"record": "backoff", "fail_times": 2})
        wait_for(lambda: job_status(rt.db, job.job_id) == "completed", timeout=15, what="the job to complete")
    runs = probe_runs(app_env["ORDERPIPE_DATA_DIR"], "backoff")
    assert [attempt for _, attempt, _ in runs] == [1, 2, 3]
    gaps = [b[2] - a[2] for a, b in zip(runs, runs[1:], strict=False)]
    assert gaps[0] >= 0.4 * 0.95 and gaps[1] >= 0.8 * 0.95  # 0.4 s, then doubled


def test_a_job_failing_every_time_ends_dead_and_cli_retry_makes_it_run(db, runtime, app_env, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("JOBS_MIN_BACKOFF_S", "0.05")
    monkeypatch.setenv("JOBS_MAX_ATTEMPTS", "3")
    from shared.runtime import get_runtime, reset_runtime

    reset_runtime()
    rt = get_runtime()
    with WorkerServer(rt):
        with rt.db.transaction() as conn:
            job = jobs.enqueue(conn, "probe", {"record": "dead", "fail_before_generation": 1})
        wait_for(lambda: job_status(rt.db, job.job_id) == "dead", timeout=15, what="the job to be dead")
        with rt.db.connection() as conn:
            dead = store.get(conn, job.job_id)
        assert dead.attempts == 3 and "failing until generation" in dead.last_error
        cli = subprocess.run([sys.executable, "-m", "shared.cli", "jobs", "retry", str(job.job_id)],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        wait_for(lambda: job_status(rt.db, job.job_id) == "completed", timeout=10, what="the retried job")
    assert [attempt for _, attempt, _ in probe_runs(app_env["ORDERPIPE_DATA_DIR"], "dead")] == [1, 2, 3, 1]


def test_a_job_scheduled_three_seconds_ahead_runs_no_earlier_and_a_cancelled_one_never(db, runtime, app_env):
    with WorkerServer(runtime):
        now = datetime.now(UTC)
        with db.transaction() as conn:
            scheduled = jobs.enqueue(conn, "probe", {"record": "timer"}, run_at=now + timedelta(seconds=3),
                                     queue="timers")
            doomed = jobs.enqueue(conn, "probe", {"record": "cancelled"}, run_at=now + timedelta(seconds=1),
                                  queue="timers")
        with db.transaction() as conn:
            jobs.cancel(conn, doomed.job_id)
        wait_for(lambda: job_status(db, scheduled.job_id) == "completed", timeout=10, what="the timer job")
    runs = probe_runs(app_env["ORDERPIPE_DATA_DIR"], "timer")
    assert len(runs) == 1 and runs[0][2] >= now.timestamp() + 3
    # The loop went past the cancelled job's time (the later job ran), and it never ran.
    assert probe_runs(app_env["ORDERPIPE_DATA_DIR"], "cancelled") == []
    assert job_status(db, doomed.job_id) == "cancelled"
