from shared.jobs.queues import RetryPolicy


def test_backoff_follows_cloud_tasks_doubling_then_linear_then_cap():
    # GCP.md: min 10 s, max 300 s, doublings 3 → 10, 20, 40, 80, 160, 240, 300, 300 …
    policy = RetryPolicy(max_attempts=10, min_backoff_s=10, max_backoff_s=300, max_doublings=3)
    assert [policy.backoff_s(n) for n in range(8)] == [10, 20, 40, 80, 160, 240, 300, 300]


def test_zero_doublings_grow_linearly_from_the_start():
    policy = RetryPolicy(max_attempts=10, min_backoff_s=2, max_backoff_s=7, max_doublings=0)
    assert [policy.backoff_s(n) for n in range(5)] == [2, 4, 6, 7, 7]


def test_last_attempt_is_the_one_numbered_max_attempts():
    policy = RetryPolicy(max_attempts=3, min_backoff_s=1, max_backoff_s=10, max_doublings=2)
    assert [policy.is_last_attempt(n) for n in range(4)] == [False, False, True, True]
