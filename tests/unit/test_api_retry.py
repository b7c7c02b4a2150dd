"""The admin API is tried again while its tunnel stays up, ever further apart."""

from __future__ import annotations

from appliance.gatewatcher_service import ApiRetry


def test_a_refusal_is_retried_with_growing_delays_up_to_the_cap() -> None:
    retry = ApiRetry(first_s=2, max_s=5)
    assert not retry.due(now=0) and not retry.pending  # nothing refused yet: nothing to retry
    retry.attempted(False, now=0)
    assert retry.pending and not retry.due(now=1.9) and retry.due(now=2.0)
    retry.attempted(False, now=2)
    assert not retry.due(now=5.9) and retry.due(now=6.0)  # 4 s
    retry.attempted(False, now=6)
    assert not retry.due(now=10.9) and retry.due(now=11.0)  # 8 s, capped at 5
    retry.attempted(False, now=11)
    assert retry.due(now=16.0)


def test_success_or_a_new_tunnel_starts_over() -> None:
    retry = ApiRetry(first_s=2, max_s=30)
    retry.attempted(False, now=0)
    retry.attempted(False, now=2)
    retry.attempted(True, now=6)
    assert not retry.due(now=1000)  # up: no retry pending
    retry.attempted(False, now=1000)
    assert retry.due(now=1002)  # and the next refusal waits the first delay again
    retry.reset()
    assert not retry.due(now=2000)
