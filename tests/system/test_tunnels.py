"""Each party's tunnel reaches CONNECTED with the client key inside the token, for both
crypto profiles, through the supervisor; a kill -9 is repaired; refusals hold."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.render_server import ServerTunnel, render_server
from tests.system.conftest import SMGW
from tests.system.testbed import INGEST_PORT, PARTIES, TUNNEL_NET, Bed, JsonLines, make_testbed


@contextmanager
def party_servers(bed: Bed, *, cert_of: dict[str, str] | None = None,
                  extra_push: tuple[str, ...] = ()) -> Iterator[None]:
    procs = []
    try:
        for name, address in PARTIES.items():
            stem = (cert_of or {}).get(name, f"{name}-server")
            conf = bed.root / f"{name}-server.conf"
            conf.write_text(render_server(ServerTunnel(
                name=f"{name}.example", listen_address=address.ip, listen_port=1194, tunnel=TUNNEL_NET[name],
                root=bed.root / "ca/ca.crt", cert=bed.root / f"{stem}.crt", key=bed.root / f"{stem}.key",
                crl=bed.root / "crl.pem", tls_crypt_v2_server_key=bed.root / f"{name}.tc-server.key",
                profile=bed.profile, extra_push=extra_push)))  # type: ignore[arg-type]
            procs.append(bed.lab.popen(name, "openvpn", "--config", str(conf), "--log-append",
                                       str(bed.root / f"{name}-server.log"), env=bed.env))
            procs.append(bed.listen(name, tcp=[INGEST_PORT, 2222]))
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _connected(name: str) -> object:
    return lambda line: line["name"] == name and line["state"] == "CONNECTED"


@pytest.mark.parametrize("profile", ["bsi", "modern"])
def test_tunnels_connect_with_token_keys_and_recover_from_kill(tmp_path: Path, profile: str) -> None:
    with make_testbed(tmp_path, profile) as bed:
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        rendered = (bed.root / "state-rendered/openvpn/dso.conf").read_text()
        assert "pkcs11-id 'SoftHSM\\x20project/SoftHSM\\x20v2/" in rendered
        assert not list(bed.root.glob("**/gw-*.key")), "a gateway key file exists outside the token"
        with party_servers(bed):
            run = JsonLines(bed, "tunnels", "run", seconds=40)
            try:
                for name in PARTIES:
                    line = run.wait_for(_connected(name), 20)
                    assert line is not None, f"{name} did not connect: {run.lines[-3:]}"
                    assert line["connect_seconds"] is not None
                # the ingest port through the tunnel, and nothing else there
                dso_tunnel = str(TUNNEL_NET["dso"].ip)
                assert bed.probe("gw", "tcp", dso_tunnel, INGEST_PORT, timeout=3)
                assert not bed.probe("gw", "tcp", dso_tunnel, 2222)
                assert not bed.probe("gw", "tcp", str(PARTIES["dso"].ip), INGEST_PORT)  # not around it
                assert bed.probe("gw", "tcp", str(TUNNEL_NET["supplier"].ip), INGEST_PORT, timeout=3)
                for role in ("han", "wan", "gwa"):  # nobody else reaches into the tunnels
                    assert not bed.probe(role, "tcp", dso_tunnel, INGEST_PORT)
                # kill -9: the supervisor restarts and reconnects
                pid = next(line["pid"] for line in reversed(run.lines) if line["name"] == "dso")
                bed.lab.run("gw", "kill", "-9", str(pid))
                back = run.wait_for(lambda line: line["name"] == "dso" and line["state"] == "CONNECTED"
                                    and int(line["restarts"]) >= 1, 20)  # type: ignore[call-overload]
                assert back is not None, run.lines[-4:]
                assert any(line["state"] == "RESTARTING" and "exited" in str(line["last_error"])
                           for line in run.lines if line["name"] == "dso")
                status = json.loads(bed.smgw("gw", "status", "--json", "--config", str(bed.config)).stdout)
                states = {t["name"]: (t["state"], t["restarts"]) for t in status["tunnels"]}
                assert states["dso"][0] == "CONNECTED" and states["dso"][1] >= 1
                assert states["supplier"][0] == "CONNECTED"
            finally:
                run.stop()


def _refused(bed: Bed, reason: str, log_name: str = "state/openvpn-dso.log", **servers: object) -> None:
    """The dso tunnel does not come up, and the named log says why."""
    log = bed.root / log_name
    offset = log.stat().st_size if log.exists() else 0
    with party_servers(bed, **servers):  # type: ignore[arg-type]
        run = JsonLines(bed, "tunnels", "run", seconds=60)
        try:
            # until the log says why (on a busy machine the first attempt can take a while) ...
            deadline = time.monotonic() + 30
            while not (log.exists() and reason in log.read_text()[offset:]) and time.monotonic() < deadline:
                time.sleep(0.2)
            # ... and never connected meanwhile
            assert run.wait_for(_connected("dso"), 0.5) is None, f"the tunnel came up although {reason} must stop it"
        finally:
            run.stop()
    assert reason in log.read_text()[offset:], f"{reason!r} not in {log_name}"


def test_refusals_wrong_name_wrong_role_pushed_route_revoked_gateway(tmp_path: Path) -> None:
    with make_testbed(tmp_path, "modern") as bed:
        assert bed.smgw("gw", "apply", "--config", str(bed.config)).returncode == 0
        # a server whose certificate names another party
        _refused(bed, "VERIFY X509NAME ERROR", cert_of={"dso": "supplier-server"})
        # the right name in a certificate of a client role (gateway-tls: no serverAuth)
        _smgw_ok(bed, "pki", "issue", "--dir", str(bed.root / "ca"), "--role", "gateway-tls", "--name", "dso.example",
                 "--generate", "--out", str(bed.root / "wrong-role"))
        _refused(bed, "unsuitable certificate purpose", cert_of={"dso": "wrong-role"})
        # a server that pushes a route
        _refused(bed, "Pushed option rejected by filter", extra_push=("route 10.99.0.0 255.255.0.0",))
        # the gateway's own certificate revoked: the server refuses it by its CRL
        serial = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(bed.root / "gw-dso.crt")],
                                capture_output=True, text=True, check=True).stdout.strip().split("=")[1]
        _smgw_ok(bed, "pki", "revoke", "--dir", str(bed.root / "ca"), "--serial", serial, "--reason", "key-compromise")
        _smgw_ok(bed, "pki", "crl", "--dir", str(bed.root / "ca"), "--out", str(bed.root / "crl.pem"))
        _refused(bed, "error=certificate revoked: CN=gw-0001", log_name="dso-server.log")


def _smgw_ok(bed: Bed, *args: str) -> None:
    done = subprocess.run([*SMGW, *args], env=bed.env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_apply_refuses_a_missing_crl(tmp_path: Path) -> None:
    with make_testbed(tmp_path, "modern") as bed:
        (bed.root / "crl.pem").unlink()
        done = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert done.returncode == 1 and "pki.crl" in done.stderr and "missing" in done.stderr
        assert bed.lab.run("gw", "nft", "list", "table", "inet", "smgw").returncode != 0  # nothing applied


def test_apply_refuses_a_zone_interface_that_is_not_there(tmp_path: Path) -> None:
    with make_testbed(tmp_path, "modern") as bed:
        bed.config.write_text(bed.config.read_text().replace('name = "han0"', 'name = "han9"')
                              .replace('address = "192.0.2.2/24"', 'address = "192.0.2.3/24"'))
        done = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert done.returncode == 1
        assert "interfaces.han: no interface 'han9'" in done.stderr
        assert "interfaces.wan: wan0 does not carry 192.0.2.3/24" in done.stderr
        assert bed.lab.run("gw", "nft", "list", "table", "inet", "smgw").returncode != 0
