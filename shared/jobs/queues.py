"""The two task queues and their retry rule, shared by Cloud Tasks (via infra/) and the local dispatcher."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Settings

ORDERS = "orders"  # work a customer waits for: finalize_order, process_webhook_event, refresh_metrics
TIMERS = "timers"  # scheduled work: expire_reservation, verification_deadline
QUEUES = (ORDERS, TIMERS)

# Cloud Tasks rate limits per queue, mirrored in infra/ (a test compares them). Concurrency stays
# under what order_worker can take at once (pool 8 × 5 instances, infra/functions.json): beyond it
# Cloud Run answers 429 and every 429 spends one of a task's attempts.
RATE_LIMITS = {
    ORDERS: {"max_dispatches_per_second": 200, "max_concurrent_dispatches": 32},
    TIMERS: {"max_dispatches_per_second": 50, "max_concurrent_dispatches": 8},
}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    min_backoff_s: float
    max_backoff_s: float
    max_doublings: int

    def backoff_s(self, retry_count: int) -> float:
        """Delay before retry number `retry_count + 1`, the way Cloud Tasks computes it.

        Start at min_backoff, double max_doublings times, then grow linearly by
        2^max_doublings × min_backoff, never above max_backoff (GCP.md: min 10, max 300, doublings 3
        → 10, 20, 40, 80, 160, 240, 300, …).
        """
        n = max(retry_count, 0)
        if n <= self.max_doublings:
            delay = self.min_backoff_s * 2**n
        else:
            step = self.min_backoff_s * 2**self.max_doublings
            delay = self.min_backoff_s * 2**self.max_doublings + step * (n - self.max_doublings)
        return min(delay, self.max_backoff_s)

    def is_last_attempt(self, retry_count: int) -> bool:
        """True when delivery number `retry_count + 1` is the queue's last."""
        return retry_count + 1 >= self.max_attempts


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.jobs_max_attempts,
        min_backoff_s=settings.jobs_min_backoff_s,
        max_backoff_s=settings.jobs_max_backoff_s,
        max_doublings=settings.jobs_max_doublings,
    )


def queue_id(settings: Settings, queue: str) -> str:
    """The Cloud Tasks queue id behind a logical queue."""
    return settings.tasks_queue_timers if queue == TIMERS else settings.tasks_queue_orders
