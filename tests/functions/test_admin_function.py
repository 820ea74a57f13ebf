"""admin through create_app: the token on every API route, jobs, health, catalog, orders, and the page's files."""

import json
import secrets
import uuid

import pytest

from shared import jobs
from shared.flows import catalog
from shared.flows.invariants import INVARIANTS
from shared.jobs import store
from shared.jobs.worker import run_job


@pytest.fixture
def admin(client_for):
    return client_for("admin")


@pytest.fixture
def page_client():
    """admin without a database or secrets: the page and its files need neither."""
    import functions_framework

    from tests.helpers import ROOT

    return functions_framework.create_app("admin", str(ROOT / "functions/admin/main.py")).test_client()


def rows(db, sql, **params):
    with db.connection() as conn:
        return conn.fetch_value(sql, **params)


def enqueue(db, kind="noop", payload=None):
    with db.transaction() as conn:
        return jobs.enqueue(conn, kind, payload or {})


def make_dead(db, runtime, payload):
    """A probe job dead-lettered by a failed run on the queue's last delivery."""
    job = enqueue(db, "probe", payload)
    last = runtime.settings.jobs_max_attempts - 1
    assert run_job(db, runtime.settings, job.job_id, retry_count=last).status == "dead"
    return job


def make_stale(db, job_id, minutes=1):
    """A job claimed by a worker that vanished: running, lease expired `minutes` ago."""
    with db.connection() as conn:
        assert store.claim(conn, job_id, worker="gone:1", lease_s=60) is not None
        conn.execute("UPDATE jobs SET locked_until = now() - make_interval(mins => :m) WHERE job_id = :job_id",
                     m=minutes, job_id=job_id)


def job_status(db, job_id):
    with db.connection() as conn:
        return store.get(conn, job_id).status


def assert_envelope(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "details", "correlation_id"}
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "SELECT" not in text
    return error


def make_vendor(db, name="Test Vendor", fee_bps=1000):
    return catalog.create_vendor(db, catalog.VendorIn(business_name=name, platform_fee_bps=fee_bps))["vendor_id"]


def make_product(db, vendor_id, *, name="Tea", price=85_000, stock=10):
    product = catalog.ProductIn(vendor_id=vendor_id, name=name, price_minor=price, stock=stock)
    return catalog.create_product(db, product)["product_id"]


def insert_intent(db, *, status="awaiting_payment", reason=None, amount=170_000, provider="khalti"):
    payment_intent_id = "opi_" + secrets.token_hex(16)
    with db.transaction() as conn:
        cart_id = conn.fetch_value(
            "INSERT INTO carts (customer_id, currency, status) VALUES ('cust-1', 'NPR', 'ordered') RETURNING cart_id")
        conn.execute(
            """
            INSERT INTO payment_intents (payment_intent_id, cart_id, customer_id, provider, amount_minor, currency,
                                         status, status_reason, external_reference, gateway, success_url, expires_at)
            VALUES (:pid, :cart_id, 'cust-1', :provider, :amount, 'NPR', :status, :reason, :ref,
                    CAST(:gateway AS jsonb), 'https://shop.example/ok', now() + interval '15 minutes')
            """,
            pid=payment_intent_id, cart_id=cart_id, provider=provider, amount=amount, status=status, reason=reason,
            ref=f"pidx-{payment_intent_id[-8:]}", gateway=json.dumps({"client_secret": "pi_secret_do_not_show"}),
        )
    return payment_intent_id


def insert_order(db, *, with_session=True):
    """An order made the way finalize_order makes one: intent, verification, order, items (and an ID check)."""
    vendor_id = make_vendor(db, "Everest Gear", 1200)
    product_id = make_product(db, vendor_id, name="Khukuri knife", price=85_000)
    payment_intent_id = insert_intent(db, status="order_created")
    with db.transaction() as conn:
        conn.execute(
            """
            INSERT INTO verifications (payment_intent_id, provider, external_transaction_id, amount_minor, currency,
                                       source, gateway_response)
            VALUES (:pid, 'khalti', 'txn-42', 170000, 'NPR', 'verify_payment', '{"token": "gateway-raw"}'::jsonb)
            """,
            pid=payment_intent_id,
        )
        order_id = conn.fetch_value(
            """
            INSERT INTO orders (order_number, payment_intent_id, customer_id, total_minor, currency)
            VALUES ('OP-' || nextval('order_number_seq'), :pid, 'cust-1', 170000, 'NPR') RETURNING order_id
            """,
            pid=payment_intent_id,
        )
        conn.execute(
            """
            INSERT INTO order_items (order_id, line_no, product_id, vendor_id, product_name, quantity,
                                     unit_price_minor, platform_fee_bps)
            VALUES (:order_id, 1, :product_id, :vendor_id, 'Khukuri knife', 2, 85000, 1200)
            """,
            order_id=order_id, product_id=product_id, vendor_id=vendor_id,
        )
        if with_session:
            conn.execute("INSERT INTO verification_sessions (order_id, deadline_at)"
                         " VALUES (:o, now() + interval '3 days')", o=order_id)
    return {"order_id": str(order_id), "payment_intent_id": payment_intent_id, "vendor_id": str(vendor_id),
            "product_id": str(product_id)}


