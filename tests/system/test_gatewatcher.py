"""The wake-up cycle in the netns testbed: refusals open nothing, a valid WakeUp brings the
admin tunnel to the GWA up, BreakUp takes it down, a replay is refused after a restart."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from appliance.lab_world import gwa_server_conf
from headend.gwa import default_sequence
from pki.cms import software_signer
from pki.encoding import read_certificate
from pki.wakeup import encode, new_body
from tests.system.conftest import SMGW, Simulator
from tests.system.testbed import GWA, WAKEUP_PORT, Bed, JsonLines, make_testbed

GW_WAN = "192.0.2.2"


@contextmanager
def gwa_server(bed: Bed) -> Iterator[None]:
    conf = gwa_server_conf(bed.root, bed.profile)
    proc = bed.lab.popen("gwa", "openvpn", "--config", str(conf), "--log-append", str(bed.root / "gwa-server.log"),
                         env=bed.env)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def send_raw(bed: Bed, role: str, datagram: bytes) -> None:
    blob = bed.root / "datagram.bin"
    blob.write_bytes(datagram)
    code = (f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(open({str(blob)!r}, 'rb')"
            f".read(), ({GW_WAN!r}, {WAKEUP_PORT}))")
    assert bed.lab.run(role, SMGW[0], "-c", code, env=bed.env).returncode == 0


def admin(bed: Bed, action: str, *, gateway: str = "gw-0001", cert: str = "gwa-wakeup") -> None:
    done = bed.lab.run("gwa", *SMGW, "admin", action, "--gateway", gateway, "--to", f"{GW_WAN}:{WAKEUP_PORT}",
                       "--cert", str(bed.root / f"{cert}.crt"), "--key", str(bed.root / f"{cert}.key"), env=bed.env)
    assert done.returncode == 0, done.stderr


PUT_CERT = """
import sys
from ipaddress import IPv4Address
from pathlib import Path
from headend.gwa_admin import context, request
host, port = sys.argv[1].split(":")
root = Path(sys.argv[2])
ctx = context(root / "ca/ca.crt", root / "gwa-server.crt", root / "gwa-server.key", root / "crl.pem")
status, doc = request("PUT", "/v1/cert?key=gateway-api", gateway_id="gw-0001", address=IPv4Address(host),
                      port=int(port), ctx=ctx, body=(root / sys.argv[3]).read_bytes())
print(status, doc)
"""


def api_call(bed: Bed, what: str, to: str, *args: str, cert: str = "gwa-server", gateway: str = "gw-0001",
             verb: str | None = None) -> subprocess.CompletedProcess[str]:
    """``smgw admin <what> [verb]`` from the GWA's host, with its admin certificate (role gwa-admin)."""
    return bed.lab.run("gwa", *SMGW, "admin", what, *([verb] if verb else []), "--gateway", gateway, "--to", to,
                       "--cert", str(bed.root / f"{cert}.crt"), "--key", str(bed.root / f"{cert}.key"),
                       "--root", str(bed.root / "ca/ca.crt"), "--crl", str(bed.root / "crl.pem"), *args,
                       env=bed.env, timeout=30)


def _refusal(reason: str) -> object:
    return lambda line: line.get("event") == "refused" and reason in str(line.get("reason"))


