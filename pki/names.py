"""Names that go into certificates: a strict pattern, checked before anything is signed.

A name later reaches OpenVPN configs (``verify-x509-name``), logs and HTML; refusing
everything but letters, digits, dot and hyphen here keeps every later use safe.
"""

from __future__ import annotations

import re

from pki.errors import InvalidNameError

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*")


def check_name(name: str) -> str:
    """Return ``name`` if it is a DNS-like label sequence of at most 64 characters."""
    if len(name) > 64 or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"name {name[:40]!r}: 1-64 characters, labels of letters, digits and '-' separated by '.'"
        )
    return name
