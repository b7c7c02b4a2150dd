"""Writing the three audit logs from a service, without ever taking the service down.

An ``Auditor`` belongs to one process and one ``Store`` (and so one thread). ``record``
never raises: a row that cannot be written now (database locked past the busy timeout,
disk full, token missing) waits in a bounded queue, in order, and goes in with the next
row that can; what overflows the queue is counted and the count itself is recorded once
writing works again, so nothing disappears without a trace. The system log is rate-limited
per event kind (a flood of refused datagrams must not become a flood of HMACs and rows):
what exceeds the rate is counted into one ``log.suppressed`` row. Consumer and calibration
rows are never rate-limited; each one matters.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from appliance.audit_chain import LogName, MacFunction, sha256_mac
from appliance.config import GatewayConfig
from appliance.gateway_token import gateway_token
from appliance.store import Store, StoreError
from pki.errors import PkiError

log = logging.getLogger("smgw.audit")
PENDING_MAX = 10_000
MacSource = Callable[[], AbstractContextManager[MacFunction]]


def mac_source(cfg: GatewayConfig, *, create: bool) -> MacSource:
    """How this gateway seals audit rows: an HMAC session on the token key, or SHA-256.

    ``create`` lets the writer make the key on first use; checking never creates one (a
    fresh key would only make every row fail, but it would also hide that the key is gone).
    """
    if cfg.logs.key == "none":
        @contextmanager
        def unkeyed() -> Iterator[MacFunction]:
            yield sha256_mac
        return unkeyed
    token = gateway_token(cfg)
    return lambda: token.hmac_session(cfg.logs.audit_key, create=create)


@dataclass(slots=True)
class _Row:
    log: LogName
    at: dt.datetime
    event: str
    consumer: str | None
    detail: Mapping[str, object]


@dataclass(slots=True)
class _Rate:
    tokens: float
    stamp: float
    suppressed: int = 0
    first_suppressed: dt.datetime | None = None


@dataclass(slots=True)
class Auditor:
    store: Store
    macs: MacSource
    rate_per_s: float = 20.0
    clock: Callable[[], float] = time.monotonic
    _pending: deque[_Row] = field(default_factory=deque)
    _lost: int = 0
    _rates: dict[str, _Rate] = field(default_factory=dict)

    @classmethod
    def for_config(cls, store: Store, cfg: GatewayConfig, *, create_key: bool = False) -> Auditor:
        """Only the core makes the token key (``create_key``): two processes making it at
        once would leave two keys under one label. Others' rows wait until it exists."""
        return cls(store, mac_source(cfg, create=create_key), rate_per_s=cfg.logs.rate_per_s)

    def record(self, log_name: LogName, event: str, detail: Mapping[str, object] | None = None, *,
               consumer: str | None = None, at: dt.datetime | None = None) -> bool:
        """Append one row (after any that wait); True if everything waiting is now written."""
        now = at or dt.datetime.now(dt.UTC)
        self._summaries()  # a finished flood's count goes in before what follows it
        if log_name == "system" and not self._allowed(event, now):
            return self.flush()
        self._queue(_Row(log_name, now, event, consumer, dict(detail or {})))
        return self.flush()

    def flush(self) -> bool:
        """Write what waits, including the counts of suppressed rows whose burst is over."""
        self._summaries()
        if not self._pending and not self._lost:
            return True
        try:
            with self.macs() as mac:
                if self._lost:
                    self.store.audit_append("system", dt.datetime.now(dt.UTC), "log.lost", None,
                                            {"rows": self._lost, "why": f"more than {PENDING_MAX} rows waited"},
                                            mac)
                    self._lost = 0
                while self._pending:
                    row = self._pending[0]
                    self.store.audit_append(row.log, row.at, row.event, row.consumer, row.detail, mac)
                    self._pending.popleft()
        except (StoreError, PkiError) as exc:
            log.warning("audit log: %d rows wait, not written yet: %s", len(self._pending), exc)
            return False
        return True

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def _queue(self, row: _Row) -> None:
        if len(self._pending) >= PENDING_MAX:
            self._pending.popleft()
            self._lost += 1
        self._pending.append(row)

    def _allowed(self, event: str, now: dt.datetime) -> bool:
        t = self.clock()
        burst = max(1.0, self.rate_per_s * 5)
        rate = self._rates.setdefault(event, _Rate(tokens=burst, stamp=t))
        rate.tokens = min(burst, rate.tokens + (t - rate.stamp) * self.rate_per_s)
        rate.stamp = t
        if rate.tokens >= 1.0:
            rate.tokens -= 1.0
            return True
        rate.suppressed += 1
        rate.first_suppressed = rate.first_suppressed or now
        return False

    def _summaries(self) -> None:
        """One row per event kind whose excess is over (its bucket refilled to one token)."""
        t = self.clock()
        for event, rate in self._rates.items():
            if rate.suppressed and rate.tokens + (t - rate.stamp) * self.rate_per_s >= 1.0:
                self._queue(_Row("system", dt.datetime.now(dt.UTC), "log.suppressed", None,
                                 {"event": event, "rows": rate.suppressed,
                                  "since": (rate.first_suppressed or dt.datetime.now(dt.UTC)).isoformat()}))
                rate.suppressed, rate.first_suppressed = 0, None
