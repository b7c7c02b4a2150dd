"""Signed admin documents: the GWA's orders to a gateway over the admin API.

A CMS SignedData over a JSON body, signed by the GWA's admin key (role ``gwa-admin``):
``{gateway_id, action, issued_at, nonce, sequence, ...}`` with ``action`` one of
``profile.put`` (and a ``profile`` object) or ``profile.rm`` (and a ``name``). Like a
WakeUp, ``decode`` checks what needs no state (signature, chain, role, revocation, shape);
the gateway checks its id, the time window and the replay cache (the WakeUp's, so sequences
of both only grow).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509

from pki.cms import Signer, sign, verify
from pki.errors import InvalidNameError, PkiError
from pki.names import check_name

MAX_DOCUMENT = 32 * 1024
Action = Literal["profile.put", "profile.rm"]
_BASE = {"gateway_id", "action", "issued_at", "nonce", "sequence"}
_NONCE = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_PROFILE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class AdminDocError(PkiError):
    """The signed body is not an admin document."""


@dataclass(frozen=True, slots=True)
class AdminDoc:
    gateway_id: str
    action: Action
    issued_at: dt.datetime
    nonce: str
    sequence: int
    name: str                          #: the profile's name
    profile: dict[str, Any] | None     #: profile.put: the profile as in gateway.toml's [[profiles]]

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"gateway_id": self.gateway_id, "action": self.action,
                               "issued_at": self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "nonce": self.nonce,
                               "sequence": self.sequence}
        if self.action == "profile.put":
            doc["profile"] = self.profile
        else:
            doc["name"] = self.name
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def new_doc(gateway_id: str, action: Action, sequence: int, *, profile: dict[str, Any] | None = None,
            name: str | None = None, now: dt.datetime | None = None) -> AdminDoc:
    if action == "profile.put":
        if not isinstance(profile, dict) or not isinstance(profile.get("name"), str):
            raise AdminDocError("profile.put needs a profile with a name")
        name = profile["name"]
    if name is None or not _PROFILE_NAME.fullmatch(name):
        raise AdminDocError("a profile name is 1-32 of a-z 0-9 - starting with a letter")
    return AdminDoc(gateway_id=check_name(gateway_id), action=action,
                    issued_at=(now or dt.datetime.now(dt.UTC)).replace(microsecond=0), nonce=secrets.token_hex(16),
                    sequence=sequence, name=name, profile=profile)


def encode(doc: AdminDoc, cert: x509.Certificate, signer: Signer) -> bytes:
    der = sign(doc.to_json(), cert, signer)
    if len(der) > MAX_DOCUMENT:
        raise AdminDocError(f"document is {len(der)} bytes, over the {MAX_DOCUMENT} byte cap")
    return der


def parse_body(content: bytes) -> AdminDoc:
    try:
        doc = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AdminDocError("body is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise AdminDocError("body is not a JSON object")
    action = doc.get("action")
    if action not in ("profile.put", "profile.rm"):
        raise AdminDocError("action must be profile.put or profile.rm")
    fields = _BASE | ({"profile"} if action == "profile.put" else {"name"})
    if set(doc) != fields:
        raise AdminDocError(f"body must have exactly {sorted(fields)}, has {sorted(doc)}")
    gateway_id, issued_at, nonce, sequence = (doc[k] for k in ("gateway_id", "issued_at", "nonce", "sequence"))
    try:
        check_name(gateway_id if isinstance(gateway_id, str) else "")
    except InvalidNameError:
        raise AdminDocError("gateway_id is not a valid name") from None
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise AdminDocError("nonce must be 32 lowercase hex digits")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 <= sequence < 2**63:
        raise AdminDocError("sequence must be an integer 0 .. 2^63-1")
    if not isinstance(issued_at, str) or not _TIME.fullmatch(issued_at):
        raise AdminDocError("issued_at must be UTC as YYYY-MM-DDTHH:MM:SSZ")
    try:
        when = dt.datetime.strptime(issued_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise AdminDocError("issued_at is not a real time") from None
    profile = doc.get("profile")
    if action == "profile.put":
        if not isinstance(profile, dict) or not isinstance(profile.get("name"), str):
            raise AdminDocError("profile must be an object with a name")
        name = profile["name"]
    else:
        name = doc["name"]
    if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
        raise AdminDocError("the profile name is 1-32 of a-z 0-9 - starting with a letter")
    return AdminDoc(gateway_id=gateway_id, action=action, issued_at=when, nonce=nonce, sequence=sequence,
                    name=name, profile=profile)


def decode(der: bytes, *, root: x509.Certificate, crl: x509.CertificateRevocationList | None,
           now: dt.datetime | None = None) -> tuple[AdminDoc, x509.Certificate]:
    """Verify as the gateway does (role gwa-admin, a CRL required); returns the document and its signer."""
    if len(der) > MAX_DOCUMENT:
        raise AdminDocError(f"document of {len(der)} bytes is over the {MAX_DOCUMENT} byte cap")
    content, signer = verify(der, root=root, role="gwa-admin", crl=crl, require_crl=True, now=now)
    return parse_body(content), signer
