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
