"""Fixtures for system tests: real processes, a real pty, the real serial transport.

These tests need no root (a pseudo-terminal is enough); tests that do need root, network
namespaces or real daemons use ``require_root`` and fail instead of skipping when CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pki.token import DEFAULT_MODULE, Token
from pki.token_init import init_softhsm_token
from tests.tools import missing

ROOT = Path(__file__).resolve().parents[2]
SMGW = [sys.executable, "-m", "appliance.cli"]


def require_root() -> None:
    """Skip on a developer laptop; under CI=true a missing precondition is a failure."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this system test needs root and CI=true forbids skipping it")
        pytest.skip("needs root (under CI=true this is a failure)")


def run_smgw(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SMGW, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


class Simulator:
    def __init__(self, link: Path, proc: subprocess.Popen[bytes]) -> None:
        self.link = link
        self.proc = proc


@pytest.fixture
def meter_sim(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    """Start ``smgw meter-sim`` with a scenario; stopped at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(scenario: str = "normal", *extra: str, name: str = "meter") -> Simulator:
        link = tmp_path / name
        proc = subprocess.Popen([*SMGW, "meter-sim", "--link", str(link), "--scenario", scenario, *extra],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        deadline = time.monotonic() + 15
        while not link.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"meter-sim exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError("meter-sim did not create its link")
            time.sleep(0.02)
        return Simulator(link, proc)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


PIN = "246810"


def need_softhsm() -> str:
    util = shutil.which("softhsm2-util")
    if util is None or not DEFAULT_MODULE.exists():
        missing("softhsm2 (softhsm2-util and its PKCS#11 module)")
    return util


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """One token for the session: the PKCS#11 library is loaded once per process and reads
    SOFTHSM2_CONF only then, so every test shares it (each uses its own key labels)."""
    util = need_softhsm()
    tmp_path = tmp_path_factory.mktemp("softhsm")
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    init_softhsm_token("gw-test", "13579135", PIN, util=util)
    yield Token("gw-test", PIN)


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """One throwaway PostgreSQL server per test process (Debian's package, a Unix socket only)."""
    from tests.pgcluster import require_postgresql, temporary_cluster

    with temporary_cluster(require_postgresql()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def headend_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``name -> database URL`` for a headend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return lambda name: f"sqlite:///{tmp_path}/{name}-ingest.db"
    server: str = request.getfixturevalue("postgresql_server")

    def fresh(name: str) -> str:
        import uuid

        import psycopg

        database = f"t_{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {database}")
        return server.replace("@/postgres?", f"@/{database}?", 1)

    return fresh


@pytest.fixture
def portal_account() -> Iterator[str]:
    """A system user and group of its own for the portal, as the Ansible role makes
    ``smgw-portal`` (nobody is refused: other services share it); removed afterwards."""
    require_root()
    if shutil.which("useradd") is None:
        missing("useradd (passwd)")
    name = f"smgwp{os.urandom(3).hex()}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", "--user-group", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
