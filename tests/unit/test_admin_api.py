"""The admin API's decisions with a real store and real signatures: reads, and profile
documents accepted only from the GWA's admin key, for this gateway, in time, once."""

from __future__ import annotations

import datetime as dt
import json
import socket
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from appliance import admin_http
from appliance.admin_api import MAX_BODY, AdminApi
from appliance.admin_http import ApiServer
from appliance.admin_tls import TlsView, render, stunnel_value
from appliance.config import load
from appliance.render import RenderError
from appliance.store import Store
from pki.admin_doc import encode, new_doc
from pki.ca import CertificateAuthority, init_ca
from pki.cms import software_signer
from tests.pkihelpers import PASS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/gateway.toml"
PROFILE = {"name": "gwa-extra", "party": "dso", "template": "taf1"}


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    init_ca(tmp_path / "ca", passphrase=PASS, profile="modern")
    ca = CertificateAuthority(tmp_path / "ca", PASS)
    (tmp_path / "root.crt").write_bytes(ca.cert.public_bytes(Encoding.PEM))
    (tmp_path / "root.crl").write_bytes(ca.crl().public_bytes(Encoding.PEM))
    text = EXAMPLE.read_text().replace('state = "/var/lib/smgw"', f'state = "{tmp_path}/state"').replace(
        'run = "/run/smgw"', f'run = "{tmp_path}/run"').replace(
        'path = "/var/lib/smgw/smgw.db"', f'path = "{tmp_path}/smgw.db"').replace(
        'root = "/etc/smgw/pki/root.crt"', f'root = "{tmp_path}/root.crt"').replace(
        'crl = "/etc/smgw/pki/root.crl"', f'crl = "{tmp_path}/root.crl"')
    (tmp_path / "gateway.toml").write_text(text + '\n[[profiles]]\nname = "dso-taf1"\nparty = "dso"\ntemplate = "taf1"\n')
    cfg = load(tmp_path / "gateway.toml")
    Store.open(cfg.store.path).close()
    admin, admin_key = ca.issue_generated("gwa-admin", "gwa.example")
    wake, wake_key = ca.issue_generated("gwa-wakeup", "gwa.example")
    return {"cfg": cfg, "path": tmp_path / "gateway.toml", "ca": ca, "admin": (admin, admin_key),
            "wake": (wake, wake_key), "api": AdminApi(cfg), "tmp": tmp_path}


def _doc(w, action: str = "profile.put", *, gateway: str = "gw-0001", seq: int = 1, who: str = "admin",  # type: ignore[no-untyped-def]
         now: dt.datetime | None = None, **fields: object) -> bytes:
    if action == "profile.put" and "profile" not in fields:
        fields["profile"] = PROFILE
    if action == "profile.rm" and "name" not in fields:
        fields["name"] = PROFILE["name"]
    cert, key = w[who]
    return encode(new_doc(gateway, action, seq, now=now, **fields), cert, software_signer(key))  # type: ignore[arg-type]


def test_reads(world) -> None:  # type: ignore[no-untyped-def]
    api: AdminApi = world["api"]
    status, doc = api.handle("GET", "/v1/status")
    assert status == 200 and doc["gateway"] == "gw-0001" and doc["readouts"] == 0
    status, doc = api.handle("GET", "/v1/log?log=system&limit=10")
    assert status == 200 and doc["rows"] == []
    assert api.handle("GET", "/v1/log?log=secret")[0] == 400
    assert api.handle("GET", "/v1/log?limit=999999")[0] == 400
    assert api.handle("GET", "/v1/log?log=system&log=consumer")[0] == 400
    assert api.handle("GET", "/v1/nothing")[0] == 404
    assert api.handle("POST", "/v1/status")[0] == 405


def test_profile_put_and_rm_take_effect_in_the_config(world) -> None:  # type: ignore[no-untyped-def]
    api: AdminApi = world["api"]
    status, doc = api.handle("PUT", "/v1/profiles/gwa-extra", _doc(world, seq=10))
    assert status == 200, doc
    assert "gwa-extra" in [p.name for p in load(world["path"]).profiles]  # the core's next load has it
    listed = api.handle("GET", "/v1/profiles")[1]["profiles"]
    assert [p["name"] for p in listed if p["installed"]] == ["gwa-extra"]
    status, doc = api.handle("DELETE", "/v1/profiles/gwa-extra", _doc(world, "profile.rm", seq=11))
    assert status == 200, doc
    assert "gwa-extra" not in [p.name for p in load(world["path"]).profiles]
    assert api.handle("DELETE", "/v1/profiles/gwa-extra", _doc(world, "profile.rm", seq=12))[0] == 404