# --- the token ------------------------------------------------------------------------------------

SOME_UUID = "3f2a1c3e-8f0e-4c39-9a53-0b6f5d0e7a11"
API_ROUTES = [
    ("GET", "/api/jobs", None),
    ("GET", "/api/jobs/1", None),
    ("POST", "/api/jobs/1/retry", None),
    ("POST", "/api/jobs/rescue-stale", None),
    ("GET", "/api/queue-stats", None),
    ("GET", "/api/health-report", None),
    ("GET", f"/api/vendors/{SOME_UUID}/dashboard", None),
    ("GET", f"/api/vendors/{SOME_UUID}/daily", None),
    ("GET", "/api/platform/daily", None),
    ("GET", "/api/vendors", None),
    ("POST", "/api/vendors", {"business_name": "Sneaky"}),
    ("GET", "/api/products", None),
    ("POST", "/api/products", {"vendor_id": SOME_UUID, "name": "x", "price_minor": 1, "stock": 1}),
    ("GET", f"/api/products/{SOME_UUID}", None),
    ("PUT", f"/api/products/{SOME_UUID}/stock", {"on_hand": 0}),
    ("GET", f"/api/orders/{SOME_UUID}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), API_ROUTES, ids=[f"{m} {p}" for m, p, _ in API_ROUTES])
def test_every_api_route_answers_401_without_the_admin_token_and_changes_nothing(admin, db, method, path, body):
    job = enqueue(db)
    with db.connection() as conn:
        conn.execute("UPDATE jobs SET status = 'dead', last_error = 'x' WHERE job_id = :j", j=job.job_id)
    for header in (None, "Bearer nope", "Basic YWRtaW46YWRtaW4=", "Bearer ", "bearer", "Bearer  nope  "):
        headers = {"Authorization": header} if header else {}
        response = admin.open(path, method=method, json=body, headers=headers)
        assert_envelope(response, 401, "unauthorized")
    assert rows(db, "SELECT count(*) FROM vendors") == 0
    assert job_status(db, job.job_id) == "dead"


def test_the_internal_task_token_is_not_an_admin_token(admin, internal_auth):
    assert_envelope(admin.get("/api/jobs", headers=internal_auth), 401, "unauthorized")


def test_a_correlation_id_is_echoed_on_api_answers(admin, admin_auth):
    response = admin.get("/api/queue-stats", headers={**admin_auth, "X-Correlation-ID": "op-check-1"})
    assert response.headers["X-Correlation-ID"] == "op-check-1"


# --- jobs -----------------------------------------------------------------------------------------


def test_jobs_are_listed_newest_first_and_filtered_by_status_and_kind(admin, admin_auth, db, runtime):
    noops = [enqueue(db, "noop") for _ in range(3)]
    dead = make_dead(db, runtime, {"permanent": True})
    everything = admin.get("/api/jobs", headers=admin_auth).get_json()
    assert [j["job_id"] for j in everything["jobs"]] == [dead.job_id] + [j.job_id for j in reversed(noops)]
    assert (everything["total"], everything["limit"], everything["offset"], everything["has_more"]) == (4, 50, 0, False)

    only_dead = admin.get("/api/jobs?status=dead", headers=admin_auth).get_json()
    assert [(j["job_id"], j["status"], j["kind"]) for j in only_dead["jobs"]] == [(dead.job_id, "dead", "probe")]
    assert only_dead["jobs"][0]["last_error"].startswith("permanent:")
    only_noop = admin.get("/api/jobs?kind=noop&status=pending", headers=admin_auth).get_json()
    assert {j["job_id"] for j in only_noop["jobs"]} == {j.job_id for j in noops}
    assert admin.get("/api/jobs?kind=probe&status=pending", headers=admin_auth).get_json()["total"] == 0
    # Blank filters (what a form sends) mean "any".
    assert admin.get("/api/jobs?status=&kind=", headers=admin_auth).get_json()["total"] == 4


def test_jobs_pagination_says_whether_more_pages_follow(admin, admin_auth, db):
    ids = [enqueue(db).job_id for _ in range(5)]
    newest_first = list(reversed(ids))
    first = admin.get("/api/jobs?limit=2", headers=admin_auth).get_json()
    second = admin.get("/api/jobs?limit=2&offset=2", headers=admin_auth).get_json()
    last = admin.get("/api/jobs?limit=2&offset=4", headers=admin_auth).get_json()
    beyond = admin.get("/api/jobs?limit=2&offset=10", headers=admin_auth).get_json()
    assert [j["job_id"] for j in first["jobs"]] == newest_first[:2] and first["has_more"] is True
    assert [j["job_id"] for j in second["jobs"]] == newest_first[2:4] and second["has_more"] is True
    assert [j["job_id"] for j in last["jobs"]] == newest_first[4:] and last["has_more"] is False
    assert (beyond["jobs"], beyond["total"], beyond["has_more"]) == ([], 5, False)
    exact = admin.get("/api/jobs?limit=5", headers=admin_auth).get_json()
    assert (len(exact["jobs"]), exact["has_more"]) == (5, False)


BAD_JOB_FILTERS = [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=-1", "limit"), ("limit=abc", "limit"),
    ("limit=1.5", "limit"), ("offset=-1", "offset"), ("offset=99999999999999999999999", "offset"),
    ("status=finished", "status"), ("status=DEAD", "status"), ("kind=Not%20A%20Kind", "kind"),
    ("kind=" + "k" * 80, "kind"), ("kind=drop;table", "kind"),
]


def test_bad_job_filters_are_422_naming_the_field(admin, admin_auth):
    for query, field in BAD_JOB_FILTERS:
        error = assert_envelope(admin.get(f"/api/jobs?{query}", headers=admin_auth), 422, "validation_error")
        assert [f["field"] for f in error["details"]["fields"]] == [field], query


def test_limit_bounds_one_and_one_hundred_are_accepted(admin, admin_auth):
    for limit in (1, 100):
        assert admin.get(f"/api/jobs?limit={limit}", headers=admin_auth).get_json()["limit"] == limit


def test_one_job_is_shown_in_full(admin, admin_auth, db):
    job = enqueue(db, "noop", {"n": 1})
    body = admin.get(f"/api/jobs/{job.job_id}", headers=admin_auth).get_json()
    assert (body["job_id"], body["kind"], body["status"], body["payload"]) == (job.job_id, "noop", "pending", {"n": 1})
    assert {"attempts", "max_attempts", "run_at", "last_error", "dispatch_generation", "created_at"} <= set(body)


def test_a_malformed_job_id_is_422(admin, admin_auth):
    for job_id in ("abc", "0", "-1", "1.5", "99999999999999999999", "١٢"):
        for method, path in (("GET", f"/api/jobs/{job_id}"), ("POST", f"/api/jobs/{job_id}/retry")):
            error = assert_envelope(admin.open(path, method=method, headers=admin_auth), 422, "validation_error")
            assert error["details"]["fields"][0]["field"] == "job_id"


def test_a_missing_job_is_404(admin, admin_auth):
    assert_envelope(admin.get("/api/jobs/424242", headers=admin_auth), 404, "job_not_found")
    assert_envelope(admin.post("/api/jobs/424242/retry", headers=admin_auth), 404, "job_not_found")


def test_retrying_a_dead_job_makes_it_pending_rings_the_queue_and_it_then_runs(admin, admin_auth, db, runtime):
    dead = make_dead(db, runtime, {"fail_before_generation": 1})
    runtime.dispatcher.wakeup.clear()
    response = admin.post(f"/api/jobs/{dead.job_id}/retry", headers=admin_auth)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["job_id"], body["status"], body["attempts"]) == (dead.job_id, "pending", 0)
    assert body["dispatch_generation"] == dead.dispatch_generation + 1
    assert runtime.dispatcher.wakeup.is_set()  # handed to the (local) task queue after commit
    assert run_job(db, runtime.settings, dead.job_id, retry_count=0).status == "completed"


def test_a_retryable_job_can_be_retried_at_once(admin, admin_auth, db, runtime):
    job = enqueue(db, "probe", {"fail_times": 1})
    assert run_job(db, runtime.settings, job.job_id, retry_count=0).status == "retryable"
    assert admin.post(f"/api/jobs/{job.job_id}/retry", headers=admin_auth).get_json()["status"] == "pending"


@pytest.mark.parametrize("status", ["pending", "completed", "running"])
def test_retrying_a_job_that_is_not_dead_or_retryable_is_409_with_its_status(admin, admin_auth, db, runtime, status):
    job = enqueue(db)
    if status == "completed":
        run_job(db, runtime.settings, job.job_id)
    elif status == "running":
        make_stale(db, job.job_id, minutes=-5)  # a live lease
    error = assert_envelope(admin.post(f"/api/jobs/{job.job_id}/retry", headers=admin_auth), 409, "job_not_retryable")
    assert error["details"] == {"job_id": job.job_id, "status": status}
    assert job_status(db, job.job_id) == status


def test_rescue_stale_releases_expired_leases_and_counts_them(admin, admin_auth, db):
    stale = enqueue(db)
    live = enqueue(db)
    make_stale(db, stale.job_id)
    make_stale(db, live.job_id, minutes=-5)
    response = admin.post("/api/jobs/rescue-stale", headers=admin_auth)
    assert (response.status_code, response.get_json()) == (200, {"rescued": 1, "dead": 0, "superseded": 0})
    assert (job_status(db, stale.job_id), job_status(db, live.job_id)) == ("retryable", "running")
    again = admin.post("/api/jobs/rescue-stale", headers=admin_auth).get_json()
    assert again == {"rescued": 0, "dead": 0, "superseded": 0}


def test_queue_stats_count_what_is_in_the_table(admin, admin_auth, db, runtime):
    empty = admin.get("/api/queue-stats", headers=admin_auth).get_json()
    assert empty == {"by_status": {}, "stuck": 0, "failed_last_hour": 0, "dead": 0, "oldest_due_age_s": 0}
    enqueue(db)
    enqueue(db)
    make_dead(db, runtime, {"permanent": True})
    make_stale(db, enqueue(db).job_id)
    with db.connection() as conn:
        conn.execute("UPDATE jobs SET run_at = now() - interval '90 seconds' WHERE status = 'pending'")
    stats = admin.get("/api/queue-stats", headers=admin_auth).get_json()
    assert stats["by_status"] == {"pending": 2, "dead": 1, "running": 1}
    assert (stats["stuck"], stats["dead"], stats["failed_last_hour"]) == (1, 1, 1)
    assert 90 <= stats["oldest_due_age_s"] < 200


# --- the health report ----------------------------------------------------------------------------


def test_the_health_report_on_a_healthy_database(admin, admin_auth):
    report = admin.get("/api/health-report", headers=admin_auth).get_json()
    names = {check["name"] for check in report["checks"]}
    assert {"no_stuck_jobs", "orders_have_items", "verified_payment_has_an_outcome"} <= names
    assert any(name.startswith("metrics_") for name in names)  # metrics drift joins through run_checks
    core = {invariant.name for invariant in INVARIANTS}
    for check in report["checks"]:
        assert set(check) >= {"name", "description", "ok", "breaches", "sample"}
        # The metrics checks expect rows that reconcile writes for days before this database existed.
        if check["name"] in core:
            assert check["ok"] is True and check["sample"] == []
    assert report["ok"] is all(check["ok"] for check in report["checks"])
    assert report["counts"]["breached_checks"] == sum(not check["ok"] for check in report["checks"])
    assert report["action_required"] is False
    assert (report["needs_refund"], report["needs_review"]) == ([], [])
    assert {k: report["counts"][k] for k in ("needs_refund", "needs_review", "dead_jobs")} == {
        "needs_refund": 0, "needs_review": 0, "dead_jobs": 0}


def test_the_health_report_lists_intents_a_person_must_act_on(admin, admin_auth, db):
    refund = insert_intent(db, status="needs_refund", reason="stock gone after payment", amount=120_000)
    review = insert_intent(db, status="needs_review", reason="amount_mismatch", provider="esewa")
    insert_intent(db, status="awaiting_payment")
    with db.connection() as conn:
        conn.execute("UPDATE payment_intents SET updated_at = now() - interval '2 hours' WHERE payment_intent_id = :p",
                     p=refund)
    report = admin.get("/api/health-report", headers=admin_auth).get_json()
    assert report["action_required"] is True
    assert report["counts"]["needs_refund"] == 1 and report["counts"]["needs_review"] == 1
    [listed] = report["needs_refund"]
    assert (listed["payment_intent_id"], listed["provider"], listed["amount_minor"], listed["currency"]) == (
        refund, "khalti", 120_000, "NPR")
    assert listed["status_reason"] == "stock gone after payment"
    assert 7200 <= listed["age_s"] < 7300
    assert [(i["payment_intent_id"], i["provider"], i["status_reason"]) for i in report["needs_review"]] == [
        (review, "esewa", "amount_mismatch")]
    assert "pi_secret_do_not_show" not in json.dumps(report)


def test_a_breached_invariant_shows_with_a_sample(admin, admin_auth, db, runtime):
    stuck = enqueue(db)
    make_stale(db, stuck.job_id, minutes=10)
    make_dead(db, runtime, {"permanent": True})
    report = admin.get("/api/health-report", headers=admin_auth).get_json()
    assert report["ok"] is False
    [check] = [c for c in report["checks"] if c["name"] == "no_stuck_jobs"]
    assert check["ok"] is False and check["breaches"] == 1
    assert check["sample"][0]["job_id"] == stuck.job_id
    assert report["counts"]["dead_jobs"] == 1 and report["counts"]["breached_checks"] >= 1


# --- catalog --------------------------------------------------------------------------------------


def test_a_vendor_and_product_are_created_read_and_restocked(admin, admin_auth):
    created = admin.post("/api/vendors", json={"business_name": "  Ilam Tea  ", "platform_fee_bps": 750},
                         headers=admin_auth)
    assert created.status_code == 201
    vendor_id = created.get_json()["vendor_id"]
    uuid.UUID(vendor_id)
    listed = admin.get("/api/vendors", headers=admin_auth).get_json()
    assert [(v["vendor_id"], v["business_name"], v["platform_fee_bps"], v["products"]) for v in listed["vendors"]] == [
        (vendor_id, "Ilam Tea", 750, 0)]

    product = admin.post("/api/products", headers=admin_auth, json={
        "vendor_id": vendor_id, "name": "First flush 250 g", "price_minor": 85_000, "stock": 12})
    assert product.status_code == 201
    product_id = product.get_json()["product_id"]
    shown = admin.get(f"/api/products/{product_id}", headers=admin_auth).get_json()
    assert {k: shown[k] for k in ("product_id", "vendor_id", "name", "price_minor", "currency", "on_hand", "reserved",
                                  "available", "active")} == {
        "product_id": product_id, "vendor_id": vendor_id, "name": "First flush 250 g", "price_minor": 85_000,
        "currency": "NPR", "on_hand": 12, "reserved": 0, "available": 12, "active": True}

    restocked = admin.put(f"/api/products/{product_id}/stock", json={"on_hand": 40}, headers=admin_auth)
    assert restocked.status_code == 200
    assert (restocked.get_json()["on_hand"], restocked.get_json()["available"]) == (40, 40)
    products = admin.get(f"/api/products?vendor_id={vendor_id}", headers=admin_auth).get_json()
    assert [(p["product_id"], p["on_hand"]) for p in products["products"]] == [(product_id, 40)]
    assert admin.get("/api/vendors", headers=admin_auth).get_json()["vendors"][0]["products"] == 1


def test_product_listing_filters_by_vendor_and_pages(admin, admin_auth, db):
    tea = make_vendor(db, "Tea")
    crafts = make_vendor(db, "Crafts")
    for n in range(3):
        make_product(db, tea, name=f"tea {n}")
    make_product(db, crafts, name="bowl")
    everything = admin.get("/api/products", headers=admin_auth).get_json()
    assert everything["total"] == 4
    page = admin.get(f"/api/products?vendor_id={tea}&limit=2", headers=admin_auth).get_json()
    assert ([p["name"] for p in page["products"]], page["total"], page["has_more"]) == (["tea 0", "tea 1"], 3, True)
    assert_envelope(admin.get("/api/products?vendor_id=nope", headers=admin_auth), 422, "validation_error")
    assert_envelope(admin.get(f"/api/products?vendor_id={SOME_UUID}", headers=admin_auth), 404, "vendor_not_found")
    assert_envelope(admin.get("/api/vendors?limit=501", headers=admin_auth), 422, "validation_error")


def test_a_product_for_an_unknown_vendor_is_404_and_nothing_is_written(admin, admin_auth, db):
    response = admin.post("/api/products", headers=admin_auth, json={
        "vendor_id": SOME_UUID, "name": "Ghost", "price_minor": 100, "stock": 1})
    assert_envelope(response, 404, "not_found")
    assert rows(db, "SELECT count(*) FROM products") == 0


def test_stock_below_the_reserved_units_is_409_and_unchanged(admin, admin_auth, db):
    product_id = make_product(db, make_vendor(db), stock=10)
    with db.connection() as conn:
        conn.execute("UPDATE inventory SET reserved = 6 WHERE product_id = :p", p=str(product_id))
    error = assert_envelope(admin.put(f"/api/products/{product_id}/stock", json={"on_hand": 5}, headers=admin_auth),
                            409, "conflict")
    assert error["details"] == {"reserved": 6, "requested_on_hand": 5}
    assert rows(db, "SELECT on_hand FROM inventory WHERE product_id = :p", p=str(product_id)) == 10
    ok = admin.put(f"/api/products/{product_id}/stock", json={"on_hand": 6}, headers=admin_auth).get_json()
    assert (ok["on_hand"], ok["available"]) == (6, 0)


def test_unknown_and_malformed_product_ids(admin, admin_auth):
    assert_envelope(admin.get(f"/api/products/{SOME_UUID}", headers=admin_auth), 404, "not_found")
    assert_envelope(admin.put(f"/api/products/{SOME_UUID}/stock", json={"on_hand": 1}, headers=admin_auth),
                    404, "not_found")
    for bad in ("nope", "1234", "3f2a1c3e-8f0e-4c39-9a53-0b6f5d0e7a1z"):
        error = assert_envelope(admin.get(f"/api/products/{bad}", headers=admin_auth), 422, "validation_error")
        assert error["details"]["fields"][0]["field"] == "product_id"
        assert_envelope(admin.put(f"/api/products/{bad}/stock", json={"on_hand": 1}, headers=admin_auth),
                        422, "validation_error")


VENDOR_BODIES = [
    ({"business_name": 5}, "business_name"),
    ({"business_name": ""}, "business_name"),
    ({"business_name": "   "}, "business_name"),
    ({"business_name": "x" * 201}, "business_name"),
    ({}, "business_name"),
    ({"business_name": "ok", "platform_fee_bps": 10_001}, "platform_fee_bps"),
    ({"business_name": "ok", "platform_fee_bps": -1}, "platform_fee_bps"),
    ({"business_name": "ok", "platform_fee_bps": "100"}, "platform_fee_bps"),
    ({"business_name": "ok", "platform_fee_bps": 99999999999999999999999999}, "platform_fee_bps"),
]
PRODUCT_BASE = {"vendor_id": SOME_UUID, "name": "Tea", "price_minor": 100, "stock": 1}
PRODUCT_BODIES = [
    ({**PRODUCT_BASE, "vendor_id": "not-a-uuid"}, "vendor_id"),
    ({**PRODUCT_BASE, "vendor_id": 12}, "vendor_id"),
    ({**PRODUCT_BASE, "price_minor": "100"}, "price_minor"),
    ({**PRODUCT_BASE, "price_minor": 1.5}, "price_minor"),
    ({**PRODUCT_BASE, "price_minor": 0}, "price_minor"),
    ({**PRODUCT_BASE, "price_minor": 10**30}, "price_minor"),
    ({**PRODUCT_BASE, "price_minor": True}, "price_minor"),
    ({**PRODUCT_BASE, "stock": -1}, "stock"),
    ({**PRODUCT_BASE, "stock": 2**40}, "stock"),
    ({**PRODUCT_BASE, "stock": None}, "stock"),
    ({**PRODUCT_BASE, "currency": "npr"}, "currency"),
    ({**PRODUCT_BASE, "currency": "NPRS"}, "currency"),
    ({**PRODUCT_BASE, "requires_verification": "yes"}, "requires_verification"),
    ({key: value for key, value in PRODUCT_BASE.items() if key != "name"}, "name"),
]


@pytest.mark.parametrize(("path", "body", "field"), [("/api/vendors", b, f) for b, f in VENDOR_BODIES]
                         + [("/api/products", b, f) for b, f in PRODUCT_BODIES])
def test_catalog_bodies_with_wrong_types_or_sizes_are_422_and_write_nothing(admin, admin_auth, db, path, body, field):
    error = assert_envelope(admin.post(path, json=body, headers=admin_auth), 422, "validation_error")
    assert field in [f["field"] for f in error["details"]["fields"]]
    assert rows(db, "SELECT count(*) FROM vendors") + rows(db, "SELECT count(*) FROM products") == 0


@pytest.mark.parametrize(("body", "field"), [({"on_hand": -1}, "on_hand"), ({"on_hand": "5"}, "on_hand"),
                                             ({"on_hand": 10**10}, "on_hand"), ({}, "on_hand")])
def test_bad_stock_bodies_are_422_and_change_nothing(admin, admin_auth, db, body, field):
    product_id = make_product(db, make_vendor(db), stock=3)
    error = assert_envelope(admin.put(f"/api/products/{product_id}/stock", json=body, headers=admin_auth),
                            422, "validation_error")
    assert error["details"]["fields"][0]["field"] == field
    assert rows(db, "SELECT on_hand FROM inventory WHERE product_id = :p", p=str(product_id)) == 3


NOT_JSON = [b"not json", b"[1, 2]", b"", b'"a string"', b"null", b'{"business_name": "x"',
            b"[" * 50_000 + b"]" * 50_000, b"\xff\xfe{}"]


def test_non_json_bodies_are_400_invalid_json_and_write_nothing(admin, admin_auth, db):
    for raw in NOT_JSON:
        for method, path in (("POST", "/api/vendors"), ("POST", "/api/products"),
                             ("PUT", f"/api/products/{SOME_UUID}/stock")):
            response = admin.open(path, method=method, data=raw, content_type="application/json", headers=admin_auth)
            assert_envelope(response, 400, "invalid_json")
    assert rows(db, "SELECT count(*) FROM vendors") + rows(db, "SELECT count(*) FROM products") == 0


def test_a_body_over_one_mebibyte_is_413(admin, admin_auth, db):
    response = admin.post("/api/vendors", data=b'{"business_name": "' + b"x" * (1024 * 1024) + b'"}',
                          content_type="application/json", headers=admin_auth)
    assert_envelope(response, 413, "payload_too_large")
    assert rows(db, "SELECT count(*) FROM vendors") == 0


def test_a_wrong_method_is_405_in_the_envelope(admin, admin_auth):
    assert_envelope(admin.delete("/api/jobs/1", headers=admin_auth), 405, "method_not_allowed")
    assert_envelope(admin.get("/api/jobs/1/retry", headers=admin_auth), 405, "method_not_allowed")


def test_an_unknown_api_path_is_404_in_the_envelope(admin, admin_auth):
    assert_envelope(admin.get("/api/nothing-here", headers=admin_auth), 404, "not_found")


# --- orders ---------------------------------------------------------------------------------------


def test_an_order_is_shown_with_items_intent_verification_and_session(admin, admin_auth, db):
    made = insert_order(db)
    response = admin.get(f"/api/orders/{made['order_id']}", headers=admin_auth)
    assert response.status_code == 200
    order = response.get_json()
    assert (order["order_id"], order["payment_intent_id"], order["status"], order["total_minor"],
            order["currency"]) == (made["order_id"], made["payment_intent_id"], "confirmed", 170_000, "NPR")
    assert order["order_number"].startswith("OP-")
    assert [(i["product_id"], i["vendor_id"], i["quantity"], i["unit_price_minor"], i["line_total_minor"],
             i["platform_fee_bps"], i["fulfillment_status"]) for i in order["items"]] == [
        (made["product_id"], made["vendor_id"], 2, 85_000, 170_000, 1200, "pending")]
    intent = order["payment_intent"]
    assert (intent["payment_intent_id"], intent["provider"], intent["status"], intent["amount_minor"],
            intent["currency"]) == (made["payment_intent_id"], "khalti", "order_created", 170_000, "NPR")
    assert {"status_reason", "created_at", "updated_at", "paid_at", "expires_at"} <= set(intent)
    verification = order["verification"]
    assert (verification["provider"], verification["external_transaction_id"], verification["amount_minor"],
            verification["source"]) == ("khalti", "txn-42", 170_000, "verify_payment")
    assert verification["verified_at"].endswith("Z")
    session = order["verification_session"]
    assert (session["status"], session["decided_at"]) == ("pending", None) and session["deadline_at"]
    assert order["refunds"] == []
    # The gateway's blobs (client secrets, raw answers) stay out of the operator's view.
    text = response.get_data(as_text=True)
    assert "pi_secret_do_not_show" not in text and "gateway-raw" not in text


def test_an_order_without_an_identity_check_has_a_null_session(admin, admin_auth, db):
    made = insert_order(db, with_session=False)
    assert admin.get(f"/api/orders/{made['order_id']}", headers=admin_auth).get_json()["verification_session"] is None


def test_a_missing_order_is_404_and_a_malformed_id_422(admin, admin_auth):
    assert_envelope(admin.get(f"/api/orders/{SOME_UUID}", headers=admin_auth), 404, "order_not_found")
    for bad in ("nope", "'; DROP TABLE orders; --", "0" * 33):
        error = assert_envelope(admin.get(f"/api/orders/{bad}", headers=admin_auth), 422, "validation_error")
        assert error["details"]["fields"][0]["field"] == "order_id"


# --- per-vendor days (read straight from vendor_daily) --------------------------------------------


def test_vendor_days_cover_every_day_with_zeros_where_nothing_sold(admin, admin_auth, db):
    vendor_id = make_vendor(db)
    with db.connection() as conn:
        conn.execute(
            """
            INSERT INTO vendor_daily (vendor_id, day, orders, gmv_minor, platform_fees_minor)
            VALUES (:v, (now() AT TIME ZONE 'UTC')::date - 1, 3, 255000, 25500)
            """,
            v=str(vendor_id),
        )
    days = admin.get(f"/api/vendors/{vendor_id}/daily?days=7", headers=admin_auth).get_json()
    assert len(days) == 7
    assert [d["day"] for d in days] == sorted(d["day"] for d in days)
    assert (days[-2]["orders"], days[-2]["gmv_minor"], days[-2]["platform_fees_minor"]) == (3, 255_000, 25_500)
    assert sum(d["orders"] for d in days) == 3
    assert len(admin.get(f"/api/vendors/{vendor_id}/daily", headers=admin_auth).get_json()) == 30
    assert_envelope(admin.get(f"/api/vendors/{SOME_UUID}/daily", headers=admin_auth), 404, "vendor_not_found")
    assert_envelope(admin.get("/api/vendors/nope/daily", headers=admin_auth), 422, "validation_error")
    for days_param in ("0", "367", "x"):
        assert_envelope(admin.get(f"/api/vendors/{vendor_id}/daily?days={days_param}", headers=admin_auth),
                        422, "validation_error")


# --- the page ---------------------------------------------------------------------------------------


def test_the_page_loads_without_a_token_and_holds_no_data(page_client):
    response = page_client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<base href="/">' in html
    assert 'src="assets/app.js"' in html and 'href="assets/app.css"' in html
    assert "http://" not in html and "https://" not in html  # nothing from outside this origin
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_knows_where_it_is_mounted(page_client):
    # Under `orderpipe dev` admin lives at /admin/: the base makes every relative URL land inside it.
    response = page_client.get("/", environ_overrides={"SCRIPT_NAME": "/admin"})
    assert '<base href="/admin/">' in response.get_data(as_text=True)
    hostile = page_client.get("/", environ_overrides={"SCRIPT_NAME": '/x"><script>alert(1)</script>'})
    assert "<script>alert(1)" not in hostile.get_data(as_text=True)


@pytest.mark.parametrize(("name", "content_type"), [("app.js", "text/javascript"), ("app.css", "text/css"),
                                                    ("favicon.svg", "image/svg+xml")])
def test_the_page_assets_are_served_with_their_content_types(page_client, name, content_type):
    response = page_client.get(f"/assets/{name}")
    assert response.status_code == 200
    assert response.mimetype == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(response.get_data()) > 100


def test_the_script_loads_nothing_from_elsewhere_and_never_writes_markup(page_client):
    # The SVG namespace is a name, not a place the page goes to.
    script = page_client.get("/assets/app.js").get_data(as_text=True).replace('"http://www.w3.org/2000/svg"', "")
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "http://",
                      "https://", "localStorage"):
        assert forbidden not in script
    assert "sessionStorage" in script and "Authorization" in script


