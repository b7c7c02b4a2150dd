"""The netns testbed with its PKI: a CA, a SoftHSM2 token holding the gateway's TLS keys,
party servers with software keys, and a gateway.toml pointing at all of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

from appliance.lab import Lab
from tests.system.conftest import ROOT, SMGW, require_root
from tests.tools import missing

PIN, SO_PIN = "246810", "13579135"
PARTIES = {"dso": IPv4Interface("192.0.2.11/24"), "supplier": IPv4Interface("192.0.2.12/24")}
GWA = IPv4Interface("192.0.2.20/24")  # the Gateway Administrator's host (its admin tunnel comes later)
TUNNEL_NET = {"dso": IPv4Interface("10.81.0.1/24"), "supplier": IPv4Interface("10.82.0.1/24")}
INGEST_PORT = 8443
WAKEUP_PORT = 7500
ADMIN_IDLE_S = 30
ADMIN_NET = IPv4Interface("10.90.0.1/24")


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

    def probe(self, role: str, kind: str, address: str, port: int = 0) -> bool:
        done = self.lab.run(role, SMGW[0], str(ROOT / "tests/system/probe.py"), kind, address, str(port),
                            timeout=10, env=self.env)
        return done.returncode == 0

    def listen(self, role: str, tcp: list[int] = (), udp: list[int] = ()) -> subprocess.Popen[bytes]:  # type: ignore[assignment]
        proc = self.lab.popen(role, SMGW[0], str(ROOT / "tests/system/probe.py"), "listen",
                              "--tcp", ",".join(map(str, tcp)), "--udp", ",".join(map(str, udp)),
                              env=self.env, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening"
        return proc


def _run(*argv: str, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv}: {done.stderr}"


def _gateway_toml(root: Path, profile: str, parties: dict[str, IPv4Interface]) -> str:
    lines = [
        '[gateway]\nid = "gw-0001"\n',
        '[interfaces.wan]\nname = "wan0"\naddress = "192.0.2.2/24"\n',
        '[interfaces.han]\nname = "han0"\naddress = "192.168.7.1/24"\n',
        f'[token]\nlabel = "smgw"\npin_file = "{root}/pin"\n',
        f'[pki]\nroot = "{root}/ca/ca.crt"\ncrl = "{root}/crl.pem"\n',
        f'[paths]\nstate = "{root}/state"\nrun = "{root}/run"\n',
        f'[store]\npath = "{root}/state/smgw.db"\n',
    ]
    for name, address in parties.items():
        lines.append(f'[[parties]]\nname = "{name}"\nserver_name = "{name}.example"\nprofile = "{profile}"\n'
                     f'ingest_port = {INGEST_PORT}\ntls_crypt_v2_key = "{root}/{name}.tc-client.key"\n'
                     f'encryption_cert = "{root}/{name}-enc.crt"\n'
                     f'remote = {{ address = "{address.ip}", port = 1194 }}\n')
    lines.append(f'[admin]\nserver_name = "gwa.example"\nprofile = "{profile}"\napi_port = 8443\n'
                 f'tls_crypt_v2_key = "{root}/admin.tc-client.key"\nidle_timeout_s = {ADMIN_IDLE_S}\n'
                 f'remote = {{ address = "{GWA.ip}", port = 1194 }}\n')
    lines.append(f'[wakeup]\nport = {WAKEUP_PORT}\n')
    return "\n".join(lines)


@contextmanager
def make_testbed(tmp_path: Path, profile: str) -> Iterator[Bed]:
    require_tools()
    root = tmp_path
    (root / "tokens").mkdir()
    (root / "softhsm2.conf").write_text(f"directories.tokendir = {root}/tokens\nobjectstore.backend = file\n"
                                        "log.level = ERROR\n")
    for name, secret in (("pin", PIN), ("so.pin", SO_PIN)):
        (root / name).write_text(secret + "\n")
        (root / name).chmod(0o600)
    env = {**os.environ, "SOFTHSM2_CONF": str(root / "softhsm2.conf"), "SMGW_CA_PASSPHRASE": "correct horse battery",
           "SMGW_TOKEN_PIN": PIN, "PYTHONPATH": str(ROOT)}
    smgw = [*SMGW]
    _run(*smgw, "pki", "init-ca", "--dir", str(root / "ca"), "--profile", profile, env=env, cwd=ROOT)
    _run(*smgw, "token", "init", "--so-pin-file", str(root / "so.pin"), env=env, cwd=ROOT)

    def enrol(key: str, role: str, stem: str) -> None:
        """A gateway key born in the token, its CSR to the CA, the certificate back: <stem>.csr, gw-<stem>.crt."""
        _run(*smgw, "token", "keygen", "--key", key, "--profile", profile, env=env, cwd=ROOT)
        _run(*smgw, "token", "csr", "--key", key, "--name", "gw-0001", "--out", str(root / f"{stem}.csr"),
             env=env, cwd=ROOT)
        _run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", role, "--name", "gw-0001",
             "--csr", str(root / f"{stem}.csr"), "--out", str(root / f"gw-{stem}"), env=env, cwd=ROOT)
        _run(*smgw, "token", "import", "--key", key, "--cert", str(root / f"gw-{stem}.crt"), env=env, cwd=ROOT)
    for name in PARTIES:
        _run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "party-tls", "--name", f"{name}.example",
             "--generate", "--out", str(root / f"{name}-server"), env=env, cwd=ROOT)
        enrol(f"gateway-tls-{name}", "gateway-tls", name)
        _run("openvpn", "--genkey", "tls-crypt-v2-server", str(root / f"{name}.tc-server.key"), env=env, cwd=ROOT)
        _run("openvpn", "--tls-crypt-v2", str(root / f"{name}.tc-server.key"), "--genkey", "tls-crypt-v2-client",
             str(root / f"{name}.tc-client.key"), env=env, cwd=ROOT)
    # deliveries: each party's encryption certificate (its side, software key), the gateway's SIG key in the token
    for name in PARTIES:
        _run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "party-enc", "--name", f"{name}.example",
             "--generate", "--out", str(root / f"{name}-enc"), env=env, cwd=ROOT)
    enrol("gateway-sig", "gateway-sig", "sig")
    # the GWA: its admin tunnel server, the gateway's admin key in the token, the wake-up signer
    _run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "gwa-admin", "--name", "gwa.example",
         "--generate", "--out", str(root / "gwa-server"), env=env, cwd=ROOT)
    _run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "gwa-wakeup", "--name", "gwa.example",
         "--generate", "--out", str(root / "gwa-wakeup"), env=env, cwd=ROOT)
    enrol("gateway-tls-admin", "gateway-tls", "admin")
    # the admin API's HTTPS key (role gateway-api), in the token like every gateway key
    enrol("gateway-api", "gateway-api", "api")
    _run("openvpn", "--genkey", "tls-crypt-v2-server", str(root / "admin.tc-server.key"), env=env, cwd=ROOT)
    _run("openvpn", "--tls-crypt-v2", str(root / "admin.tc-server.key"), "--genkey", "tls-crypt-v2-client",
         str(root / "admin.tc-client.key"), env=env, cwd=ROOT)
    _run(*smgw, "pki", "crl", "--dir", str(root / "ca"), "--out", str(root / "crl.pem"), env=env, cwd=ROOT)
    config = root / "gateway.toml"
    config.write_text(_gateway_toml(root, profile, PARTIES))
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

    def wait_for(self, predicate: Callable[[dict[str, object]], bool], timeout: float) -> dict[str, object] | None:
        deadline = time.monotonic() + timeout
        seen = 0
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
    root = bed.root
    database = database or f"sqlite:///{root}/{name}-headend/ingest.db"
    path = root / f"{name}-headend.toml"
    path.write_text(
        f'[headend]\nname = "{name}"\nserver_name = "{name}.example"\n'
        f'[tunnel]\nlisten = {{ address = "{PARTIES[name].ip}", port = 1194 }}\nnetwork = "{TUNNEL_NET[name]}"\n'
        f'profile = "{bed.profile}"\ncert = "{root}/{name}-server.crt"\nkey = "{root}/{name}-server.key"\n'
        f'tls_crypt_v2_server_key = "{root}/{name}.tc-server.key"\n'
        f'[pki]\nroot = "{root}/ca/ca.crt"\ncrl = "{root}/crl.pem"\n'
        f'[ingest]\nport = {INGEST_PORT}\ndatabase = "{database}"\n'
        f'enc_cert = "{root}/{name}-enc.crt"\nenc_key = "{root}/{name}-enc.key"\n'
        f'[paths]\nstate = "{root}/{name}-headend"\nrun = "{root}/{name}-headend/run"\n')
    return path
