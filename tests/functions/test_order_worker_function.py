"""order_worker through create_app: auth, bad input, and the answers Cloud Tasks acts on."""

import pytest

from shared import jobs
from shared.jobs import store


@pytest.fixture
def worker(client_for):
    return client_for("order_worker")


def jobs_count(db):
    with db.connection() as conn:
        return conn.fetch_value("SELECT count(*) FROM jobs")


def test_without_the_internal_token_nothing_runs(worker, db):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "noop")
    response = worker.post("/tasks", json={"job_id": job.job_id})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    wrong = worker.post("/tasks", json={"job_id": job.job_id}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    with db.connection() as conn:
        assert store.get(conn, job.job_id).status == "pending"


def test_a_delivered_job_runs_and_a_duplicate_is_acknowledged(worker, db, internal_auth):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "noop")
    headers = {**internal_auth, "X-CloudTasks-TaskRetryCount": "0"}
    first = worker.post("/tasks", json={"job_id": job.job_id}, headers=headers)
    assert (first.status_code, first.get_json()) == (200, {"job_id": job.job_id, "status": "completed"})
    again = worker.post("/tasks", json={"job_id": job.job_id}, headers=headers)
    assert (again.status_code, again.get_json()["status"]) == (200, "completed")


def test_a_transient_failure_answers_503_with_retry_after_in_the_envelope(worker, db, internal_auth):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"fail_times": 1})
    response = worker.post("/tasks", json={"job_id": job.job_id},
                           headers={**internal_auth, "X-CloudTasks-TaskRetryCount": "0"})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    error = response.get_json()["error"]
    assert error["code"] == "retry_later" and error["details"]["status"] == "retryable"


def test_the_final_delivery_dead_letters_and_answers_200(worker, db, internal_auth, runtime):
    with db.transaction() as conn:
        job = jobs.enqueue(conn, "probe", {"fail_always": True})
    last = str(runtime.settings.jobs_max_attempts - 1)
    response = worker.post("/tasks", json={"job_id": job.job_id},
                           headers={**internal_auth, "X-CloudTasks-TaskRetryCount": last})
    assert (response.status_code, response.get_json()["status"]) == (200, "dead")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b'{"job_id": "12"}', "application/json", 422, "validation_error"),
        (b'{"job_id": -1}', "application/json", 422, "validation_error"),
        (b'{"job_id": 1.5}', "application/json", 422, "validation_error"),
        (b"{}", "application/json", 422, "validation_error"),
        (b'{"job_id": 99999999999999999999999}', "application/json", 422, "validation_error"),
    ],
)
def test_bad_bodies_get_the_envelope_and_change_nothing(worker, db, internal_auth, body, content_type, status, code):
    before = jobs_count(db)
    response = worker.post("/tasks", data=body, content_type=content_type, headers=internal_auth)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "details", "correlation_id"}
    assert "Traceback" not in response.get_data(as_text=True)
    assert jobs_count(db) == before


def test_validation_errors_name_the_failing_field(worker, internal_auth):
    response = worker.post("/tasks", json={"job_id": "x"}, headers=internal_auth)
    assert response.get_json()["error"]["details"]["fields"][0]["field"] == "job_id"


def test_a_body_over_one_mebibyte_is_refused_with_413(worker, internal_auth):
    response = worker.post("/tasks", data=b"{" + b" " * (1024 * 1024 + 10) + b"}", content_type="application/json",
                           headers=internal_auth)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_a_wrong_method_is_405_in_the_envelope(worker, internal_auth):
    response = worker.get("/tasks", headers=internal_auth)
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