@pytest.mark.parametrize("path", [
    "/assets/../main.py", "/assets/..%2Fmain.py", "/assets/%2e%2e%2fmain.py", "/assets/..%5C__init__.py",
    "/assets/__init__.py", "/assets/index.html", "/assets/", "/assets/app.js%00.py", "/assets/.%2e/.%2e/pyproject.toml",
    "/assets//etc/passwd", "/assets/%2Fetc%2Fpasswd",
])
def test_anything_but_the_page_assets_is_refused(page_client, path):
    response = page_client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    text = response.get_data(as_text=True)
    assert "import " not in text and "root:" not in text


# --- metrics (shared.flows.metrics) ---------------------------------------------------------------


def test_the_vendor_dashboard_shows_today_and_the_last_30_days(admin, admin_auth, db):
    vendor_id = str(make_vendor(db))
    with db.connection() as conn:
        conn.execute(
            """
            INSERT INTO vendor_daily (vendor_id, day, orders, gmv_minor, refunds_minor, platform_fees_minor,
                                      payouts_minor)
            VALUES (:v, (now() AT TIME ZONE 'UTC')::date, 2, 170000, 0, 17000, 153000),
                   (:v, (now() AT TIME ZONE 'UTC')::date - 3, 1, 50000, 10000, 5000, 35000)
            """,
            v=vendor_id,
        )
    response = admin.get(f"/api/vendors/{vendor_id}/dashboard", headers=admin_auth)
    assert response.status_code == 200
    board = response.get_json()
    assert board["vendor_id"] == vendor_id
    assert board["today"] == {"orders": 2, "gmv_minor": 170_000, "refunds_minor": 0, "platform_fees_minor": 17_000}
    month = board["last_30_days"]
    assert {k: month[k] for k in ("orders", "gmv_minor", "refunds_minor", "platform_fees_minor", "payouts_minor")} == {
        "orders": 3, "gmv_minor": 220_000, "refunds_minor": 10_000, "platform_fees_minor": 22_000,
        "payouts_minor": 188_000}
    assert "pending_payout_minor" in month and board["generated_at"]


