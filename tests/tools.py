"""What a test needs from the machine: a skip on a developer laptop, a failure under CI=true
(CI installs everything, so a missing piece there is a broken CI, not a reason to skip)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} missing; CI installs it, so this is a failure")
    pytest.skip(f"{what} missing (under CI=true this is a failure)")
