"""The rendered systemd units pass ``systemd-analyze verify`` and stay hardened: each
service's exposure score from ``systemd-analyze security --offline`` is at most 2.5 ("OK")."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import load
from appliance.render import generate
from tests.tools import missing

ROOT = Path(__file__).resolve().parents[2]
IDS = {"gateway-tls-dso": "x/1", "gateway-tls-supplier": "x/2", "gateway-tls-admin": "x/3"}
MAX_EXPOSURE = 2.5


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze (package systemd)")
    return tool


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    # verify checks that ExecStart exists: point smgw and smgw-portal at a binary that does
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("smgw", "smgw-portal"):
        (bin_dir / name).symlink_to(shutil.which("true") or "/bin/true")
    files = generate(load(ROOT / "examples/gateway.toml"), IDS, smgw_binary=bin_dir / "smgw")
    out = []
    for name, text in files.items():
        if name.startswith("systemd/"):
            path = tmp_path / Path(name).name
            path.write_text(text)
            out.append(path)
    assert {p.name for p in out} >= {"smgw-core.service", "smgw-tunnel-dso.service", "smgw-tunnel-supplier.service",
                                     "smgw-gatewatcher.service",
                                     "smgw-selftest.service", "smgw-selftest.timer", "smgw-portal.service"}
    return out


def test_units_pass_systemd_analyze_verify(units: list[Path]) -> None:
    done = subprocess.run([_analyze(), "verify", *map(str, units)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_every_service_is_hardened(units: list[Path]) -> None:
    tool = _analyze()
    for unit in (u for u in units if u.suffix == ".service"):
        done = subprocess.run([tool, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                              timeout=60, check=False)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
        assert found, done.stdout + done.stderr
        assert float(found.group(1)) <= MAX_EXPOSURE, f"{unit.name}: exposure {found.group(1)}"
        text = unit.read_text()
        assert "User=smgw" in text and "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
    core = next(u for u in units if u.name == "smgw-core.service").read_text()
    assert "CapabilityBoundingSet=\n" in core  # the core holds no capability at all
    portal = next(u for u in units if u.name == "smgw-portal.service").read_text()
    # its own user; writes only its own state; the store, keys and PIN out of reach
    assert "User=smgw-portal" in portal and 'ReadWritePaths="/var/lib/smgw-portal"' in portal
    assert 'ReadOnlyPaths="/var/lib/smgw"' in portal and "/var/lib/softhsm" in portal
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in portal  # port 443, nothing else
