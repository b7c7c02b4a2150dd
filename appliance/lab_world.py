"""The lab's world: a CA, a SoftHSM2 token with the gateway's keys, two market parties and a
GWA with their software keys, and the configs that tie them together.

Shared by the netns tests and ``smgw demo``: both need the whole enrolment (keys born in the
token, CSRs to the CA, certificates back) and the same addresses. Everything is done through
the real ``smgw`` CLI and ``openvpn --genkey``, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

from appliance.errors import SmgwError
from appliance.lab import Lab
from appliance.render_server import ServerTunnel, render_server

ROOT = Path(__file__).resolve().parents[1]
SMGW = [sys.executable, "-m", "appliance.cli"]
PIN, SO_PIN = "246810", "13579135"
PARTIES = {"dso": IPv4Interface("192.0.2.11/24"), "supplier": IPv4Interface("192.0.2.12/24")}
GWA = IPv4Interface("192.0.2.20/24")  # the Gateway Administrator's host
TUNNEL_NET = {"dso": IPv4Interface("10.81.0.1/24"), "supplier": IPv4Interface("10.82.0.1/24")}
INGEST_PORT = 8443
WAKEUP_PORT = 7500
ADMIN_IDLE_S = 30
ADMIN_NET = IPv4Interface("10.90.0.1/24")
GATEWAY_ID = "gw-0001"
Progress = Callable[[str], None]
#: per-minute profiles, so that deliveries arrive within a minute or two (tests and demo)
LAB_PROFILES = """
[[profiles]]
name = "dso-rt"
party = "dso"
values = ["1.8.0"]
interval_s = 60
send_every_s = 60
resolution = 3

[[profiles]]
name = "supplier-rt"
party = "supplier"
values = ["1.8.0", "21.7.0"]
interval_s = 60
send_every_s = 60
resolution = 1
identity = "pseudonym"
"""


def run(*argv: str, env: dict[str, str]) -> None:
    done = subprocess.run(list(argv), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise SmgwError(f"{' '.join(argv[:6])}: {done.stderr.strip()[-400:]}")


def environment(root: Path) -> dict[str, str]:
    return {**os.environ, "SOFTHSM2_CONF": str(root / "softhsm2.conf"), "SMGW_CA_PASSPHRASE": "correct horse battery",
            "SMGW_TOKEN_PIN": PIN, "PYTHONPATH": str(ROOT)}


def build_world(root: Path, profile: str, progress: Progress = lambda step: None) -> dict[str, str]:
    """Make the CA, the token and every key and certificate under ``root``; returns the
    environment the lab's processes run with (SoftHSM2's config, the PIN, the CA passphrase)."""
    (root / "tokens").mkdir()
    (root / "softhsm2.conf").write_text(f"directories.tokendir = {root}/tokens\nobjectstore.backend = file\n"
                                        "log.level = ERROR\n")
    for name, secret in (("pin", PIN), ("so.pin", SO_PIN)):
        (root / name).write_text(secret + "\n")
        (root / name).chmod(0o600)
    env = environment(root)
    smgw = [*SMGW]
    progress(f"CA ({profile} profile) and a SoftHSM2 token for the gateway")
    run(*smgw, "pki", "init-ca", "--dir", str(root / "ca"), "--profile", profile, env=env)
    run(*smgw, "token", "init", "--so-pin-file", str(root / "so.pin"), env=env)

    def enrol(key: str, role: str, stem: str) -> None:
        """A gateway key born in the token, its CSR to the CA, the certificate back: <stem>.csr, gw-<stem>.crt."""
        run(*smgw, "token", "keygen", "--key", key, "--profile", profile, env=env)
        run(*smgw, "token", "csr", "--key", key, "--name", GATEWAY_ID, "--out", str(root / f"{stem}.csr"), env=env)
        run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", role, "--name", GATEWAY_ID,
            "--csr", str(root / f"{stem}.csr"), "--out", str(root / f"gw-{stem}"), env=env)
        run(*smgw, "token", "import", "--key", key, "--cert", str(root / f"gw-{stem}.crt"), env=env)

    for name in PARTIES:
        progress(f"party {name}: its tunnel server's certificate, the gateway's key for it in the token")
        run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "party-tls", "--name", f"{name}.example",
            "--generate", "--out", str(root / f"{name}-server"), env=env)
        enrol(f"gateway-tls-{name}", "gateway-tls", name)
        run("openvpn", "--genkey", "tls-crypt-v2-server", str(root / f"{name}.tc-server.key"), env=env)
        run("openvpn", "--tls-crypt-v2", str(root / f"{name}.tc-server.key"), "--genkey", "tls-crypt-v2-client",
            str(root / f"{name}.tc-client.key"), env=env)
    # deliveries: each party's encryption certificate (its side, software key), the gateway's SIG key in the token
    for name in PARTIES:
        run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "party-enc", "--name", f"{name}.example",
            "--generate", "--out", str(root / f"{name}-enc"), env=env)
    progress("the gateway's signing key, the GWA's admin and wake-up keys, the admin API's key")
    enrol("gateway-sig", "gateway-sig", "sig")
    run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "gwa-admin", "--name", "gwa.example",
        "--generate", "--out", str(root / "gwa-server"), env=env)
    run(*smgw, "pki", "issue", "--dir", str(root / "ca"), "--role", "gwa-wakeup", "--name", "gwa.example",
        "--generate", "--out", str(root / "gwa-wakeup"), env=env)
    enrol("gateway-tls-admin", "gateway-tls", "admin")
    enrol("gateway-api", "gateway-api", "api")
    run("openvpn", "--genkey", "tls-crypt-v2-server", str(root / "admin.tc-server.key"), env=env)
    run("openvpn", "--tls-crypt-v2", str(root / "admin.tc-server.key"), "--genkey", "tls-crypt-v2-client",
        str(root / "admin.tc-client.key"), env=env)
    run(*smgw, "pki", "crl", "--dir", str(root / "ca"), "--out", str(root / "crl.pem"), env=env)
    return env


def gateway_toml(root: Path, profile: str) -> str:
    lines = [
        f'[gateway]\nid = "{GATEWAY_ID}"\n',
        '[interfaces.wan]\nname = "wan0"\naddress = "192.0.2.2/24"\n',
        '[interfaces.han]\nname = "han0"\naddress = "192.168.7.1/24"\n',
        f'[token]\nlabel = "smgw"\npin_file = "{root}/pin"\n',
        f'[pki]\nroot = "{root}/ca/ca.crt"\ncrl = "{root}/crl.pem"\n',
        f'[paths]\nstate = "{root}/state"\nrun = "{root}/run"\n',
        f'[store]\npath = "{root}/state/smgw.db"\n',
    ]
    for name, address in PARTIES.items():
        lines.append(f'[[parties]]\nname = "{name}"\nserver_name = "{name}.example"\nprofile = "{profile}"\n'
                     f'ingest_port = {INGEST_PORT}\ntls_crypt_v2_key = "{root}/{name}.tc-client.key"\n'
                     f'encryption_cert = "{root}/{name}-enc.crt"\n'
                     f'remote = {{ address = "{address.ip}", port = 1194 }}\n')
    lines.append(f'[admin]\nserver_name = "gwa.example"\nprofile = "{profile}"\napi_port = 8443\n'
                 f'tls_crypt_v2_key = "{root}/admin.tc-client.key"\nidle_timeout_s = {ADMIN_IDLE_S}\n'
                 f'remote = {{ address = "{GWA.ip}", port = 1194 }}\n')
    lines.append(f'[wakeup]\nport = {WAKEUP_PORT}\n')
    return "\n".join(lines)


def headend_toml(root: Path, name: str, profile: str, database: str | None = None) -> Path:
    """The party's headend config in the lab (its server, its ingest, its database)."""
    database = database or f"sqlite:///{root}/{name}-headend/ingest.db"
    path = root / f"{name}-headend.toml"
    path.write_text(
        f'[headend]\nname = "{name}"\nserver_name = "{name}.example"\n'
        f'[tunnel]\nlisten = {{ address = "{PARTIES[name].ip}", port = 1194 }}\nnetwork = "{TUNNEL_NET[name]}"\n'
        f'profile = "{profile}"\ncert = "{root}/{name}-server.crt"\nkey = "{root}/{name}-server.key"\n'
        f'tls_crypt_v2_server_key = "{root}/{name}.tc-server.key"\n'
        f'[pki]\nroot = "{root}/ca/ca.crt"\ncrl = "{root}/crl.pem"\n'
        f'[ingest]\nport = {INGEST_PORT}\ndatabase = "{database}"\n'
        f'enc_cert = "{root}/{name}-enc.crt"\nenc_key = "{root}/{name}-enc.key"\n'
        f'[paths]\nstate = "{root}/{name}-headend"\nrun = "{root}/{name}-headend/run"\n')
    return path


