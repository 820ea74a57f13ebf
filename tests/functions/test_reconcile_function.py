"""reconcile through create_app: private, validated, and each task once across overlapping runs."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.flows import reconcile


@pytest.fixture
def reconcile_app(client_for):
    return client_for("reconcile")


def test_without_the_internal_token_nothing_runs(reconcile_app):
    response = reconcile_app.post("/", json={})
    assert response.status_code == 401


def test_a_run_reports_counts_for_every_task(reconcile_app, internal_auth):
    response = reconcile_app.post("/", json={}, headers=internal_auth)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body["ran"]) == set(reconcile.TASK_ORDER) and body["skipped"] == []
    assert body["ran"]["heal_paid_without_order"] == {"healed": 0}


def test_the_schedulers_body_runs_only_the_named_tasks(reconcile_app, internal_auth):
    response = reconcile_app.post("/", json={"tasks": ["purge_old_jobs", "dispatch_due_jobs"], "window_hours": 24},
                                  headers=internal_auth)
    assert set(response.get_json()["ran"]) == {"purge_old_jobs", "dispatch_due_jobs"}


@pytest.mark.parametrize("body", [{"tasks": ["format_disk"]}, {"tasks": []}, {"window_hours": 0},
                                  {"window_hours": "48"}, {"tasks": "all"}])
def test_bad_requests_are_422(reconcile_app, internal_auth, body):
    response = reconcile_app.post("/", json=body, headers=internal_auth)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_error"


def test_two_runs_at_once_run_every_task_once_in_total(runtime, monkeypatch):
    started = threading.Barrier(2)
    release = threading.Event()
    original = reconcile.TASKS["rescue_stale_jobs"]

    def slow_first_task(rt, request):
        # Hold the first run inside its first task until the second run has tried every lock.
        release.wait(10)
        return original(rt, request)

    monkeypatch.setitem(reconcile.TASKS, "rescue_stale_jobs", slow_first_task)
    results = []

    def run():
        started.wait(10)
        results.append(reconcile.run(runtime, reconcile.ReconcileIn()))
        release.set()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: run(), range(2)))
    ran = [name for result in results for name in result["ran"]]
    skipped = [name for result in results for name in result["skipped"]]
    assert sorted(ran) == sorted(reconcile.TASK_ORDER)
    assert sorted(skipped) == sorted(reconcile.TASK_ORDER)