def test_refusals(world) -> None:  # type: ignore[no-untyped-def]
    api: AdminApi = world["api"]
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    cases = {
        "wake-up key": (_doc(world, who="wake"), 403, "RoleError"),
        "other gateway": (_doc(world, gateway="gw-0002"), 403, "addressed to gateway gw-0002"),
        "stale": (_doc(world, now=old), 403, "away from gateway time"),
        "garbage": (b"\x30\x03\x02\x01\x00", 403, "document refused"),
        "empty": (b"", 403, "document refused"),
        "unknown party": (_doc(world, profile={"name": "gwa-extra", "party": "nobody", "template": "taf1"}), 400,
                          "unknown party"),
        "bad field": (_doc(world, profile={"name": "gwa-extra", "party": "dso", "interval_s": "soon"}), 400,
                      "interval_s"),
        "template not text": (_doc(world, profile={"name": "gwa-extra", "party": "dso", "template": {}}), 400,
                              "profile template: Input should be"),
        "unknown key": (_doc(world, profile={"name": "gwa-extra", "party": "dso", "template": "taf1", "colour": 1}),
                        400, "profile colour: unknown key"),
        "config's own": (_doc(world, profile={"name": "dso-taf1", "party": "dso", "template": "taf1"}), 409,
                         "config file"),
    }
    for what, (body, code, reason) in cases.items():
        path = "/v1/profiles/dso-taf1" if what == "config's own" else "/v1/profiles/gwa-extra"
        status, doc = api.handle("PUT", path, body)
        assert status == code and reason in doc["error"], (what, status, doc)
    # the path and the document must agree
    assert api.handle("PUT", "/v1/profiles/other", _doc(world))[0] == 400
    assert api.handle("DELETE", "/v1/profiles/gwa-extra", _doc(world))[0] == 400
    assert not (world["cfg"].paths.state / "profiles.d").exists() or \
        not list((world["cfg"].paths.state / "profiles.d").glob("*.json"))


def test_a_document_counts_once_also_after_a_restart(world) -> None:  # type: ignore[no-untyped-def]
    body = _doc(world, seq=100)
    assert world["api"].handle("PUT", "/v1/profiles/gwa-extra", body)[0] == 200
    again = AdminApi(world["cfg"])  # a restarted GateWatcher
    status, doc = again.handle("PUT", "/v1/profiles/gwa-extra", body)
    assert status == 409 and "replayed" in doc["error"]
    older = _doc(world, seq=99)  # a lower sequence, a fresh nonce: still a replay
    assert again.handle("PUT", "/v1/profiles/gwa-extra", older)[0] == 409


def test_requests_are_reported_without_bodies(world) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict[str, object]] = []
    api = AdminApi(world["cfg"], seen.append)
    api.handle("PUT", "/v1/profiles/gwa-extra", _doc(world, seq=7))
    assert seen[-1]["status"] == 200 and seen[-1]["action"] == "profile.put" and "gwa.example" in str(seen[-1]["signer"])
    assert "document" not in json.dumps(seen)


def test_stunnel_config_refuses_what_it_cannot_hold(tmp_path: Path) -> None:
    view = TlsView(module=Path("/usr/lib/softhsm/libsofthsm2.so"), pin="123456", address="10.90.0.2", port=8443,
                   socket=tmp_path / "api.sock", cert=tmp_path / "api.crt", token_label="smgw", key_label="gateway-api",
                   root=tmp_path / "root.crt", crl=tmp_path / "root.crl", gwa_name="gwa.example", profile="bsi")
    text = render(view)
    assert "engineCtrl = PIN:123456" in text and "verifyChain = yes" in text and "checkHost = gwa.example" in text
    assert "sslVersionMax = TLSv1.2" in text and "curves = brainpoolP256r1" in text
    for bad in ("12 34", "1234\n[evil]", "12;34", "12#", "a\x00b", ""):
        with pytest.raises(RenderError):
            stunnel_value(bad)


