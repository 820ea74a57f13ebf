"""Live metrics on a real PostgreSQL: definitions, refresh jobs, coalescing, bursts, reconcile, backfill, drift."""

from __future__ import annotations

import random
import secrets
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner

from shared import errors
from shared.flows import metrics
from shared.flows.catalog import ProductIn, VendorIn, create_product, create_vendor
from shared.flows.invariants import run_checks
from shared.jobs.worker import run_job
from tests.helpers import wait_for

METRICS_CHECKS = ("metrics_vendor_daily_matches_orders", "metrics_platform_daily_matches_orders",
                  "metrics_rows_exist")


# --- building the world with plain SQL (the order flow is built elsewhere) ----------------------


def make_vendor(db, name: str, fee_bps: int) -> str:
    return str(create_vendor(db, VendorIn(business_name=name, platform_fee_bps=fee_bps))["vendor_id"])


def make_product(db, vendor_id: str, price_minor: int) -> str:
    product = ProductIn(vendor_id=vendor_id, name=f"p-{secrets.token_hex(3)}", price_minor=price_minor, stock=10_000)
    return str(create_product(db, product)["product_id"])


class Line:
    def __init__(self, product_id: str, vendor_id: str, quantity: int, unit_price_minor: int, fee_bps: int):
        self.product_id, self.vendor_id = product_id, vendor_id
        self.quantity, self.unit_price_minor, self.fee_bps = quantity, unit_price_minor, fee_bps

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price_minor

    @property
    def fee(self) -> int:  # round half up, the definition written independently of the SQL
        return (self.total * self.fee_bps + 5000) // 10000


def place_order(conn, lines: list[Line], *, created_at: datetime | None = None, cancelled: bool = False) -> dict:
    """cart → payment intent → order + items, as finalization leaves them; returns ids and created_at."""
    total = sum(line.total for line in lines)
    cart = conn.fetch_value("INSERT INTO carts (customer_id, currency, status) VALUES ('cust', 'NPR', 'ordered') "
                            "RETURNING cart_id")
    pid = "opi_" + secrets.token_hex(16)
    conn.execute("""INSERT INTO payment_intents (payment_intent_id, cart_id, customer_id, provider, amount_minor,
                    currency, status, expires_at) VALUES (:pid, :cart, 'cust', 'esewa', :amount, 'NPR',
                    'order_created', now() + interval '15 minutes')""", pid=pid, cart=str(cart), amount=total)
    order = conn.fetch_one(
        """INSERT INTO orders (order_number, payment_intent_id, customer_id, status, total_minor, currency,
                               created_at, cancelled_at)
           VALUES (:number, :pid, 'cust', :status, :total, 'NPR', COALESCE(CAST(:created_at AS timestamptz), now()),
                   CASE WHEN :status = 'cancelled' THEN now() END)
           RETURNING order_id, created_at""",
        number=f"T-{secrets.token_hex(6)}", pid=pid, status="cancelled" if cancelled else "confirmed", total=total,
        created_at=created_at.isoformat() if created_at else None)
    for line_no, line in enumerate(lines, start=1):
        conn.execute("""INSERT INTO order_items (order_id, line_no, product_id, vendor_id, product_name, quantity,
                        unit_price_minor, platform_fee_bps) VALUES (:order_id, :line_no, :product_id, :vendor_id,
                        'item', :quantity, :price, :bps)""",
                     order_id=str(order["order_id"]), line_no=line_no, product_id=line.product_id,
                     vendor_id=line.vendor_id, quantity=line.quantity, price=line.unit_price_minor, bps=line.fee_bps)
    return {"order_id": str(order["order_id"]), "payment_intent_id": pid, "created_at": order["created_at"]}


def vendor_row(conn, vendor_id: str, day: date) -> dict | None:
    return conn.fetch_one("""SELECT orders, gmv_minor, refunds_minor, platform_fees_minor, payouts_minor
                             FROM vendor_daily WHERE vendor_id = :v AND day = CAST(:d AS date)""",
                          v=vendor_id, d=day.isoformat())


def platform_row(conn, day: date) -> dict | None:
    return conn.fetch_one("""SELECT orders, gmv_minor, refunds_minor, platform_fees_minor
                             FROM platform_daily WHERE day = CAST(:d AS date)""", d=day.isoformat())


