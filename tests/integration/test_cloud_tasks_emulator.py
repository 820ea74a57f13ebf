"""The production CloudTasksDispatcher with the real google-cloud-tasks client over gRPC, against
gcloud-tasks-emulator, with the tasks arriving as real HTTP at order_worker served locally.

The emulator pins protobuf < 5 and an old google-cloud-tasks, so it lives in a virtualenv of its own,
made on first use under ~/.cache/orderpipe/ (XDG_CACHE_HOME honoured) and run as a subprocess. Read
from its source (0.6.2), it: keeps queues and tasks in memory; POSTs each task's `http_request.url`
with the task's headers and body plus X-CloudTasks-QueueName (the full queue path, where Cloud Tasks
sends the queue id), -TaskName (the id), -TaskRetryCount, -TaskExecutionCount and -TaskETA (empty when
the task has no schedule_time); honours schedule_time; re-queues any 4xx/5xx answer at once, with no
backoff and no Retry-After, up to `--max-retries`. It has no OIDC (no Authorization header), no name
de-duplication (no ALREADY_EXISTS), no GetTask or DeleteTask (UNIMPLEMENTED), and no retry config.

What it cannot produce — ALREADY_EXISTS, a lost answer, a call that never returns — is tested at the
same gRPC edge against tests/fakes/cloud_tasks.py, still with the real client.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from shared import jobs
from shared.jobs import store
from shared.jobs.dispatch import CloudTasksDispatcher, task_id
from tests.fakes.cloud_tasks import FakeCloudTasks
from tests.helpers import ROOT, free_port, probe_runs, wait_for

EMULATOR_VERSION = "0.6.2"
# What the emulator venv holds, exactly: the emulator and the google-cloud-tasks it was checked with
# (it requires protobuf < 5, which pip then picks).
EMULATOR_REQUIREMENTS = (f"gcloud-tasks-emulator=={EMULATOR_VERSION}", "google-cloud-tasks==2.23.0")

PROJECT = "orderpipe-emu"
REGION = "asia-south1"
ORDERS_QUEUE = "orderpipe-orders"
TIMERS_QUEUE = "orderpipe-timers"
INVOKER = "tasks-invoker@orderpipe-emu.iam.gserviceaccount.com"
MAX_ATTEMPTS = 12  # the queue's max_attempts (Settings.jobs_max_attempts): --max-retries 11


def queue_path(queue_id: str) -> str:
    return f"projects/{PROJECT}/locations/{REGION}/queues/{queue_id}"


# --- the emulator -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "orderpipe"


@pytest.fixture(scope="session")
def tasks_emulator_venv() -> Path:
    """A virtualenv holding gcloud-tasks-emulator, installed from PyPI once and kept in the user cache.

    A failed install fails the tests that need it, with pip's own words: the emulator is part of the suite.
    """
    venv = cache_dir() / f"tasks-emulator-{EMULATOR_VERSION}"
    marker = venv / ".orderpipe-installed"
    wanted = "\n".join(EMULATOR_REQUIREMENTS) + "\n"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (xdist workers, parallel runs)
        if marker.exists() and marker.read_text() == wanted and (venv / "bin" / "gcloud-tasks-emulator").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted install
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
             *EMULATOR_REQUIREMENTS],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=240)  # under pytest's 300 s
            except subprocess.TimeoutExpired:
                pytest.fail(f"installing {' '.join(EMULATOR_REQUIREMENTS)} into {venv} timed out (240 s)",
                            pytrace=False)
            if done.returncode != 0:
                output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
                pytest.fail(f"could not install the Cloud Tasks emulator ({' '.join(EMULATOR_REQUIREMENTS)}) "
                            f"into {venv} from PyPI; `{' '.join(step[:4])} …` exited {done.returncode}:\n{output}",
                            pytrace=False)
        marker.write_text(wanted)
    return venv


def tasks_client(target: str):
    """The real client, wired as CloudTasksDispatcher wires it for TASKS_API_ENDPOINT."""
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(target)))


class TasksEmulator:
    """`gcloud-tasks-emulator start` on a fixed port, with both queues created by its -d flag."""

    def __init__(self, venv: Path, log_path: Path):
        self.venv = venv
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._client = tasks_client(self.target)

    def start(self) -> TasksEmulator:
        command = [str(self.venv / "bin" / "gcloud-tasks-emulator"), "start", "--port", str(self.port),
                   "--max-retries", str(MAX_ATTEMPTS - 1),
                   "-d", queue_path(ORDERS_QUEUE), "-d", queue_path(TIMERS_QUEUE)]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        env.pop("PYTHONPATH", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.venv)

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the emulator exited with {self.process.returncode}:\n{self.log()}")
            try:
                self._client.get_queue(name=queue_path(ORDERS_QUEUE), retry=None, timeout=1)
                return True
            except Exception:
                return False

        wait_for(ready, timeout=30, interval=0.05, what="gcloud-tasks-emulator to answer GetQueue")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def tasks(self, queue_id: str) -> list:
        """The tasks the emulator holds (not yet delivered, or waiting for their retry or ETA)."""
        return list(self._client.list_tasks(parent=queue_path(queue_id), retry=None, timeout=5))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


# --- order_worker over HTTP, recording what arrives ---------------------------------------------------


@dataclass
class Delivery:
    at: float
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int = 0

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class RecordingWorker:
    """order_worker served as tests.helpers.WorkerServer serves it (cheroot, the function's own app), with a
    WSGI layer in front that notes each request as it arrived and the status answered."""

    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self):
        import functions_framework

        from shared.devserver import WsgiServer

        app = functions_framework.create_app("order_worker", str(ROOT / "functions/order_worker/main.py"))
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = WsgiServer(self._recording(app), "127.0.0.1", self.port, threads=8, name="emulator-worker")

    def _recording(self, app):
        def recorded(environ, start_response):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                       if key.startswith("HTTP_")}
            if environ.get("CONTENT_TYPE"):
                headers["content-type"] = environ["CONTENT_TYPE"]
            delivery = Delivery(time.time(), environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers, body)

            def noting_status(status, response_headers, exc_info=None):
                delivery.status = int(status.split()[0])
                return start_response(status, response_headers, exc_info)

            result = app(environ, noting_status)
            with self._lock:
                self.deliveries.append(delivery)
            return result

        return recorded

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def __enter__(self) -> RecordingWorker:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()


# --- fixtures ---------------------------------------------------------------------------------------


def cloud_runtime(monkeypatch, *, endpoint: str, worker_url: str):
    """The process runtime as a Cloud Run function instance would build it, aimed at this endpoint."""
    from shared.runtime import get_runtime, reset_runtime

    env = {
        "TASK_BACKEND": "cloud_tasks",
        "TASKS_API_ENDPOINT": endpoint,
        "GCP_PROJECT": PROJECT,
        "GCP_REGION": REGION,
        "ORDER_WORKER_URL": worker_url,
        "TASKS_QUEUE_ORDERS": ORDERS_QUEUE,
        "TASKS_QUEUE_TIMERS": TIMERS_QUEUE,
        "TASKS_SERVICE_ACCOUNT": INVOKER,
        "JOBS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_runtime()
    runtime = get_runtime()
    assert isinstance(runtime.dispatcher, CloudTasksDispatcher)
    return runtime


@dataclass
class Cloud:
    runtime: object
    emulator: TasksEmulator
    worker: RecordingWorker

    @property
    def db(self):
        return self.runtime.db

    def job(self, job_id: int) -> store.Job:
        with self.db.connection() as conn:
            return store.get(conn, job_id)

    def wait_for_status(self, job_id: int, status: str, timeout: float = 15) -> store.Job:
        def reached():
            job = self.job(job_id)
            return job if job.status == status else None

        try:
            return wait_for(reached, timeout=timeout, what=f"job {job_id} to be {status}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it is {self.job(job_id).status}; deliveries: "
                                 f"{[(d.status, d.body) for d in self.worker.received()]}\n"
                                 f"emulator log:\n{self.emulator.log()}") from None

    def wait_for_deliveries(self, count: int, timeout: float = 15) -> list[Delivery]:
        return wait_for(lambda: len(self.worker.received()) >= count and self.worker.received(), timeout=timeout,
                        what=f"{count} deliveries at order_worker")


@pytest.fixture
def cloud(app_env, monkeypatch, tasks_emulator_venv, tmp_path) -> Iterator[Cloud]:
    emulator = TasksEmulator(tasks_emulator_venv, tmp_path / "tasks-emulator.log")
    with RecordingWorker() as worker:
        runtime = cloud_runtime(monkeypatch, endpoint=emulator.target, worker_url=worker.url)
        emulator.start()
        try:
            yield Cloud(runtime, emulator, worker)
        finally:
            emulator.stop()


def assert_cloud_tasks_delivery(delivery: Delivery, *, job_id: int, queue_id: str, retry_count: int = 0):
    assert (delivery.method, delivery.path) == ("POST", "/tasks")
    assert delivery.json == {"job_id": job_id}
    assert delivery.headers["content-type"] == "application/json"  # the task's own header, passed through
    assert delivery.headers["x-cloudtasks-taskname"] == task_id(job_id, 0)
    assert delivery.headers["x-cloudtasks-queuename"].rsplit("/", 1)[-1] == queue_id  # emulator: full path
    assert delivery.headers["x-cloudtasks-taskretrycount"] == str(retry_count)  # what order_worker reads
    assert "x-cloudtasks-taskexecutioncount" in delivery.headers and "x-cloudtasks-tasketa" in delivery.headers
    assert "authorization" not in delivery.headers  # no OIDC in the emulator, and the worker needs no bearer


# --- through the emulator ---------------------------------------------------------------------------


def test_a_committed_job_reaches_order_worker_over_http_and_completes(cloud, app_env):
    assert cloud.runtime.dispatcher.check() == "ok"
    with cloud.db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"record": "emulated"})
        assert cloud.emulator.tasks(ORDERS_QUEUE) == []  # nothing is handed over before commit
    done = cloud.wait_for_status(job.job_id, "completed")
    [delivery] = cloud.wait_for_deliveries(1)
    assert_cloud_tasks_delivery(delivery, job_id=job.job_id, queue_id=ORDERS_QUEUE)
    assert delivery.status == 200
    assert done.dispatched_at is not None and done.dispatch_generation == 0
    assert len(probe_runs(app_env["ORDERPIPE_DATA_DIR"], "emulated")) == 1


def test_a_rolled_back_job_never_becomes_a_task(cloud):
    with pytest.raises(RuntimeError), cloud.db.transaction() as conn:
        jobs.enqueue(conn, "probe", {"record": "never"})
        raise RuntimeError("the state change failed")
    # The hand-off runs synchronously after commit: had it happened, the task would be there now.
    assert cloud.emulator.tasks(ORDERS_QUEUE) == []
    assert cloud.worker.received() == []


def test_a_transient_failure_answers_503_and_the_redelivery_carries_the_retry_count(cloud, app_env):
    with cloud.db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"record": "flaky", "fail_times": 1})
    cloud.wait_for_status(job.job_id, "completed")
    first, second = cloud.wait_for_deliveries(2)
    assert (first.status, second.status) == (503, 200)
    assert_cloud_tasks_delivery(first, job_id=job.job_id, queue_id=ORDERS_QUEUE, retry_count=0)
    assert_cloud_tasks_delivery(second, job_id=job.job_id, queue_id=ORDERS_QUEUE, retry_count=1)
    assert [attempt for _, attempt, _ in probe_runs(app_env["ORDERPIPE_DATA_DIR"], "flaky")] == [1, 2]


def test_a_scheduled_job_travels_as_schedule_time_and_arrives_no_earlier(cloud, app_env):
    run_at = datetime.now(UTC) + timedelta(seconds=2)
    with cloud.db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"record": "timer"}, run_at=run_at, queue="timers")
    # The emulator re-queues a task that is not due yet (pop, then append): look until it is seen.
    [waiting] = wait_for(lambda: cloud.emulator.tasks(TIMERS_QUEUE), timeout=2, what="the task in its queue")
    assert waiting.schedule_time.timestamp() == pytest.approx(run_at.timestamp(), abs=1e-3)
    assert waiting.dispatch_deadline.total_seconds() == cloud.runtime.settings.jobs_dispatch_deadline_s
    assert waiting.http_request.oidc_token.service_account_email == INVOKER
    cloud.wait_for_status(job.job_id, "completed")
    [delivery] = cloud.wait_for_deliveries(1)
    assert_cloud_tasks_delivery(delivery, job_id=job.job_id, queue_id=TIMERS_QUEUE)
    assert float(delivery.headers["x-cloudtasks-tasketa"]) == pytest.approx(run_at.timestamp(), abs=1e-3)
    assert delivery.at >= run_at.timestamp()
    [(_, _, ran_at)] = probe_runs(app_env["ORDERPIPE_DATA_DIR"], "timer")
    assert ran_at >= run_at.timestamp()


def test_cancel_survives_an_api_without_delete_task_and_the_late_delivery_is_acknowledged(cloud, app_env):
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    with cloud.db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"record": "cancelled"}, run_at=run_at, queue="timers")
    with cloud.db.transaction() as conn:
        cancelled = jobs.cancel(conn, job.job_id)
    cloud.runtime.dispatcher.cancel(cancelled)  # DeleteTask answers UNIMPLEMENTED here: no exception
    [delivery] = cloud.wait_for_deliveries(1)  # the task was not withdrawn, so it still arrives …
    assert delivery.status == 200  # … and is acknowledged without running
    assert json.loads(delivery.body) == {"job_id": job.job_id}
    assert cloud.job(job.job_id).status == "cancelled"
    assert probe_runs(app_env["ORDERPIPE_DATA_DIR"], "cancelled") == []


def test_a_job_whose_hand_off_failed_waits_in_the_table_until_reconcile_hands_it_over(cloud, app_env):
    cloud.emulator.stop()  # Cloud Tasks unreachable
    with cloud.db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"record": "outage"})
    stuck = cloud.job(job.job_id)
    assert (stuck.status, stuck.dispatched_at) == ("pending", None)  # committed all the same
    started = time.monotonic()
    assert cloud.runtime.dispatcher.check() == "failed"
    assert time.monotonic() - started < 3  # one bounded attempt, not the client's 20 s of retries
    assert jobs.dispatch_due_jobs(cloud.db) == {"found": 1, "dispatched": 0}

    cloud.emulator.start()  # a fresh emulator on the same port
    wait_for(lambda: jobs.dispatch_due_jobs(cloud.db)["dispatched"] == 1, timeout=15, interval=0.2,
             what="reconcile's hand-off to succeed once Cloud Tasks answers again")
    done = cloud.wait_for_status(job.job_id, "completed")
    [delivery] = cloud.wait_for_deliveries(1)
    assert_cloud_tasks_delivery(delivery, job_id=job.job_id, queue_id=ORDERS_QUEUE)
    assert done.dispatch_generation == 0 and done.dispatched_at is not None
    assert jobs.dispatch_due_jobs(cloud.db) == {"found": 0, "dispatched": 0}
    assert len(probe_runs(app_env["ORDERPIPE_DATA_DIR"], "outage")) == 1


# --- at the gRPC edge, for what the emulator cannot answer -------------------------------------------


@pytest.fixture
def fake_tasks(app_env, monkeypatch) -> Iterator[tuple[FakeCloudTasks, object]]:
    with FakeCloudTasks() as fake:
        runtime = cloud_runtime(monkeypatch, endpoint=fake.target, worker_url="https://order-worker.example.test")
        yield fake, runtime


def test_already_exists_for_the_same_generation_counts_as_handed_over(fake_tasks):
    fake, runtime = fake_tasks
    fake.lose_next_answers(1)  # Cloud Tasks creates the task, but its answer never reaches us
    with runtime.db.transaction() as conn:
        job = jobs.enqueue(conn, "noop")
    with runtime.db.connection() as conn:
        assert store.get(conn, job.job_id).dispatched_at is None  # so we do not know it was handed over

    assert jobs.dispatch_due_jobs(runtime.db) == {"found": 1, "dispatched": 1}
    first, again = fake.calls
    assert [first.code, again.code] == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ALREADY_EXISTS]
    assert first.task.name == again.task.name == f"{queue_path(ORDERS_QUEUE)}/tasks/{task_id(job.job_id, 0)}"
    assert first.parent == queue_path(ORDERS_QUEUE)
    with runtime.db.connection() as conn:
        handed = store.get(conn, job.job_id)
    assert handed.dispatched_at is not None and handed.dispatch_generation == 0
    assert jobs.dispatch_due_jobs(runtime.db) == {"found": 0, "dispatched": 0}


def test_a_cloud_tasks_that_never_answers_stops_the_batch_instead_of_stalling_it(fake_tasks):
    fake, runtime = fake_tasks
    fake.hang()
    runtime.dispatcher.rpc_timeout_s = 0.5
    with runtime.db.transaction() as conn:
        for _ in range(3):
            store.insert(conn, kind="noop", queue="orders", payload={}, key=None, run_at=None, max_attempts=3)
    started = time.monotonic()
    assert jobs.dispatch_due_jobs(runtime.db) == {"found": 3, "dispatched": 0}
    assert time.monotonic() - started < 3
    assert len(fake.calls) == 1  # the other two wait, undispatched, for the next reconcile
    with runtime.db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM jobs WHERE dispatched_at IS NULL") == 3