def test_the_vendor_dashboard_of_an_unknown_or_malformed_vendor(admin, admin_auth):
    assert admin.get(f"/api/vendors/{SOME_UUID}/dashboard", headers=admin_auth).status_code == 404
    error = assert_envelope(admin.get("/api/vendors/not-a-uuid/dashboard", headers=admin_auth), 422,
                            "validation_error")
    assert error["details"]["fields"][0]["field"] == "vendor_id"


def test_platform_daily_has_a_row_for_every_day(admin, admin_auth, db):
    with db.connection() as conn:
        conn.execute(
            """
            INSERT INTO platform_daily (day, orders, gmv_minor, refunds_minor, platform_fees_minor)
            VALUES ((now() AT TIME ZONE 'UTC')::date, 4, 400000, 1000, 40000)
            """
        )
    days = admin.get("/api/platform/daily?days=7", headers=admin_auth).get_json()
    assert len(days) == 7
    assert all(set(day) >= {"day", "orders", "gmv_minor", "refunds_minor", "platform_fees_minor"} for day in days)
    assert [d["day"] for d in days] == sorted({d["day"] for d in days})
    assert {k: days[-1][k] for k in ("orders", "gmv_minor", "refunds_minor", "platform_fees_minor")} == {
        "orders": 4, "gmv_minor": 400_000, "refunds_minor": 1000, "platform_fees_minor": 40_000}
    assert len(admin.get("/api/platform/daily", headers=admin_auth).get_json()) == 30
    assert len(admin.get("/api/platform/daily?days=366", headers=admin_auth).get_json()) == 366