def test_wakeup_cycle_and_refusals(tmp_path: Path) -> None:
    with make_testbed(tmp_path, "modern") as bed:
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        key = serialization.load_pem_private_key((bed.root / "gwa-wakeup.key").read_bytes(), None)
        saved = encode(new_body("gw-0001", "wakeup", default_sequence()), read_certificate(bed.root / "gwa-wakeup.crt"),
                       software_signer(key))  # type: ignore[arg-type]
        with gwa_server(bed):
            watch = JsonLines(bed, "gatewatcher", "run", seconds=240)
            try:
                assert watch.wait_for(lambda line: line.get("event") == "listening", 30)
                # refused, with the reason, and nothing opened
                send_raw(bed, "wan", b"\x30\x82garbage")
                assert watch.wait_for(_refusal("MalformedError"), 5)
                admin(bed, "wakeup", cert="dso-server")  # a party's key
                assert watch.wait_for(_refusal("RoleError"), 5)
                admin(bed, "wakeup", gateway="gw-0002")
                assert watch.wait_for(_refusal("addressed to gateway gw-0002"), 5)
                send_raw(bed, "wan", saved[: len(saved) // 2])
                assert watch.wait_for(_refusal("MalformedError"), 5)
                send_raw(bed, "wan", saved + b"\0" * 4096)
                assert watch.wait_for(_refusal("over 4096 bytes"), 5)
                assert not any(line.get("event") == "admin-tunnel" for line in watch.lines)
                # a valid WakeUp (sent from the WAN, not from the GWA's own host: the source does not matter)
                send_raw(bed, "wan", saved)
                assert watch.wait_for(lambda line: line.get("event") == "accepted", 5)
                opened = watch.wait_for(lambda line: line.get("event") == "admin-tunnel"
                                        and line.get("state") == "opening", 5)
                assert opened is not None and opened["to"] == f"{GWA.ip}:1194"
                assert watch.wait_for(lambda line: line.get("state") == "CONNECTED", 30), watch.lines[-5:]
                # (a refusal is retried while the tunnel stays up: 2, 4, 8 s apart)
                up = watch.wait_for(lambda line: line.get("event") == "admin-api-up", 30)
                assert up is not None, [line for line in watch.lines if line.get("event") == "admin-api-refused"]
                api = f"{up['address']}:{up['port']}"
                # the API works over the tunnel, for the GWA's admin certificate
                status = api_call(bed, "status", api)
                assert status.returncode == 0, status.stderr
                doc = json.loads(status.stdout)
                assert doc["gateway"] == "gw-0001" and "selftests" in doc and "tunnels" in doc
                rows = api_call(bed, "log", api, "--log", "system", "--limit", "500")
                assert rows.returncode == 0, rows.stderr
                events = [json.loads(line)["event"] for line in rows.stdout.splitlines()]
                assert "gatewatcher.accepted" in events
                assert api_call(bed, "selftest", api).returncode == 0
                assert watch.wait_for(lambda line: line.get("event") == "admin-api"
                                      and line.get("path") == "/v1/log", 5)  # each request in the system log
                # an access profile installed by a signed document, listed, and removed again
                (bed.root / "extra.json").write_text(json.dumps({"name": "gwa-extra", "party": "dso",
                                                                 "template": "taf1"}))
                put = api_call(bed, "profile", api, "--file", str(bed.root / "extra.json"), verb="put")
                assert put.returncode == 0, put.stderr
                assert (bed.root / "state/profiles.d/gwa-extra.json").exists()
                listed = api_call(bed, "profile", api, verb="list")
                assert listed.returncode == 0, listed.stderr
                assert [p["name"] for p in json.loads(listed.stdout)["profiles"] if p["installed"]] == ["gwa-extra"]
                removed = api_call(bed, "profile", api, "--name", "gwa-extra", verb="rm")
                assert removed.returncode == 0, removed.stderr
                assert not (bed.root / "state/profiles.d/gwa-extra.json").exists()
                assert watch.wait_for(lambda line: line.get("event") == "admin-api"
                                      and line.get("action") == "profile.rm", 5)
                # certificate renewal: the CSR from the token out, the CA's certificate in
                old_serial = format(read_certificate(bed.root / "gw-api.crt").serial_number, "x")
                renewed = api_call(bed, "cert", api, "--token-key", "gateway-api", "--ca-dir", str(bed.root / "ca"),
                                   verb="renew")
                assert renewed.returncode == 0, renewed.stderr
                assert json.loads(renewed.stdout)["serial"] not in ("", old_serial)
                bad = bed.lab.run("gwa", SMGW[0], "-c", PUT_CERT, api, str(bed.root), "dso-server.crt",
                                  env=bed.env, timeout=30)
                assert bad.stdout.startswith("403 ") and "offered as gateway-api" in bad.stdout, bad.stdout + bad.stderr
                assert api_call(bed, "status", api).returncode == 0
                # not for another certificate of the GWA (the wake-up signer), nor for a party's
                for other in ("gwa-wakeup", "dso-server"):
                    refused = api_call(bed, "status", api, cert=other)
                    assert refused.returncode != 0 and "error" in refused.stderr, other
                # a gateway that is not the one asked for is refused by the GWA
                wrong = api_call(bed, "status", api, gateway="gw-0002")
                assert wrong.returncode != 0 and "is not gateway gw-0002" in wrong.stderr
                # and from nowhere else: the API port is closed to HAN and WAN
                assert not bed.probe("han", "tcp", "192.168.7.1", 8443)
                assert not bed.probe("wan", "tcp", GW_WAN, 8443)
                assert not bed.probe("han", "tcp", str(up["address"]), 8443)
                assert not bed.probe("wan", "tcp", str(up["address"]), 8443)
                # BreakUp closes it at once
                admin(bed, "breakup")
                broke = watch.wait_for(lambda line: line.get("event") == "admin-tunnel"
                                       and line.get("why") == "breakup", 5)
                assert broke is not None
                assert watch.wait_for(lambda line: line.get("state") == "STOPPED", 5, after=broke)
                assert watch.wait_for(lambda line: line.get("event") == "admin-api-down", 5, after=broke)
                assert api_call(bed, "status", api).returncode != 0  # gone with the tunnel
            finally:
                watch.stop()
            # after a restart of the GateWatcher the same WakeUp is still a replay
            watch = JsonLines(bed, "gatewatcher", "run", seconds=90)
            try:
                assert watch.wait_for(lambda line: line.get("event") == "listening", 30)
                send_raw(bed, "wan", saved)
                assert watch.wait_for(_refusal("replayed"), 5)
                assert not any(line.get("event") == "admin-tunnel" for line in watch.lines)
            finally:
                watch.stop()


FLOOD = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for i in range(10000):
    s.sendto(os.urandom(64 + i % 900), (sys.argv[1], int(sys.argv[2])))
print(time.monotonic() - t0)
"""


def test_flood_leaves_readings_flowing_and_idle_timeout_closes(tmp_path: Path, meter_sim: Callable[..., Simulator]
                                                               ) -> None:
    sim = meter_sim("normal")
    with make_testbed(tmp_path, "modern") as bed:
        text = bed.config.read_text().replace("idle_timeout_s = 30", "idle_timeout_s = 4")
        bed.config.write_text(f'[meter]\nport = "{sim.link}"\npoll_interval = 1\ntimeout = 5\nattempts = 2\n' + text)
        assert bed.smgw("gw", "apply", "--config", str(bed.config)).returncode == 0
        reader = bed.lab.popen("gw", *SMGW, "gateway", "run", "--core-only", "--config", str(bed.config), env=bed.env)
        db = bed.root / "state/smgw.db"
        with gwa_server(bed):
            watch = JsonLines(bed, "gatewatcher", "run", seconds=240)
            try:
                assert watch.wait_for(lambda line: line.get("event") == "listening", 30)
                deadline = time.monotonic() + 20
                while _readouts(db) < 1 and time.monotonic() < deadline:
                    time.sleep(0.2)
                before = _readouts(db)
                flood = bed.lab.run("wan", SMGW[0], "-c", FLOOD, GW_WAN, str(WAKEUP_PORT), env=bed.env)
                assert flood.returncode == 0, flood.stderr
                deadline = time.monotonic() + 20
                while _readouts(db) < before + 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert _readouts(db) >= before + 2, "readings stopped during the flood"
                # still answering: a valid WakeUp right after the flood opens the tunnel ...
                admin(bed, "wakeup")
                assert watch.wait_for(lambda line: line.get("state") == "CONNECTED", 30), watch.lines[-5:]
                # ... and with no traffic through it, the idle timeout closes it
                closed = watch.wait_for(lambda line: line.get("why") == "idle timeout", 30)
                assert closed is not None, watch.lines[-5:]
            finally:
                watch.stop()
                reader.terminate()
                reader.wait(timeout=10)
        stopped = next(line for line in watch.lines if line.get("event") == "stopped")
        assert int(stopped["refused"]) + int(stopped["dropped_rate"]) >= 1  # type: ignore[call-overload]
        assert int(stopped["accepted"]) == 1  # type: ignore[call-overload]


def _readouts(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return int(con.execute("SELECT count(*) FROM readouts").fetchone()[0])
    except sqlite3.Error:
        return 0
