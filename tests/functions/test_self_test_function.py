"""self_test through functions_framework.create_app, as Cloud Run would load it."""


def test_healthz_answers_without_touching_the_database(client_for, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    response = client_for("self_test").get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": "0.1.0", "safe_mode": True}
    assert response.headers["X-Correlation-ID"]


def test_readyz_is_200_when_the_database_answers_and_migrations_are_current(client_for):
    response = client_for("self_test").get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_readyz_is_503_when_migrations_are_behind(client_for, db):
    with db.transaction() as conn:
        conn.execute("DELETE FROM schema_migrations")
    response = client_for("self_test").get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["migrations"] == "failed"


def test_selftest_names_every_check_and_reveals_no_secret(client_for, test_secrets):
    response = client_for("self_test").get("/__selftest")
    body = response.get_json()
    assert set(body["checks"]) == {"database", "migrations", "task_queue", "secrets", "esewa", "khalti", "stripe"}
    assert body["checks"]["database"] == "ok" and body["checks"]["secrets"] == "ok"
    for value in test_secrets.values():
        assert value not in response.get_data(as_text=True)


def test_selftest_is_503_when_the_database_is_down(client_for, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    from shared.runtime import reset_runtime

    reset_runtime()
    response = client_for("self_test").get("/__selftest")
    assert response.status_code == 503
    assert response.get_json()["status"] == "blocker"
    assert response.get_json()["checks"]["database"] == "failed"


def test_an_echoed_correlation_id_and_the_error_envelope_for_unknown_paths(client_for):
    response = client_for("self_test").get("/nowhere", headers={"X-Correlation-ID": "req-77"})
    assert response.status_code == 404
    assert response.headers["X-Correlation-ID"] == "req-77"
    error = response.get_json()["error"]
    assert error["code"] == "not_found" and error["correlation_id"] == "req-77"
