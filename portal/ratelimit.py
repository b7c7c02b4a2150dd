"""Growing delays after failed logins, per account and per source; never a lockout.

Pure: the state is (failures, last failure time), the answer is when the next attempt may
be made. Three attempts are free, then the wait doubles from 2 s up to 15 minutes. A
success forgets the account's and the source's failures; a day without failure forgets too.
"""

from __future__ import annotations

FREE_ATTEMPTS = 3
MAX_DELAY_S = 900.0
FORGET_AFTER_S = 86400.0


def delay_after(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure."""
    if failures < FREE_ATTEMPTS:
        return 0.0
    return min(MAX_DELAY_S, 2.0 ** (failures - FREE_ATTEMPTS + 1))


def wait_left(failures: int, last_failure_at: float, now: float) -> float:
    """Seconds until another attempt is allowed (0: now)."""
    if failures <= 0 or now - last_failure_at >= FORGET_AFTER_S:
        return 0.0
    return max(0.0, last_failure_at + delay_after(failures) - now)


def failures_now(failures: int, last_failure_at: float, now: float) -> int:
    """The failure count a new failure adds to (old failures are forgotten)."""
    return 0 if now - last_failure_at >= FORGET_AFTER_S else failures
