"""WakeUp and BreakUp: a CMS SignedData over a small JSON body, signed by the GWA wake-up key.

``encode`` builds the datagram on the GWA side; ``decode`` checks everything that can be
checked without state (signature, chain to the pinned root, role ``gwa-wakeup``, validity,
revocation, the body's exact shape). What needs the gateway's state (is this my id, is the
time within the window, was the nonce or sequence seen) is the GateWatcher's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from pki.cms import Signer, sign, verify
from pki.errors import InvalidNameError, PkiError
from pki.names import check_name

MAX_DATAGRAM = 4096  #: a WakeUp with its certificate is about 1 kB; anything much larger is refused unread
Action = Literal["wakeup", "breakup"]
_FIELDS = {"gateway_id", "action", "issued_at", "nonce", "sequence"}
_NONCE = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


class WakeupFormatError(PkiError):
    """The signed body is not a WakeUp/BreakUp document."""


@dataclass(frozen=True, slots=True)
class WakeupBody:
    gateway_id: str
    action: Action
    issued_at: dt.datetime
    nonce: str
    sequence: int

    def to_json(self) -> bytes:
        return json.dumps({"gateway_id": self.gateway_id, "action": self.action,
                           "issued_at": self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "nonce": self.nonce,
                           "sequence": self.sequence}, sort_keys=True, separators=(",", ":")).encode()


def new_body(gateway_id: str, action: Action, sequence: int, now: dt.datetime | None = None) -> WakeupBody:
    return WakeupBody(gateway_id=check_name(gateway_id), action=action,
                      issued_at=(now or dt.datetime.now(dt.UTC)).replace(microsecond=0), nonce=secrets.token_hex(16),
                      sequence=sequence)


def encode(body: WakeupBody, cert: x509.Certificate, signer: Signer) -> bytes:
    datagram = sign(body.to_json(), cert, signer)
    if len(datagram) > MAX_DATAGRAM:
        raise WakeupFormatError(f"message is {len(datagram)} bytes, over the {MAX_DATAGRAM} byte cap")
    return datagram


def parse_body(content: bytes) -> WakeupBody:
    """The body's exact shape, or ``WakeupFormatError`` naming what is wrong."""
    try:
        doc = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WakeupFormatError("body is not UTF-8 JSON") from None
    if not isinstance(doc, dict) or set(doc) != _FIELDS:
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise WakeupFormatError(f"body must have exactly {sorted(_FIELDS)}, has {got}")
    gateway_id, action, issued_at, nonce, sequence = (doc[k] for k in ("gateway_id", "action", "issued_at",
                                                                       "nonce", "sequence"))
    if action not in ("wakeup", "breakup"):
        raise WakeupFormatError("action must be wakeup or breakup")
    if not isinstance(gateway_id, str):
        raise WakeupFormatError("gateway_id must be a string")
    try:
        check_name(gateway_id)
    except InvalidNameError:
        raise WakeupFormatError("gateway_id is not a valid name") from None
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise WakeupFormatError("nonce must be 32 lowercase hex digits")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 <= sequence < 2**63:
        raise WakeupFormatError("sequence must be an integer 0 .. 2^63-1")
    if not isinstance(issued_at, str) or not _TIME.fullmatch(issued_at):
        raise WakeupFormatError("issued_at must be UTC as YYYY-MM-DDTHH:MM:SSZ")
    try:
        when = dt.datetime.strptime(issued_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise WakeupFormatError("issued_at is not a real time") from None
    return WakeupBody(gateway_id=gateway_id, action=action, issued_at=when, nonce=nonce, sequence=sequence)


def decode(datagram: bytes, *, root: x509.Certificate, crl: x509.CertificateRevocationList | None,
           now: dt.datetime | None = None) -> WakeupBody:
    """Verify a datagram as the gateway does; every refusal is a ``PkiError`` subclass."""
    if len(datagram) > MAX_DATAGRAM:
        raise WakeupFormatError(f"datagram of {len(datagram)} bytes is over the {MAX_DATAGRAM} byte cap")
    content, _ = verify(datagram, root=root, role="gwa-wakeup", crl=crl, require_crl=True, now=now)
    return parse_body(content)
