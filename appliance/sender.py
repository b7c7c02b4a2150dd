"""The outbox sender: a party's deliveries, oldest first, through that party's tunnel only.

The connection is bound to the tunnel's own address, so the kernel can route it nowhere
but into the tunnel (and the firewall allows the ingest port only on that tunnel's
interface). A delivery leaves the outbox only when the headend answered 200 with its id, or
409 with its id and ``stored`` false (a copy of one it holds: see ``_held``); any other 4xx
that means "never" (a document or signer the headend will not take) sets it aside,
logged in the system log, so it cannot block the party's queue for ever; anything else is
retried with exponential backoff and jitter, and the next delivery of that party waits:
deliveries arrive in order.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import socket
import time
from contextlib import nullcontext
from dataclasses import dataclass

import h11

from appliance.audit import MacSource
from appliance.backoff import doubling, jittered
from appliance.store import Store
from pki.errors import PkiError

log = logging.getLogger("smgw.sender")
MAX_BACKOFF_S = 3600.0
MAX_ANSWER = 65536  #: an acknowledgement is a few hundred bytes
TRANSIENT_4XX = frozenset({408, 425, 429})  #: 4xx that say "later", not "never"


@dataclass(frozen=True, slots=True)
class Route:
    party: str
    host: str  #: the party's ingest address inside the tunnel
    port: int
    source: str | None  #: this gateway's tunnel address (None only in unit tests over loopback)


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds to the next try after ``attempts`` failures: 2, 4, 8 .. 3600, jittered by -50 %..0."""
    return jittered(doubling(attempts, 2.0, MAX_BACKOFF_S), rng, 0.5, 1.0)


def post(route: Route, payload: bytes, timeout: float) -> tuple[int, dict[str, object]]:
    """POST one delivery; the headend's status and JSON answer.

    h11 (the admin API's HTTP state machine too) and not http.client: it is the smaller
    import in a process that runs for years on 512 MB, and whatever the far end sends it
    answers with one error type, which becomes an ``OSError`` here like every other failure
    of the way (the outbox then retries later; nothing escapes ``send_due``).
    """
    source = (route.source, 0) if route.source else None
    deadline = time.monotonic() + timeout  # for the whole exchange: a peer dribbling bytes ends too
    with socket.create_connection((route.host, route.port), timeout=timeout, source_address=source) as sock:
        http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER)
        head = h11.Request(method="POST", target="/v1/deliveries", headers=[
            ("Host", f"{route.host}:{route.port}"), ("Content-Type", "application/cms"),
            ("Content-Length", str(len(payload))), ("Connection", "close")])
        try:
            sock.sendall(b"".join(http.send(e) or b"" for e in (head, h11.Data(data=payload), h11.EndOfMessage())))
            status, body = _answer(http, sock, deadline)
        except h11.ProtocolError as exc:
            raise ConnectionError(f"no complete HTTP answer from {route.host}:{route.port}: {exc}") from exc
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # (nested deep enough, the parser gives up that way)
        doc = {"error": f"not JSON: {bytes(body[:80])!r}"}
    return status, doc if isinstance(doc, dict) else {"error": "not a JSON object"}


def _answer(http: h11.Connection, sock: socket.socket, deadline: float) -> tuple[int, bytearray]:
    """Read the final response by ``deadline``: its status and body (at most ``MAX_ANSWER`` bytes)."""
    status, body, heard = 0, bytearray(), False
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = _recv_by(sock, deadline)
            if not data and not heard:
                raise ConnectionError("the headend closed the connection before it answered")
            heard = heard or bool(data)
            http.receive_data(data)  # b"" mid-answer: h11 raises (the answer was cut short)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_ANSWER:
                raise ConnectionError(f"the headend's answer is over {MAX_ANSWER} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return status, body


def _recv_by(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        return sock.recv(16384)
    except TimeoutError:
        raise TimeoutError("the headend did not answer in time") from None


def _held(status: int, doc: dict[str, object], delivery_id: str) -> bool:
    """The headend holds this delivery: stored now (200), or refused as a copy of one it
    stored before (409 naming this id, ``stored`` false: a resend after a lost answer)."""
    if doc.get("delivery_id") != delivery_id:
        return False
    return status == 200 or (status == 409 and doc.get("stored") is False)


def send_due(store: Store, route: Route, now: dt.datetime, rng: random.Random, *, limit: int = 100,
             timeout: float = 10.0, macs: MacSource | None = None) -> int:
    """Send the party's due deliveries in order; stop at the first failure. Returns how many were acknowledged.

    With ``macs`` each acknowledgement and its consumer-log row commit together; if the row
    cannot be sealed (token gone), the delivery stays in the outbox and goes again later
    (the headend stores by delivery id: the second copy is refused naming it, which is the
    acknowledgement).
    """
    sent = 0
    while sent < limit:
        item = store.next_pending(route.party)
        if item is None or item.next_attempt_at > now:
            return sent
        try:
            status, doc = post(route, item.payload, timeout)
        except OSError as exc:
            status, doc = 0, {"error": f"{type(exc).__name__}: {exc}"}
        if _held(status, doc, item.delivery_id):
            try:
                with macs() if macs is not None else nullcontext() as mac:
                    store.delivery_acked(item.delivery_id, now, mac)
                sent += 1
                continue
            except PkiError as exc:
                status, doc = 0, {"error": f"acknowledged, but its consumer-log row cannot be sealed: {exc}"}
        error = f"HTTP {status}: {doc.get('error', doc)}" if status else str(doc["error"])
        if 400 <= status < 500 and status not in TRANSIENT_4XX:
            # the headend will never take this one (bad document, revoked signer, ...): sending it
            # again would block every later delivery of the party, so it leaves the queue, logged
            try:
                with macs() if macs is not None else nullcontext() as mac:
                    store.delivery_refused(item.id, error, now, mac)
                log.error("delivery %s to %s refused for good (%s); the next goes on", item.delivery_id,
                          route.party, error)
                continue
            except PkiError as exc:  # cannot log it now: keep it and decide again next time
                error = f"{error}; not set aside: {exc}"
        retry = now + dt.timedelta(seconds=backoff(item.attempts + 1, rng))
        store.delivery_failed(item.id, error, retry)
        log.warning("delivery %s to %s failed (%s); retry at %s", item.delivery_id, route.party, error,
                    retry.isoformat())
        return sent
    return sent
