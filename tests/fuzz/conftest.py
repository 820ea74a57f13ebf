"""The fuzzing target: `orderpipe dev` in a subprocess (with its gateway simulator) on a fresh database.

Before any fuzzing, a few real things are made through the public API — carts, a payment intent per
provider, a paid and confirmed order, a signed eSewa redirect — so the generated requests can be
pointed at ids that exist (see `LIVE` in test_fuzz_http.py) and reach past "not found".
After the last fuzz test the database invariants must hold (`orderpipe check` exits 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from shared.db.pool import with_database
from shared.flows.catalog import DEMO_PRODUCTS, DEMO_VENDORS, demo_id
from shared.simulator.client import SimulatorClient
from tests.conftest import create_database, drop_database
from tests.helpers import ROOT, DevProcess, wait_for


@dataclass
class FuzzServer:
    dev: DevProcess
    database_url: str
    secrets: dict[str, str]
    live: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.dev.url

    def base_url(self, function: str) -> str:
        return f"{self.dev.url}/{function}"

    def failed_jobs(self) -> list[dict[str, Any]]:
        """Jobs that failed (retrying or dead), once the queue has run what is due."""
        admin = {"Authorization": f"Bearer {self.secrets['admin-token']}"}

        def settled():
            stats = httpx.get(f"{self.url}/admin/api/queue-stats", headers=admin, timeout=30).json()
            return stats["by_status"].get("running", 0) == 0 and stats["oldest_due_age_s"] <= 2

        wait_for(settled, timeout=30, interval=0.2, what="the job queue to run what is due")
        failed = []
        for status in ("retryable", "dead"):
            jobs = httpx.get(f"{self.url}/admin/api/jobs", params={"status": status, "limit": 100}, headers=admin,
                             timeout=30).json()["jobs"]
            failed += [{k: job[k] for k in ("job_id", "kind", "status", "attempts", "payload", "last_error")}
                       for job in jobs]
        return failed

    def check_invariants(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", "check", "--data-dir", str(self.dev.data_dir)],
            env={**os.environ, "DATABASE_URL": self.database_url, "LOG_LEVEL": "WARNING"},
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )


def _seed(server: FuzzServer) -> dict[str, list[Any]]:
    """Real ids to aim at, made as a storefront and a customer would make them."""
    http = httpx.Client(base_url=server.url, timeout=30)
    sim = SimulatorClient(f"http://127.0.0.1:{server.dev.sim_port}")
    products = [str(demo_id(name)) for _, name, _, _, _ in DEMO_PRODUCTS]

    def cart(lines):
        response = http.post("/checkout/carts", json={
            "customer_id": "fuzz-seed", "items": [{"product_id": p, "quantity": q} for p, q in lines]})
        assert response.status_code == 201, response.text
        return response.json()

    def intent(cart_id, provider):
        response = http.post("/checkout/payment-intents", json={"cart_id": cart_id, "provider": provider})
        assert response.status_code == 201, response.text
        return response.json()

    carts = [cart([(products[0], 1)]), cart([(products[1], 2), (products[2], 1)]), cart([(products[3], 1)])]
    intents = {provider: intent(cart([(products[2], 1)])["cart_id"], provider)
               for provider in ("esewa", "khalti", "stripe")}

    # One paid eSewa payment: its signed redirect data, verified into a confirmed order.
    paid = intent(cart([(products[0], 1)])["cart_id"], "esewa")
    fields = paid["gateway"]["fields"]
    sim.submit_esewa_form(paid["gateway"]["form_url"], fields)
    redirect = sim.pay("esewa", fields["transaction_uuid"])["redirect_url"]
    esewa_data = parse_qs(urlparse(redirect).query)["data"][0]
    verified = http.post("/verify_payment/", json={"payment_intent_id": paid["payment_intent_id"],
                                                    "esewa": {"data": esewa_data}})
    assert verified.status_code == 200 and verified.json()["verification"] == "verified", verified.text

    def confirmed():
        status = http.get("/order_status/", params={"payment_intent_id": paid["payment_intent_id"]}).json()
        return status if status["stage"] == "confirmed" else None

    order = wait_for(confirmed, timeout=30, interval=0.1, what="the seeded order to be confirmed")["order"]
    admin = {"Authorization": f"Bearer {server.secrets['admin-token']}"}
    jobs = http.get("/admin/api/jobs", params={"limit": 100}, headers=admin).json()["jobs"]
    http.close()
    return {
        "cart_id": [c["cart_id"] for c in carts],
        "payment_intent_id": [i["payment_intent_id"] for i in intents.values()] + [paid["payment_intent_id"]],
        "product_id": products,
        "vendor_id": [str(demo_id(name)) for name, _ in DEMO_VENDORS],
        "order_id": [order["order_id"]],
        "job_id": sorted({job["job_id"] for job in jobs})[:20],
        "esewa_data": [esewa_data],
        "khalti_pidx": [intents["khalti"]["gateway"]["pidx"]],
        "source": ["logistics"],  # the Standard Webhooks source the dev server knows
    }


def _start_our_own(data_dir: Path, env: dict[str, str], attempts: int = 3) -> tuple[DevProcess, dict[str, str]]:
    """`orderpipe dev` on free ports, made sure to be the server answering there.

    A free port can be taken by another process between the probe and the bind; then another server
    answers readyz. Ours is the one that knows the admin token it generated: else try other ports.
    """
    secrets_file = data_dir / "secrets.json"
    for attempt in range(attempts):
        dev = DevProcess(data_dir, env)
        try:
            dev.start()
            process = dev.process
            wait_for(lambda process=process: secrets_file.exists() or process.poll() is not None, timeout=30,
                     what="secrets.json of the dev server")
            if process.poll() is None and secrets_file.exists():
                secrets = json.loads(secrets_file.read_text())
                answer = httpx.get(f"{dev.url}/admin/api/queue-stats", timeout=10,
                                   headers={"Authorization": f"Bearer {secrets['admin-token']}"})
                if answer.status_code == 200:
                    return dev, secrets
        except (httpx.HTTPError, ValueError, KeyError, AssertionError):
            pass
        if dev.process is not None and dev.process.poll() is None:
            dev.terminate()
        if attempt == attempts - 1:
            raise AssertionError(f"orderpipe dev did not come up as the server on its port:\n"
                                 f"{dev.log_path.read_text(errors='replace')[-3000:]}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def fuzz_server(server_url, template_db, tmp_path_factory):
    name = create_database(server_url, template_db)
    database_url = with_database(server_url, name)
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    env = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "SECRET_BACKEND": "file"}
    dev, secrets = _start_our_own(data_dir, env)
    try:
        server = FuzzServer(dev, database_url, secrets)
        server.live = _seed(server)
        yield server
        # Whatever the fuzzer sent, every invariant still holds, and no job choked on what was accepted.
        failed = server.failed_jobs()
        assert failed == [], f"jobs failed on what the fuzzer sent:\n{json.dumps(failed, indent=1, default=str)}"
        checked = server.check_invariants()
        assert checked.returncode == 0, f"orderpipe check failed after fuzzing:\n{checked.stdout}\n{checked.stderr}"
        log = dev.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"the dev server logged a traceback while fuzzed:\n{log[-5000:]}"
    finally:
        if dev.process.poll() is None:
            dev.terminate()
        drop_database(server_url, name)
