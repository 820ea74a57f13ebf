"""The operator's dashboard in a real browser: sign in, see a dead job, press Retry, watch it complete.

Headless Debian Chromium (/usr/bin/chromium) driven by Playwright; admin and order_worker served over real
HTTP in this process, with the local task queue delivering the retried job. Playwright's own browser
downloads are never used: there is no network here, and the system Chromium is what CI installs.
"""

import random
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import jobs
from shared.flows import catalog, metrics
from shared.jobs import store
from shared.jobs.worker import run_job
from tests.helpers import ROOT, FunctionServer, WorkerServer, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "tests" / "artifacts" / "admin-dashboard.png"

pytestmark = pytest.mark.browser


def insert_sales(db, *, days=30, orders=60, seed=7):
    """Confirmed orders of the demo vendors spread over the last `days` days, then their metrics."""
    catalog.seed_demo(db)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with db.connection() as conn:
        products = conn.fetch_all("SELECT p.product_id, p.vendor_id, p.name, p.price_minor, v.platform_fee_bps "
                                  "FROM products p JOIN vendors v USING (vendor_id) ORDER BY p.name")
    with db.transaction() as conn:
        for _ in range(orders):
            product = rng.choice(products)
            quantity = rng.randint(1, 3)
            total = product["price_minor"] * quantity
            # More sales lately, as a growing shop would show.
            created = now - timedelta(days=min(days - 1, int(rng.triangular(0, days, 0))), minutes=rng.randint(0, 600))
            created = min(created, now - timedelta(minutes=1))
            cart_id = conn.fetch_value("INSERT INTO carts (customer_id, currency, status) "
                                       "VALUES ('cust', 'NPR', 'ordered') RETURNING cart_id")
            intent = "opi_" + secrets.token_hex(16)
            conn.execute(
                "INSERT INTO payment_intents (payment_intent_id, cart_id, customer_id, provider, amount_minor,"
                " currency, status, expires_at, created_at, paid_at) VALUES (:p, :c, 'cust', :provider, :amount,"
                " 'NPR', 'order_created', :created, :created, :created)",
                p=intent, c=cart_id, provider=rng.choice(["esewa", "khalti", "stripe"]), amount=total, created=created,
            )
            order_id = conn.fetch_value(
                "INSERT INTO orders (order_number, payment_intent_id, customer_id, total_minor, currency, created_at)"
                " VALUES ('OP-' || nextval('order_number_seq'), :p, 'cust', :total, 'NPR', :created)"
                " RETURNING order_id",
                p=intent, total=total, created=created,
            )
            conn.execute(
                "INSERT INTO order_items (order_id, line_no, product_id, vendor_id, product_name, quantity,"
                " unit_price_minor, platform_fee_bps) VALUES (:o, 1, :product, :vendor, :name, :q, :price, :bps)",
                o=order_id, product=product["product_id"], vendor=product["vendor_id"], name=product["name"],
                q=quantity, price=product["price_minor"], bps=product["platform_fee_bps"],
            )
    metrics.backfill(db, days=days + 1)


def insert_intent_needing_refund(db):
    intent = "opi_" + secrets.token_hex(16)
    with db.transaction() as conn:
        cart_id = conn.fetch_value(
            "INSERT INTO carts (customer_id, currency) VALUES ('cust-9', 'NPR') RETURNING cart_id")
        conn.execute(
            "INSERT INTO payment_intents (payment_intent_id, cart_id, customer_id, provider, amount_minor, currency,"
            " status, status_reason, expires_at, updated_at) VALUES (:p, :c, 'cust-9', 'khalti', 650000, 'NPR',"
            " 'needs_refund', 'stock gone before the order could be made', now(), now() - interval '3 hours')",
            p=intent, c=cart_id,
        )
    return intent


def job_status(db, job_id):
    with db.connection() as conn:
        return store.get(conn, job_id).status


