"""Helpers shared by the PKI tests."""

from __future__ import annotations

import os
import shutil

import pytest

PASS = b"correct horse battery"


def openssl() -> str:
    """The openssl binary; a skip on a laptop without it, a failure under CI=true."""
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl binary missing (CI installs it)")
        pytest.skip("openssl binary missing (under CI=true this is a failure)")
    return path