def figures(orders: int = 0, gmv: int = 0, refunds: int = 0, fees: int = 0) -> dict:
    return {"orders": orders, "gmv_minor": gmv, "refunds_minor": refunds, "platform_fees_minor": fees,
            "payouts_minor": gmv - fees - refunds}


def waiting_refresh_jobs(conn) -> list[int]:
    return [r["job_id"] for r in conn.fetch_all(
        "SELECT job_id FROM jobs WHERE kind = 'refresh_metrics' AND status IN ('pending', 'retryable') "
        "ORDER BY job_id")]


def drain_refresh_jobs(db, settings) -> int:
    """Run every waiting refresh job (and any they leave behind) to completion; return how many ran."""
    ran = 0
    while True:
        with db.connection() as conn:
            waiting = waiting_refresh_jobs(conn)
        if not waiting:
            return ran
        for job_id in waiting:
            assert run_job(db, settings, job_id).status == "completed"
            ran += 1


def metric_breaches(db) -> dict[str, list]:
    with db.connection() as conn:
        results = run_checks(conn)
    return {r["name"]: r["sample"] for r in results if r["name"] in METRICS_CHECKS and not r["ok"]}


@pytest.fixture
def shop(db):
    """Three vendors with awkward fees, a product each."""
    vendors = {name: make_vendor(db, name, bps) for name, bps in (("tea", 1250), ("crafts", 833), ("gear", 1000))}
    fees = {"tea": 1250, "crafts": 833, "gear": 1000}
    products = {name: make_product(db, vendors[name], 999) for name in vendors}
    return {"vendors": vendors, "fees": fees, "products": products}


@pytest.fixture(autouse=True)
def _no_dashboard_cache(monkeypatch):
    monkeypatch.setattr(metrics, "DASHBOARD_CACHE_TTL_S", 0.0)


# --- definitions -------------------------------------------------------------------------------


def test_a_vendor_day_equals_the_hand_computed_sums(db, shop):
    tea, crafts = shop["vendors"]["tea"], shop["vendors"]["crafts"]
    p_tea, p_crafts = shop["products"]["tea"], shop["products"]["crafts"]
    with db.transaction() as conn:
        # 2 × 10 = 20 at 12.5 % = 2.5 → 3 (half up; banker's rounding would say 2)
        first = place_order(conn, [Line(p_tea, tea, 2, 10, 1250), Line(p_crafts, crafts, 3, 333, 833)])
        # the fee snapshot on the line wins over the vendor's current 12.5 %: 999 at 10 % = 99.9 → 100
        place_order(conn, [Line(p_tea, tea, 1, 999, 1000)])
        # cancelled: counts nowhere
        cancelled = place_order(conn, [Line(p_tea, tea, 5, 1000, 1250)], cancelled=True)
    today = metrics.day_of(first["created_at"], db.settings)
    with db.transaction() as conn:
        # 1001 over tea 20 / crafts 999: 19.65 → 19 and 981.35 → 981; the last unit goes to the larger remainder
        assert metrics.record_refund(conn, payment_intent_id=first["payment_intent_id"], provider="stripe",
                                     external_refund_id="re_1", amount_minor=1001, currency="NPR",
                                     refunded_at=datetime.now(UTC))
        # a refund of a cancelled order is not counted either
        assert metrics.record_refund(conn, payment_intent_id=cancelled["payment_intent_id"], provider="stripe",
                                     external_refund_id="re_2", amount_minor=5000, currency="NPR",
                                     refunded_at=datetime.now(UTC))
        allocations = {str(r["vendor_id"]): r["amount_minor"] for r in conn.fetch_all(
            "SELECT a.vendor_id, a.amount_minor FROM refund_allocations a JOIN refunds r USING (refund_id) "
            "WHERE r.external_refund_id = 're_1'")}
    assert allocations == {tea: 20, crafts: 981}

    with db.connection() as conn:
        assert metrics.refresh_vendor_day(conn, tea, today) is True
        assert metrics.refresh_vendor_day(conn, crafts, today) is True
        assert metrics.refresh_platform_day(conn, today) is True
        assert vendor_row(conn, tea, today) == figures(orders=2, gmv=20 + 999, refunds=20, fees=3 + 100)
        # 999 at 8.33 % = 83.2167 → 83
        assert vendor_row(conn, crafts, today) == figures(orders=1, gmv=999, refunds=981, fees=83)
        assert platform_row(conn, today) == {"orders": 2, "gmv_minor": 20 + 999 + 999, "refunds_minor": 1001,
                                             "platform_fees_minor": 3 + 100 + 83}


