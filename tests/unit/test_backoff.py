"""Backoff after consecutive meter failures: grows, is jittered, is capped."""

from __future__ import annotations

import random

from appliance.gateway import MAX_BACKOFF, backoff_delay


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 30.0, rng) for n in range(1, 12)]
    assert 3.75 <= delays[0] <= 6.25
    assert delays[3] > delays[0] * 4
    assert max(delays) <= MAX_BACKOFF * 1.25
    assert backoff_delay(1, 1.0, rng) <= 1.25, "never waits longer than a short poll interval at first"


def test_one_doubling_rule_with_each_retry_s_own_first_delay_cap_and_jitter() -> None:
    from appliance.backoff import doubling, jittered
    from appliance.sender import MAX_BACKOFF_S, backoff

    assert [doubling(n, 2.0, 30.0) for n in range(7)] == [2.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert doubling(10_000, 1.0, 60.0) == 60.0  # a long outage's count never overflows
    rng = random.Random(7)
    assert all(5.0 <= jittered(10.0, rng, 0.5, 1.0) < 10.0 for _ in range(200))
    # the outbox: 2, 4, 8 .. an hour, shortened by up to half, never lengthened
    sends = [backoff(n, rng) for n in range(1, 20)]
    assert 1.0 <= sends[0] <= 2.0 and 4.0 <= sends[2] <= 8.0 and max(sends) <= MAX_BACKOFF_S
