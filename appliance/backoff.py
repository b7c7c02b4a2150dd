"""How long to wait before trying again: one doubling rule for every retry in the gateway
(the meter, the outbox, the admin API), each with its own first delay, cap and jitter.

Jitter spreads a fleet's retries after a shared outage (a headend back after maintenance
must not get every gateway's backlog in the same second); the admin API's retry has none,
since only one GWA waits for it.
"""

from __future__ import annotations

import random


def doubling(failures: int, first: float, cap: float) -> float:
    """``first`` after one failure, twice that after two, and so on, never over ``cap``."""
    exponent = min(max(1, failures) - 1, 62)  # far past any cap; keeps 2.0 ** n finite
    return min(cap, first * 2.0 ** exponent)


def jittered(delay: float, rng: random.Random, low: float, high: float) -> float:
    """``delay`` scaled by a uniform factor in [low, high)."""
    return delay * (low + rng.random() * (high - low))