def test_fees_round_half_up_per_line_not_per_day(db, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    with db.transaction() as conn:
        # each line 4 × 1 = 4 at 12.5 % = 0.5 → 1; summed first it would be 8 × 12.5 % = 1
        order = place_order(conn, [Line(p_tea, tea, 4, 1, 1250)])
        place_order(conn, [Line(p_tea, tea, 4, 1, 1250)])
    day = metrics.day_of(order["created_at"], db.settings)
    with db.connection() as conn:
        metrics.refresh_vendor_day(conn, tea, day)
        assert vendor_row(conn, tea, day) == figures(orders=2, gmv=8, fees=2)


def test_the_day_is_the_date_in_metrics_timezone(monkeypatch, app_env):
    from shared.runtime import get_runtime, reset_runtime

    monkeypatch.setenv("METRICS_TIMEZONE", "Asia/Kathmandu")  # UTC+05:45
    reset_runtime()
    db = get_runtime().db
    tea = make_vendor(db, "tea", 1000)
    product = make_product(db, tea, 100)
    before_midnight = datetime(2024, 3, 10, 18, 14, 59, tzinfo=UTC)  # 23:59:59 in Kathmandu
    at_midnight = datetime(2024, 3, 10, 18, 15, 0, tzinfo=UTC)  # 00:00:00 on the 11th
    assert metrics.day_of(before_midnight, db.settings) == date(2024, 3, 10)
    assert metrics.day_of(at_midnight, db.settings) == date(2024, 3, 11)
    with db.transaction() as conn:
        place_order(conn, [Line(product, tea, 1, 100, 1000)], created_at=before_midnight)
        place_order(conn, [Line(product, tea, 2, 100, 1000)], created_at=at_midnight)
        place_order(conn, [Line(product, tea, 3, 100, 1000)], created_at=at_midnight + timedelta(hours=23, minutes=59))
    with db.connection() as conn:
        for day in (date(2024, 3, 10), date(2024, 3, 11), date(2024, 3, 12)):
            metrics.refresh_vendor_day(conn, tea, day)
            metrics.refresh_platform_day(conn, day)
        assert vendor_row(conn, tea, date(2024, 3, 10)) == figures(orders=1, gmv=100, fees=10)
        assert vendor_row(conn, tea, date(2024, 3, 11)) == figures(orders=2, gmv=500, fees=50)
        assert vendor_row(conn, tea, date(2024, 3, 12)) == figures()
        assert platform_row(conn, date(2024, 3, 11))["orders"] == 2


def test_refreshing_twice_changes_nothing_the_second_time(db, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    with db.transaction() as conn:
        order = place_order(conn, [Line(p_tea, tea, 3, 999, 1250)])
    day = metrics.day_of(order["created_at"], db.settings)
    with db.connection() as conn:
        assert metrics.refresh_vendor_day(conn, tea, day) is True
        assert metrics.refresh_platform_day(conn, day) is True
        first = (vendor_row(conn, tea, day), platform_row(conn, day))
        assert metrics.refresh_vendor_day(conn, tea, day) is False
        assert metrics.refresh_platform_day(conn, day) is False
        assert (vendor_row(conn, tea, day), platform_row(conn, day)) == first
        # a vendor without sales gets its zero row
        assert metrics.refresh_vendor_day(conn, shop["vendors"]["gear"], day) is True
        assert vendor_row(conn, shop["vendors"]["gear"], day) == figures()


# --- jobs ---------------------------------------------------------------------------------------


def test_twenty_refresh_requests_for_one_vendor_day_leave_one_waiting_job(db, shop):
    tea = shop["vendors"]["tea"]
    day = date.today()
    for _ in range(20):
        with db.transaction() as conn:
            metrics.enqueue_refresh(conn, tea, day)
    with db.connection() as conn:
        rows = conn.fetch_all("SELECT payload, key, status FROM jobs WHERE kind = 'refresh_metrics'")
    assert len(rows) == 1
    assert rows[0]["key"] == f"metrics:{tea}:{day.isoformat()}"
    assert rows[0]["status"] == "pending"
    assert rows[0]["payload"] == {"vendor_id": tea, "day": day.isoformat()}


def test_the_refresh_job_writes_the_vendor_and_platform_rows(db, runtime, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    with db.transaction() as conn:
        order = place_order(conn, [Line(p_tea, tea, 2, 500, 1250)])
        day = metrics.day_of(order["created_at"], db.settings)
        metrics.enqueue_refresh(conn, tea, day)
    assert drain_refresh_jobs(db, runtime.settings) == 1
    with db.connection() as conn:
        assert vendor_row(conn, tea, day) == figures(orders=1, gmv=1000, fees=125)
        assert platform_row(conn, day) == {"orders": 1, "gmv_minor": 1000, "refunds_minor": 0,
                                           "platform_fees_minor": 125}


def test_a_refresh_job_with_a_bad_payload_is_dead_lettered(db, runtime):
    from shared import jobs

    with db.transaction() as conn:
        job = jobs.enqueue(conn, "refresh_metrics", {"vendor_id": "nope", "day": "2024-13-01"})
    assert run_job(db, runtime.settings, job.job_id).status == "dead"


def test_a_waiting_job_that_absorbed_an_order_cannot_start_before_that_order_commits(db, runtime, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    day = metrics.day_of(datetime.now(UTC), db.settings)
    with db.transaction() as conn:
        metrics.enqueue_refresh(conn, tea, day)
        job_id = waiting_refresh_jobs(conn)[0]
    outcome = {}
    with db.connection() as order_conn:
        with order_conn.transaction():
            place_order(order_conn, [Line(p_tea, tea, 1, 700, 1000)])
            metrics.enqueue_refresh(order_conn, tea, day)  # coalesces into the waiting job
            worker = threading.Thread(target=lambda: outcome.update(r=run_job(db, runtime.settings, job_id)))
            worker.start()
            wait_for(lambda: _someone_waits_for_a_lock(db), what="the claim to wait for the order")
        worker.join(10)
    assert outcome["r"].status == "completed"
    with db.connection() as conn:
        assert vendor_row(conn, tea, day) == figures(orders=1, gmv=700, fees=70)


def _someone_waits_for_a_lock(db) -> bool:
    with db.connection() as conn:
        return bool(conn.fetch_value("SELECT count(*) FROM pg_locks WHERE NOT granted"))


def test_the_last_of_two_concurrent_refreshes_of_a_day_sees_everything(db, shop):
    """The day lock is taken before the recomputation: a refresh that waited sees what committed meanwhile."""
    tea, gear = shop["vendors"]["tea"], shop["vendors"]["gear"]
    day = metrics.day_of(datetime.now(UTC), db.settings)
    with db.connection() as first:
        with first.transaction():
            metrics.refresh_vendor_day(first, tea, day)  # holds the day
            metrics.refresh_platform_day(first, day)
            second = threading.Thread(target=lambda: _refresh_in_own_transaction(db, gear, day))
            second.start()
            wait_for(lambda: _someone_waits_for_a_lock(db), what="the second refresh to wait for the day")
            with db.transaction() as conn:  # an order commits while both are in flight
                place_order(conn, [Line(shop["products"]["gear"], gear, 1, 400, 1000)])
        second.join(10)
    with db.connection() as conn:
        assert platform_row(conn, day)["gmv_minor"] == 400
        assert vendor_row(conn, gear, day) == figures(orders=1, gmv=400, fees=40)


def _refresh_in_own_transaction(db, vendor_id, day):
    with db.transaction() as conn:
        metrics.refresh_vendor_day(conn, vendor_id, day)
        metrics.refresh_platform_day(conn, day)


def test_a_burst_of_concurrent_orders_ends_with_metrics_equal_to_the_orders(db, runtime, shop):
    vendors, products, fees = shop["vendors"], shop["products"], shop["fees"]
    names = sorted(vendors)
    rng = random.Random(7)
    baskets = []
    for _ in range(100):
        chosen = rng.sample(names, rng.randint(1, 3))
        baskets.append([Line(products[n], vendors[n], rng.randint(1, 5), rng.choice([999, 1001, 4, 12_345]), fees[n])
                        for n in chosen])
    placed: list[tuple[datetime, list[Line]]] = []
    placed_lock = threading.Lock()
    producers_done = threading.Event()

    def produce(basket):
        with db.transaction() as conn:
            order = place_order(conn, basket)
            for vendor in {line.vendor_id for line in basket}:
                metrics.enqueue_refresh(conn, vendor, metrics.day_of(order["created_at"], db.settings))
        with placed_lock:
            placed.append((order["created_at"], basket))

    problems = []

    def consume():  # a worker running refresh jobs, concurrently with the orders and with itself
        with ThreadPoolExecutor(3) as pool:
            while True:
                finished = producers_done.is_set()
                with db.connection() as conn:
                    waiting = waiting_refresh_jobs(conn)
                try:
                    outcomes = list(pool.map(lambda job_id: run_job(db, runtime.settings, job_id), waiting))
                except errors.TransientError as exc:  # a claim that waited too long for an order: try again
                    problems.append(exc.code)
                    continue
                problems.extend(o for o in outcomes if o.status not in ("completed", "running", "retryable"))
                if finished and not waiting:
                    return

    consumer = threading.Thread(target=consume)
    consumer.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(produce, baskets))
    producers_done.set()
    consumer.join(120)
    assert not consumer.is_alive()
    assert problems == []
    drain_refresh_jobs(db, runtime.settings)

    expected_vendor = defaultdict(lambda: defaultdict(int))
    expected_platform = defaultdict(lambda: defaultdict(int))
    for created_at, basket in placed:
        day = metrics.day_of(created_at, db.settings)
        expected_platform[day]["orders"] += 1
        for vendor in {line.vendor_id for line in basket}:
            expected_vendor[(vendor, day)]["orders"] += 1
        for line in basket:
            for bucket in (expected_vendor[(line.vendor_id, day)], expected_platform[day]):
                bucket["gmv_minor"] += line.total
                bucket["platform_fees_minor"] += line.fee
    assert len(placed) == 100
    with db.connection() as conn:
        dead = conn.fetch_value("SELECT count(*) FROM jobs WHERE status <> 'completed'")
        for (vendor, day), sums in expected_vendor.items():
            assert vendor_row(conn, vendor, day) == figures(sums["orders"], sums["gmv_minor"], 0,
                                                            sums["platform_fees_minor"])
        for day, sums in expected_platform.items():
            assert platform_row(conn, day) == {"orders": sums["orders"], "gmv_minor": sums["gmv_minor"],
                                               "refunds_minor": 0, "platform_fees_minor": sums["platform_fees_minor"]}
    assert dead == 0
    assert metric_breaches(db) == {}

    today = metrics.day_of(datetime.now(UTC), db.settings)
    for vendor in vendors.values():
        sums = expected_vendor[(vendor, today)]
        assert metrics.vendor_dashboard(db, vendor)["today"] == {
            "orders": sums["orders"], "gmv_minor": sums["gmv_minor"], "refunds_minor": 0,
            "platform_fees_minor": sums["platform_fees_minor"]}
    last = metrics.platform_daily(db, days=1)[-1]
    assert last == {"day": today, "orders": expected_platform[today]["orders"],
                    "gmv_minor": expected_platform[today]["gmv_minor"], "refunds_minor": 0,
                    "platform_fees_minor": expected_platform[today]["platform_fees_minor"]}


# --- reading ------------------------------------------------------------------------------------


def test_the_dashboard_sums_today_and_the_last_30_days_and_what_is_still_owed(db, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    now = datetime.now(UTC)
    with db.transaction() as conn:
        today_order = place_order(conn, [Line(p_tea, tea, 1, 8000, 1250)])
        place_order(conn, [Line(p_tea, tea, 1, 4000, 1250)], created_at=now - timedelta(days=10))
        place_order(conn, [Line(p_tea, tea, 1, 2000, 1250)], created_at=now - timedelta(days=45))
        conn.execute("INSERT INTO vendor_payouts (vendor_id, amount_minor, currency) VALUES (:v, 1500, 'NPR')",
                     v=tea)
    with db.transaction() as conn:
        metrics.record_refund(conn, payment_intent_id=today_order["payment_intent_id"], provider="stripe",
                              external_refund_id="re_d", amount_minor=800, currency="NPR", refunded_at=now)
    metrics.backfill(db, days=60)
    board = metrics.vendor_dashboard(db, tea)
    assert board["vendor_id"] == tea
    assert board["today"] == {"orders": 1, "gmv_minor": 8000, "refunds_minor": 800, "platform_fees_minor": 1000}
    assert board["last_30_days"] == {"orders": 2, "gmv_minor": 12_000, "payouts_minor": 12_000 - 1500 - 800,
                                     "refunds_minor": 800, "platform_fees_minor": 1500,
                                     # all time: 14 000 − 1 750 fees − 800 refunded − 1 500 paid out
                                     "pending_payout_minor": 14_000 - 1750 - 800 - 1500}
    assert board["generated_at"].tzinfo is not None


def test_the_dashboard_of_an_unknown_vendor_is_not_found(db):
    with pytest.raises(errors.NotFound):
        metrics.vendor_dashboard(db, "8d1e1c8e-0000-4000-8000-000000000000")
    with pytest.raises(errors.NotFound):
        metrics.vendor_dashboard(db, "not-a-uuid")


def test_the_dashboard_answer_is_cached_for_a_few_seconds(db, shop, monkeypatch):
    monkeypatch.setattr(metrics, "DASHBOARD_CACHE_TTL_S", 60.0)
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    first = metrics.vendor_dashboard(db, tea)
    with db.transaction() as conn:
        order = place_order(conn, [Line(p_tea, tea, 1, 100, 1000)])
        metrics.refresh_vendor_day(conn, tea, metrics.day_of(order["created_at"], db.settings))
    assert metrics.vendor_dashboard(db, tea) == first
    monkeypatch.setattr(metrics, "DASHBOARD_CACHE_TTL_S", 0.0)
    metrics._dashboard_cache.clear()
    assert metrics.vendor_dashboard(db, tea)["today"]["gmv_minor"] == 100


def test_platform_daily_has_a_row_for_every_day_even_without_orders_or_stored_rows(db, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    with db.transaction() as conn:
        order = place_order(conn, [Line(p_tea, tea, 1, 300, 1000)])
        metrics.refresh_platform_day(conn, metrics.day_of(order["created_at"], db.settings))
    rows = metrics.platform_daily(db, days=7)
    today = metrics.day_of(datetime.now(UTC), db.settings)
    assert [r["day"] for r in rows] == [today - timedelta(days=n) for n in range(6, -1, -1)]
    assert rows[-1] == {"day": today, "orders": 1, "gmv_minor": 300, "refunds_minor": 0, "platform_fees_minor": 30}
    assert all(r == {"day": r["day"], "orders": 0, "gmv_minor": 0, "refunds_minor": 0, "platform_fees_minor": 0}
               for r in rows[:-1])
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM platform_daily") == 1
    assert len(metrics.platform_daily(db)) == 30


# --- backfill, reconcile, drift -----------------------------------------------------------------


def test_backfill_writes_a_row_per_vendor_per_day_and_reports_progress(db, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    with db.transaction() as conn:
        place_order(conn, [Line(p_tea, tea, 1, 500, 1250)], created_at=datetime.now(UTC) - timedelta(days=40))
    seen = []
    result = metrics.backfill(db, days=90, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(n, 90) for n in range(1, 91)]
    assert result == {"days": 90, "vendor_rows": 270, "changed": 270, "created": 270, "platform_changed": 90}
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM vendor_daily") == 270
        assert conn.fetch_value("SELECT count(DISTINCT day) FROM vendor_daily") == 90
        assert conn.fetch_value("SELECT count(*) FROM platform_daily") == 90
        assert conn.fetch_value("SELECT sum(gmv_minor) FROM vendor_daily") == 500
    assert metrics.backfill(db, days=90)["changed"] == 0  # idempotent


def test_reconcile_repairs_tampered_and_missing_rows_and_the_drift_invariant_sees_them(db, shop):
    tea, gear = shop["vendors"]["tea"], shop["vendors"]["gear"]
    with db.transaction() as conn:
        order = place_order(conn, [Line(shop["products"]["tea"], tea, 2, 999, 1250)])
    day = metrics.day_of(order["created_at"], db.settings)
    first = metrics.reconcile_metrics(db, window_hours=48)
    assert (first["days"], first["vendor_rows"]) == (3, 9)
    assert metric_breaches(db) == {}
    with db.connection() as conn:
        good_tea, good_platform = vendor_row(conn, tea, day), platform_row(conn, day)
        conn.execute("UPDATE vendor_daily SET gmv_minor = gmv_minor + 1 WHERE vendor_id = :v AND day = :d",
                     v=tea, d=day)
        conn.execute("UPDATE platform_daily SET orders = 7 WHERE day = :d", d=day)
        conn.execute("DELETE FROM vendor_daily WHERE vendor_id = :v AND day = :d", v=gear, d=day)

    breaches = metric_breaches(db)
    assert [(str(r["vendor_id"]), r["stored_gmv_minor"], r["gmv_minor"])
            for r in breaches["metrics_vendor_daily_matches_orders"]] == [(tea, 1999, 1998)]
    assert [(r["stored_orders"], r["orders"]) for r in breaches["metrics_platform_daily_matches_orders"]] == [(7, 1)]
    assert "metrics_rows_exist" not in breaches  # a missing zero row of today is within its grace

    repaired = metrics.reconcile_metrics(db, window_hours=48)
    assert (repaired["changed"], repaired["created"], repaired["platform_changed"]) == (2, 1, 1)
    with db.connection() as conn:
        assert vendor_row(conn, tea, day) == good_tea
        assert platform_row(conn, day) == good_platform
        assert vendor_row(conn, gear, day) == figures()
    assert metric_breaches(db) == {}


def test_an_order_with_a_waiting_refresh_is_not_drift_but_one_without_is(db, runtime, shop):
    tea, p_tea = shop["vendors"]["tea"], shop["products"]["tea"]
    metrics.reconcile_metrics(db, window_hours=24)
    with db.transaction() as conn:
        order = place_order(conn, [Line(p_tea, tea, 1, 100, 1000)])
        metrics.enqueue_refresh(conn, tea, metrics.day_of(order["created_at"], db.settings))
    assert metric_breaches(db) == {}  # the job will write it
    drain_refresh_jobs(db, runtime.settings)
    assert metric_breaches(db) == {}
    with db.transaction() as conn:
        place_order(conn, [Line(p_tea, tea, 1, 100, 1000)])  # a bug: nobody asked for a refresh
    assert set(metric_breaches(db)) == {"metrics_vendor_daily_matches_orders", "metrics_platform_daily_matches_orders"}


def test_a_missing_zero_row_is_a_breach_once_reconcile_had_its_chance(db, shop):
    tea = shop["vendors"]["tea"]
    metrics.reconcile_metrics(db, window_hours=24)
    yesterday = metrics.day_of(datetime.now(UTC), db.settings) - timedelta(days=1)
    with db.connection() as conn:
        conn.execute("UPDATE vendors SET created_at = now() - interval '10 days'")
        conn.execute("DELETE FROM vendor_daily WHERE vendor_id = :v AND day = :d", v=tea, d=yesterday)
        yesterday_started = conn.fetch_value("SELECT CAST(CAST(:d AS timestamp) AT TIME ZONE :tz AS timestamptz)",
                                             d=yesterday.isoformat(), tz=db.settings.metrics_timezone)
    breaches = metric_breaches(db)
    if datetime.now(UTC) - yesterday_started > timedelta(hours=26):
        assert [(str(r["vendor_id"]), r["day"]) for r in breaches["metrics_rows_exist"]] == [(tea, yesterday)]
    else:
        assert "metrics_rows_exist" not in breaches
    metrics.reconcile_metrics(db, window_hours=24)
    assert metric_breaches(db) == {}


def test_reconcile_refuses_an_unbounded_window(db):
    with pytest.raises(errors.ValidationFailed):
        metrics.reconcile_metrics(db, window_hours=24 * 365)


# --- refunds ------------------------------------------------------------------------------------


def test_a_refund_is_recorded_once_and_its_allocations_sum_to_it(db, runtime, shop):
    v, p, f = shop["vendors"], shop["products"], shop["fees"]
    with db.transaction() as conn:
        order = place_order(conn, [Line(p["tea"], v["tea"], 1, 1000, f["tea"]),
                                   Line(p["crafts"], v["crafts"], 1, 1000, f["crafts"]),
                                   Line(p["gear"], v["gear"], 1, 1000, f["gear"])])
    refund = {"payment_intent_id": order["payment_intent_id"], "provider": "stripe", "external_refund_id": "re_x",
              "amount_minor": 100, "currency": "NPR", "refunded_at": datetime.now(UTC)}
    with db.transaction() as conn:
        assert metrics.record_refund(conn, **refund) is True
    with db.transaction() as conn:
        assert metrics.record_refund(conn, **refund) is False
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM refunds") == 1
        shares = sorted(r["amount_minor"] for r in conn.fetch_all("SELECT amount_minor FROM refund_allocations"))
        assert shares == [33, 33, 34]
        assert len(waiting_refresh_jobs(conn)) == 3
    drain_refresh_jobs(db, runtime.settings)
    day = metrics.day_of(refund["refunded_at"], db.settings)
    with db.connection() as conn:
        assert platform_row(conn, day)["refunds_minor"] == 100
        assert sum(vendor_row(conn, vendor, day)["refunds_minor"] for vendor in v.values()) == 100


def test_a_refund_for_an_unknown_intent_or_in_another_currency_is_refused(db, shop):
    with db.transaction() as conn:
        order = place_order(conn, [Line(shop["products"]["tea"], shop["vendors"]["tea"], 1, 100, 1250)])
    base = {"provider": "stripe", "external_refund_id": "re_y", "amount_minor": 10, "refunded_at": datetime.now(UTC)}
    with pytest.raises(errors.NotFound), db.transaction() as conn:
        metrics.record_refund(conn, payment_intent_id="opi_" + "0" * 32, currency="NPR", **base)
    with pytest.raises(errors.ValidationFailed), db.transaction() as conn:
        metrics.record_refund(conn, payment_intent_id=order["payment_intent_id"], currency="USD", **base)
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM refunds") == 0


# --- the command --------------------------------------------------------------------------------


def test_the_backfill_command_fills_the_last_days(db, shop, app_env):
    from shared.flows.metrics_cli import metrics as metrics_group
    from shared.runtime import get_runtime

    result = CliRunner().invoke(metrics_group, ["backfill", "--days", "3"],
                                env={"DATABASE_URL": app_env["DATABASE_URL"]})
    assert result.exit_code == 0, result.output
    assert "3 days" in result.output
    with get_runtime().db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM vendor_daily") == 9
        assert conn.fetch_value("SELECT count(*) FROM platform_daily") == 3


def test_the_backfill_command_refuses_zero_days(app_env):
    from shared.flows.metrics_cli import metrics as metrics_group

    result = CliRunner().invoke(metrics_group, ["backfill", "--days", "0"])
    assert result.exit_code == 2


def test_the_command_takes_the_same_data_dir_option_as_the_others():
    from shared.cli import DATA_DIR_OPTION
    from shared.flows.metrics_cli import backfill

    def describe(option):
        return (option.opts, option.default, type(option.type), option.show_default, option.help)

    ours = next(p for p in backfill.params if p.name == "data_dir")
    theirs = DATA_DIR_OPTION(lambda data_dir: None).__click_params__[0]
    assert describe(ours) == describe(theirs)


def test_enqueue_refresh_outside_a_transaction_or_with_a_timestamp_is_refused(db, shop):
    with db.connection() as conn, pytest.raises(RuntimeError):
        metrics.enqueue_refresh(conn, shop["vendors"]["tea"], date.today())
    with db.transaction() as conn, pytest.raises(TypeError):
        metrics.enqueue_refresh(conn, shop["vendors"]["tea"], datetime.now(UTC))


def test_a_failed_enqueue_does_not_fail_the_order_transaction(db, shop, monkeypatch):
    def broken(conn, *args, **kwargs):  # a statement that fails in the database, aborting what it runs in
        conn.execute("SELECT 1 / 0")

    monkeypatch.setattr(metrics.jobs, "enqueue", broken)
    with db.transaction() as conn:
        order = place_order(conn, [Line(shop["products"]["tea"], shop["vendors"]["tea"], 1, 100, 1250)])
        metrics.enqueue_refresh(conn, shop["vendors"]["tea"], metrics.day_of(order["created_at"], db.settings))
    with db.connection() as conn:
        assert conn.fetch_value("SELECT count(*) FROM orders") == 1
