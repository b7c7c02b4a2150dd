"""Helpers shared by the PKI tests."""

from __future__ import annotations

import shutil

from tests.tools import missing

PASS = b"correct horse battery"


def openssl() -> str:
    """The openssl binary; a skip on a laptop without it, a failure under CI=true."""
    path = shutil.which("openssl")
    if path is None:
        missing("the openssl binary")
    return path