def test_an_operator_signs_in_sees_a_dead_job_retries_it_and_it_completes(db, runtime, test_secrets, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium: run `apt-get install -y chromium` "
                    "(.ci/run does this when it is missing). Never `playwright install`.")
    from playwright.sync_api import expect, sync_playwright

    insert_sales(db)
    refund_intent = insert_intent_needing_refund(db)
    # Made dead before any queue runs, so nothing else touches it: it fails until a retry starts generation 1.
    with db.transaction() as conn:
        dead = jobs.enqueue(conn, "probe", {"fail_before_generation": 1})
        done = jobs.enqueue(conn, "noop")
    last = runtime.settings.jobs_max_attempts - 1
    assert run_job(db, runtime.settings, dead.job_id, retry_count=last).status == "dead"
    assert run_job(db, runtime.settings, done.job_id).status == "completed"

    console_errors = []
    with WorkerServer(runtime), FunctionServer("admin") as admin, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900}, locale="en-US", timezone_id="UTC",
        )
        try:
            # Generous waits: CI machines are shared; every expectation still retries until it holds.
            page = context.new_page()
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.on("pageerror", lambda exc: console_errors.append(str(exc)))
            page.goto(f"{admin.url}/")

            # A wrong token is refused and the page asks again.
            page.get_by_label("Admin token").fill("not-the-token")
            page.get_by_role("button", name="Open dashboard").click()
            expect(page.locator("#login-error")).to_contain_text("refused")
            expect(page.locator("#dashboard")).to_be_hidden()

            page.get_by_label("Admin token").fill(test_secrets["admin-token"])
            page.get_by_role("button", name="Open dashboard").click()
            expect(page.locator("#dashboard")).to_be_visible()

            dead_figure = page.locator('[data-figure="Dead"] .value')
            expect(dead_figure).to_have_text("1")
            expect(page.locator("#needs-refund")).to_contain_text(refund_intent)
            expect(page.locator("#needs-refund")).to_contain_text("6,500.00 NPR")
            expect(page.locator("#health-summary")).to_contain_text("invariants")
            expect(page.locator("#platform-gmv-chart svg rect.bar")).to_have_count(30)
            expect(page.locator("#vendor-orders-chart svg rect.bar")).to_have_count(30)
            expect(page.locator("#vendor-figures")).to_contain_text("Pending payout")

            row = page.locator(f'#jobs-body tr[data-job-id="{dead.job_id}"]')
            expect(row.locator(".pill")).to_have_text("dead")
            expect(page.locator(f'#jobs-body tr[data-job-id="{done.job_id}"]').get_by_role("button", name="Retry")
                   ).to_have_count(0)
            row.get_by_role("button", name="Retry").click()
            expect(page.locator("#banner")).to_contain_text(f"Job {dead.job_id}")

            wait_for(lambda: job_status(db, dead.job_id) == "completed", timeout=20,
                     what="the retried job to run to completion")
            page.get_by_role("button", name="Refresh", exact=True).click()
            expect(row.locator(".pill")).to_have_text("completed")
            expect(row.get_by_role("button", name="Retry")).to_have_count(0)
            expect(dead_figure).to_have_text("0")

            # Filters narrow the table to what an operator is hunting.
            page.locator("#filter-status").select_option("completed")
            page.locator("#filter-kind").fill("probe")
            page.get_by_role("button", name="Apply").click()
            expect(page.locator("#jobs-range")).to_have_text("1–1 of 1")
            expect(page.locator("#jobs-body tr[data-job-id]")).to_have_count(1)
            expect(row).to_be_visible()
            page.locator("#filter-status").select_option("dead")
            page.locator("#filter-kind").fill("")
            page.get_by_role("button", name="Apply").click()
            expect(page.locator("#jobs-body")).to_contain_text("No jobs match.")
            page.locator("#filter-status").select_option("")
            page.get_by_role("button", name="Apply").click()
            expect(row).to_be_visible()

            # An order looked up by id shows its items and payment.
            with db.connection() as conn:
                order = conn.fetch_one("SELECT order_id, order_number FROM orders ORDER BY created_at DESC LIMIT 1")
            page.locator("#order-input").fill(str(order["order_id"]))
            page.get_by_role("button", name="Look up").click()
            expect(page.locator("#order-result h3").first).to_contain_text(order["order_number"])
            expect(page.locator("#order-result")).to_contain_text("Payment intent")
            page.locator("#order-input").fill("not-an-order")
            page.get_by_role("button", name="Look up").click()
            expect(page.locator("#order-result")).to_contain_text("not an order id")
            page.locator("#order-input").fill(str(order["order_id"]))
            page.get_by_role("button", name="Look up").click()
            expect(page.locator("#order-result h3").first).to_contain_text(order["order_number"])

            page.evaluate("window.scrollTo(0, 0)")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            context.close()
    # Chromium logs every 4xx answer (the wrong token's 401, the bad order id's 422), which the page handled;
    # anything else — a script error, a CSP refusal — is a bug.
    assert [e for e in console_errors if not e.startswith("Failed to load resource: the server responded")] == []
