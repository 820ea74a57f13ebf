"""The chaos harness as a test: the promise holds while the pipeline is killed, restarted and starved.

The short version runs with the normal suite; `ORDERPIPE_CHAOS=long` (or `python -m bench.chaos`) runs
the long one. See tests/chaos/harness.py for the scenario.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.chaos.harness import config_from_env, run_chaos
from tests.helpers import ROOT

CONFIG = config_from_env()

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CONFIG.timeout_s)]


def test_every_captured_payment_becomes_one_order_or_lands_visibly_through_the_chaos(tmp_path, capsys):
    report = run_chaos(CONFIG, tmp_path / "chaos")
    (tmp_path / "chaos-report.json").write_text(report.to_json())
    results = os.environ.get("ORDERPIPE_CHAOS_RESULTS")
    if not results and CONFIG.mode == "long":
        results = str(ROOT / "bench" / "results" / f"chaos-long-{time.strftime('%Y%m%d-%H%M%S')}.json")
    if results:
        path = Path(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.to_json())
    with capsys.disabled():  # the counts are the point: print them even when the run passes
        print("\n" + report.render() + f"\nreport: {tmp_path / 'chaos-report.json'}  ({time.strftime('%X')})")
    assert report.breaches == [], "\n".join(report.breaches)
