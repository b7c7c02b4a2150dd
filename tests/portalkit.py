"""A portal to test against: a store with two households' history, portal.json, and the real
server (``smgw-portal``, cheroot with TLS) as a child process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from portal.sample import fill

CODES = {"alice": "ALICE-CODE-0001", "bob": "BOB-CODE-000001"}
METERS = {"alice": ("ISK-A-0001",), "bob": ("ISK-B-0002",)}
PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pass"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_doc(root: Path, port: int = 0, max_streams: int = 2) -> dict[str, Any]:
    return {
        "version": 1, "gateway_id": "gw-test", "listen": {"address": "127.0.0.1", "port": port},
        "tls": {"cert": str(root / "tls" / "portal.crt"), "key": str(root / "tls" / "portal.key")},
        "store": str(root / "smgw.db"), "state_dir": str(root / "portal-state"), "run_dir": str(root / "run"),
        "timezone": "Europe/Berlin", "threads": 8, "max_streams": max_streams, "session_hours": 12,
        "consumers": [{"name": name, "meters": list(METERS[name]),
                       "setup_code_sha256": hashlib.sha256(CODES[name].encode()).hexdigest()} for name in CODES],
        "profiles": [{"name": "dso-taf7", "party": "dso", "source": "load_profile",
                      "values": [{"address": "1.5", "unit": "kW", "meaning": "average power imported per interval"}],
                      "aggregation": "mean", "interval_s": 900, "resolution": 3, "identity": "pseudonym",
                      "send_every_s": 86400, "retention_days": 90}],
    }


def build(root: Path, days: int = 9, port: int = 0, max_streams: int = 2) -> Path:
    """Store with history for alice's and bob's meters; returns the portal.json path."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now -= timedelta(minutes=now.minute % 15)
    fill(root / "smgw.db", METERS["alice"][0], now - timedelta(days=days), now, deliveries=3, party="dso")
    fill(root / "smgw.db", METERS["bob"][0], now - timedelta(days=days), now, base_kw=3.0,
         start_kwh=__import__("decimal").Decimal("77777.000"), deliveries=2, party="sup")
    (root / "run").mkdir(exist_ok=True)
    (root / "run" / "tunnels").mkdir(exist_ok=True)
    (root / "run" / "tunnels" / "dso.json").write_text(json.dumps({"name": "dso", "state": "CONNECTED", "detail": ""}))
    (root / "run" / "selftest.json").write_text(json.dumps(
        {"database": {"name": "database", "ok": True, "critical": True, "detail": "ok", "at": now.isoformat()}}))
    path = root / "portal.json"
    path.write_text(json.dumps(settings_doc(root, port, max_streams)))
    return path


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(settings: Path) -> Running:
    """``smgw-portal --settings``; waits until it answers TLS on its port."""
    doc = json.loads(settings.read_text())
    port = doc["listen"]["port"]
    log = settings.with_name("portal.log")
    process = subprocess.Popen([sys.executable, "-m", "portal", "--settings", str(settings)],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"portal exited {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Running(process, f"https://127.0.0.1:{port}", log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"portal did not listen on {port}: {log.read_text()}")