def test_platform_daily_days_out_of_range_is_422(admin, admin_auth):
    for days in ("0", "367", "-1", "abc", "1.5", "99999999999999999999"):
        error = assert_envelope(admin.get(f"/api/platform/daily?days={days}", headers=admin_auth), 422,
                                "validation_error")
        assert error["details"]["fields"][0]["field"] == "days"


def test_a_payment_paid_long_ago_without_its_order_shows_in_the_health_report(admin, admin_auth, db):
    stalled = insert_intent(db, status="paid")
    recent = insert_intent(db, status="paid")
    with db.connection() as conn:
        conn.execute("UPDATE payment_intents SET paid_at = now() - interval '25 minutes' WHERE payment_intent_id = :p",
                     p=stalled)
        conn.execute("UPDATE payment_intents SET paid_at = now() - interval '1 minute' WHERE payment_intent_id = :p",
                     p=recent)
    report = admin.get("/api/health-report", headers=admin_auth).get_json()
    [check] = [c for c in report["checks"] if c["name"] == "paid_intents_get_orders"]
    assert (check["ok"], check["breaches"]) == (False, 1)
    assert check["sample"][0]["payment_intent_id"] == stalled
    assert 25 * 60 <= check["sample"][0]["waiting_s"] < 26 * 60
    assert report["ok"] is False
