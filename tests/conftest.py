"""Suite-wide rule: under CI=true nothing may skip. A skipped system test would hide a
missing OpenVPN, SoftHSM2 or root; in CI that must be a failure, not a quiet pass."""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (forbidden): {report.longrepr}"