def start_party(lab: Lab, root: Path, name: str, profile: str, env: dict[str, str],
                database: str | None = None) -> list[subprocess.Popen[bytes]]:
    """A market party in its namespace: its OpenVPN server (rendered from its headend config)
    and its ingest; returns both processes."""
    config = headend_toml(root, name, profile, database)
    rendered = root / f"{name}-rendered"
    run(*SMGW, "render", "--config", str(config), "--out", str(rendered), env=env)
    (root / f"{name}-headend/run").mkdir(parents=True, exist_ok=True)
    # what the party's unit does before its server starts: its host reachable through the tunnel at the ingest only
    loaded = lab.run(name, "nft", "-f", str(rendered / "nftables.conf"))
    if loaded.returncode != 0:
        raise RuntimeError(f"{name}: nft refused the tunnel firewall: {loaded.stderr.strip()[:300]}")
    server = lab.popen(name, "openvpn", "--config", str(rendered / "openvpn/server.conf"),
                       "--log-append", str(root / f"{name}-server.log"), env=env)
    # the ingest binds its tunnel address even before the server has made it (IP_FREEBIND)
    with (root / f"{name}-headend.log").open("ab") as log:  # the child keeps its own handle
        ingest = lab.popen(name, *SMGW, "headend", "run", "--config", str(config), env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    return [server, ingest]


def gwa_server_conf(root: Path, profile: str) -> Path:
    """The GWA's admin tunnel server config (its software key; the gateways' admin tunnels end here)."""
    conf = root / "gwa-server.conf"
    conf.write_text(render_server(ServerTunnel(
        name="gwa.example", listen_address=GWA.ip, listen_port=1194, tunnel=ADMIN_NET, root=root / "ca/ca.crt",
        cert=root / "gwa-server.crt", key=root / "gwa-server.key", crl=root / "crl.pem",
        tls_crypt_v2_server_key=root / "admin.tc-server.key", profile=profile,  # type: ignore[arg-type]
        device="tun-gwa")))
    return conf
