"""The netns testbed with its PKI: a CA, a SoftHSM2 token holding the gateway's TLS keys,
party servers with software keys, and a gateway.toml pointing at all of it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.lab import Lab
from appliance.lab_world import (  # noqa: F401 (the tests' names for the lab's constants)
    ADMIN_IDLE_S,
    ADMIN_NET,
    GWA,
    INGEST_PORT,
    PARTIES,
    PIN,
    SO_PIN,
    TUNNEL_NET,
    WAKEUP_PORT,
    build_world,
    gateway_toml,
)
from appliance.lab_world import headend_toml as _headend_toml
from tests.system.conftest import ROOT, SMGW, require_root
from tests.tools import missing


def require_tools() -> None:
    require_root()
    absent = [t for t in ("openvpn", "nft", "softhsm2-util", "ip") if shutil.which(t) is None]
    if absent:
        missing(" and ".join(absent))


@dataclass
class Bed:
    lab: Lab
    root: Path
    env: dict[str, str]
    config: Path
    profile: str

    def smgw(self, role: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.lab.run(role, *SMGW, *args, timeout=timeout, env=self.env)

    def probe(self, role: str, kind: str, address: str, port: int = 0, timeout: float = 0.7) -> bool:
        done = self.lab.run(role, SMGW[0], str(ROOT / "tests/system/probe.py"), kind, address, str(port),
                            "--timeout", str(timeout), timeout=10 + timeout, env=self.env)
        return done.returncode == 0

    def listen(self, role: str, tcp: list[int] = (), udp: list[int] = ()) -> subprocess.Popen[bytes]:  # type: ignore[assignment]
        proc = self.lab.popen(role, SMGW[0], str(ROOT / "tests/system/probe.py"), "listen",
                              "--tcp", ",".join(map(str, tcp)), "--udp", ",".join(map(str, udp)),
                              env=self.env, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening"
        return proc


@contextmanager
def make_testbed(tmp_path: Path, profile: str) -> Iterator[Bed]:
    require_tools()
    root = tmp_path
    env = build_world(root, profile)
    config = root / "gateway.toml"
    config.write_text(gateway_toml(root, profile))
    lab = Lab(f"t{uuid.uuid4().hex[:5]}", hosts={**PARTIES, "gwa": GWA})
    try:
        lab.build()
        yield Bed(lab=lab, root=root, env=env, config=config, profile=profile)
    finally:
        lab.close()


class JsonLines:
    """An ``smgw`` command inside the gateway namespace whose JSON lines are collected by a
    reader thread, so a test that sleeps never leaves the child blocked on a full pipe."""

    def __init__(self, bed: Bed, *command: str, seconds: float) -> None:
        self.proc = bed.lab.popen("gw", *SMGW, *command, "--config", str(bed.config), "--seconds", str(seconds),
                                  env=bed.env, stdout=subprocess.PIPE)
        self.lines: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                self.lines.append(line)

    def wait_for(self, predicate: Callable[[dict[str, object]], bool], timeout: float,
                 after: dict[str, object] | None = None) -> dict[str, object] | None:
        """The first line that matches (after the line ``after``, if given)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            seen = 0 if after is None else next(i for i, line in enumerate(self.lines) if line is after) + 1
        while True:
            with self._lock:
                fresh = self.lines[seen:]
            for line in fresh:
                if predicate(line):
                    return line
            seen += len(fresh)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)


def headend_toml(bed: Bed, name: str, database: str | None = None) -> Path:
    """The party's headend config in the testbed (its server, its ingest, its database)."""
    return _headend_toml(bed.root, name, bed.profile, database)
