"""The delivery acceptance suite with both headends on PostgreSQL (Debian's server, started by
the test): its own file so the two-worker run puts it beside the SQLite one, not after it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system.conftest import Simulator
from tests.system.test_deliveries import delivery_suite


@pytest.mark.parametrize("headend_database", ["postgresql"], indirect=True)
def test_each_party_receives_exactly_its_profile_with_postgresql(
        tmp_path: Path, meter_sim: Callable[..., Simulator], headend_database: Callable[[str], str]) -> None:
    delivery_suite(tmp_path, meter_sim, headend_database)