def _talk(path: Path, data: bytes) -> bytes:
    """Send raw bytes over the admin socket; everything the server says until it closes."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_the_socket_speaks_http_and_refuses_what_is_not_without_stopping(world) -> None:  # type: ignore[no-untyped-def]
    path = world["tmp"] / "run-api.sock"
    server = ApiServer(path, world["api"])
    server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        get = b"GET /v1/status HTTP/1.1\r\nHost: gw\r\n\r\n"
        # keep-alive: two requests on one connection, two answers
        both = _talk(path, get + get)
        assert both.count(b"HTTP/1.1 200 OK\r\n") == 2, both
        doc = json.loads(both.split(b"\r\n\r\n", 2)[1].split(b"HTTP/1.1")[0])
        assert doc["gateway"] == "gw-0001"
        assert _talk(path, b"DELETE /v1/status HTTP/1.1\r\nHost: gw\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        head = _talk(path, b"HEAD /v1/status HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 ") and head.endswith(b"\r\n\r\n"), head  # no body after a HEAD
        # over the limit, declared: refused before the body is read, and the connection closed
        big = b"PUT /v1/profiles/x HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        answer = _talk(path, big + get)
        assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower() and answer.count(b"HTTP/1.1") == 1
        # over the limit, chunked: refused as the chunks pass it
        chunk = b"%x\r\n%s\r\n" % (40_000, b"x" * 40_000)
        chunked = b"PUT /v1/profiles/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n"
        assert _talk(path, chunked).startswith(b"HTTP/1.1 413 ")
        # not HTTP at all, and headers without end: 4xx with the reason, and the connection closed
        garbage = _talk(path, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ") and b"not an HTTP request" in garbage, garbage
        assert _talk(path, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000).startswith(b"HTTP/1.1 431 ")
        assert _talk(path, b"") == b""  # a connection closed at once: nothing owed
        # targets the URL parser refuses, and too many query fields: 400 with the reason, not a dropped line
        assert _talk(path, b"GET //[x HTTP/1.1\r\nHost: gw\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        many = "&".join(f"f{i}=1" for i in range(30)).encode()
        assert _talk(path, b"GET /v1/log?" + many + b" HTTP/1.1\r\nHost: gw\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        # a HEAD refused for its size: the answer has no body either
        head_big = _talk(path, b"HEAD /v1/status HTTP/1.1\r\nHost: gw\r\nContent-Length: 99999999\r\n\r\n")
        assert head_big.startswith(b"HTTP/1.1 413 ") and head_big.endswith(b"\r\n\r\n"), head_big
        # a client that waits for 100 Continue before its body gets it, then the answer
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"PUT /v1/profiles/x HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
            sock.sendall(b"{}")
            assert b"document refused" in sock.recv(1000)  # the body arrived: a profile needs a signed document
        assert _talk(path, get).startswith(b"HTTP/1.1 200 OK\r\n")  # and the server still answers
    finally:
        server.stop()
    assert not path.exists()


def test_the_socket_holds_neither_a_dribbling_client_nor_more_connections_than_it_serves(
        world, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(admin_http, "REQUEST_S", 1.0)
    path = world["tmp"] / "run-api.sock"
    server = ApiServer(path, world["api"])
    server.start()
    held: list[socket.socket] = []
    try:
        # one byte at a time, each well within a read's timeout: the request's own deadline ends it
        with socket.socket(socket.AF_UNIX) as slow:
            slow.connect(str(path))
            started = time.monotonic()
            with pytest.raises(OSError):  # reset or broken pipe once the server gave up
                for byte in b"GET /v1/status HTTP/1.1\r\nHost: gw\r\n" * 10:
                    slow.send(bytes([byte]))
                    time.sleep(0.05)
                    if time.monotonic() - started > 10:
                        pytest.fail("the server still reads a request after 10 s")
            assert time.monotonic() - started < 5
        for _ in range(admin_http.MAX_CONNECTIONS):
            held.append(socket.socket(socket.AF_UNIX))
            held[-1].connect(str(path))
        with socket.socket(socket.AF_UNIX) as extra:
            extra.settimeout(5)
            extra.connect(str(path))
            assert extra.recv(100) == b""  # closed at once: every slot is taken
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while not _talk(path, b"GET /v1/status HTTP/1.1\r\nHost: gw\r\n\r\n").startswith(b"HTTP/1.1 200 OK"):
            assert time.monotonic() < deadline, "the slots were not given back"
            time.sleep(0.1)
    finally:
        for sock in held:
            sock.close()
        server.stop()
