"""reconcile's poll_stragglers: a payment nobody confirmed is found at the gateway, on the configured timetable.

The customer paid at Khalti and never came back to the shop (Khalti sends no webhook): only the
straggler poll can turn that payment into an order. STRAGGLER_AFTER_S and STRAGGLER_REPOLL_S say
when it is asked about and how often again.
"""

import pytest

from shared.flows import reconcile
from shared.runtime import get_runtime, reset_runtime
from tests.flows import TEA, new_intent


def poll(runtime):
    return reconcile.run(runtime, reconcile.ReconcileIn(tasks=["poll_stragglers"]))["ran"]["poll_stragglers"]


def status_of(runtime, intent):
    with runtime.db.connection() as conn:
        return conn.fetch_value("SELECT status FROM payment_intents WHERE payment_intent_id = :p",
                                p=intent["payment_intent_id"])


@pytest.fixture
def configure(simulator, monkeypatch):
    def runtime_with(**settings):
        for name, value in settings.items():
            monkeypatch.setenv(name, str(value))
        reset_runtime()
        return get_runtime()

    return runtime_with


def test_a_walked_away_payment_is_left_alone_until_it_is_a_straggler(configure, simulator):
    runtime = configure()  # the defaults: asked about after 180 s
    assert (runtime.settings.straggler_after_s, runtime.settings.straggler_repoll_s) == (180, 300)
    intent = new_intent(runtime, [(TEA, 1)], provider="khalti")
    simulator.pay("khalti", intent["gateway"]["pidx"])
    assert poll(runtime)["checked"] == 0
    assert status_of(runtime, intent) == "awaiting_payment"


def test_a_straggler_is_verified_at_the_gateway_once_its_time_has_come(configure, simulator):
    runtime = configure(STRAGGLER_AFTER_S=0)
    intent = new_intent(runtime, [(TEA, 1)], provider="khalti")
    simulator.pay("khalti", intent["gateway"]["pidx"])
    assert poll(runtime) == {"checked": 1, "verified": 1, "pending": 0, "failed": 0, "mismatch": 0,
                             "unavailable": 0}
    assert status_of(runtime, intent) == "paid"


def test_a_straggler_is_asked_again_only_after_the_repoll_interval(configure, simulator):
    runtime = configure(STRAGGLER_AFTER_S=0)  # the default repoll: 300 s
    intent = new_intent(runtime, [(TEA, 1)], provider="khalti")
    simulator.fault("khalti", "error", count=1)
    assert poll(runtime)["unavailable"] == 1  # asked once, during an outage
    simulator.pay("khalti", intent["gateway"]["pidx"])
    assert poll(runtime)["checked"] == 0  # not again so soon
    runtime = configure(STRAGGLER_REPOLL_S=0)
    assert poll(runtime)["verified"] == 1
    assert status_of(runtime, intent) == "paid"
