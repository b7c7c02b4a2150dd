"""Authorisation in the portal: a household sees its own data through every route, never
another's, whatever it puts in a parameter; sessions, CSRF and device tokens hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from portal.app import create_app
from portal.settings import load
from tests import portalkit

A_METER, B_METER = portalkit.METERS["alice"][0], portalkit.METERS["bob"][0]


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("portal")
    portalkit.build(root, days=3)
    return root


@pytest.fixture()
def app(app_dir: Path, tmp_path: Path):  # a fresh accounts database per test
    settings = load(app_dir / "portal.json")
    from dataclasses import replace
    return create_app(replace(settings, state_dir=tmp_path / "state"))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "form without a CSRF field"
    return found.group(1)


def login(client: FlaskClient, name: str) -> str:
    pre = csrf_of(client.get("/login").text)
    r = client.post("/setup", data={"csrf": pre, "username": name, "code": portalkit.CODES[name],
                                    "password": portalkit.PASSWORDS[name]})
    assert r.status_code == 302, r.text
    r = client.post("/login", data={"csrf": pre, "username": name, "password": portalkit.PASSWORDS[name]})
    assert r.status_code == 302 and r.headers["Location"].endswith("/now")
    return csrf_of(client.get("/now").text)


def test_pages_need_login(app) -> None:
    client = app.test_client()
    for path in ("/now", "/charts", "/profile", "/transparency", "/status", "/export", "/devices",
                 "/export/download", "/live", "/password"):
        r = client.get(path)
        assert r.status_code == 302 and r.headers["Location"].endswith("/login"), path


PAGES = ["/now", "/charts?kind=day", "/charts?kind=year", "/profile", "/export/download?format=csv",
         "/export/download?format=json", "/live"]


def test_consumer_never_reaches_another_meter(app) -> None:
    client = app.test_client()
    login(client, "alice")
    for page in PAGES:
        sep = "&" if "?" in page else "?"
        r = client.get(f"{page}{sep}meter={B_METER}")
        assert r.status_code == 404, page
        assert B_METER.encode() not in r.data
    for tricky in (f"{A_METER},{B_METER}", f"{B_METER}%00", "%", "' OR 1=1 --", f" {B_METER}"):
        assert client.get(f"/now?meter={tricky}").status_code == 404


def test_own_data_and_only_own_log(app) -> None:
    client = app.test_client()
    login(client, "alice")
    page = client.get("/now").text
    assert A_METER in page and B_METER not in page
    transparency = client.get("/transparency").text
    assert transparency.count('class="delivery"') == 3
    assert ">dso<" in transparency and ">sup<" not in transparency  # bob's party never shows
    export = client.get("/export/download?format=json&from=2000-01-01&to=2000-01-02")
    assert export.status_code == 200 and json.loads(export.data)["meter"] == A_METER


def test_api_token_is_bound_to_its_consumer(app) -> None:
    client = app.test_client()
    csrf = login(client, "alice")
    page = client.post("/devices", data={"csrf": csrf, "name": "heat pump"}).text
    token = re.search(r'id="new-token">([^<]+)<', page).group(1)
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/meters", headers=auth).json == {"meters": [A_METER]}
    assert api.get("/api/v1/now", headers=auth).json["meter"] == A_METER
    for path in ("/api/v1/now", "/api/v1/consumption", "/api/v1/readings", "/api/v1/stream"):
        assert api.get(f"{path}?meter={B_METER}", headers=auth).status_code == 404, path
    deliveries = api.get("/api/v1/deliveries", headers=auth).json["deliveries"]
    assert {d["meter"] for d in deliveries} == {A_METER}
    for bad in ("", "Bearer ", "Bearer smgwd_forged", f"Basic {token}", f"Bearer {token}x"):
        assert api.get("/api/v1/now", headers={"Authorization": bad}).status_code == 401
    assert api.post("/api/v1/now", headers=auth).status_code == 405  # read-only
    # a device token is not a session: it opens no page
    assert api.get("/now", headers=auth).status_code == 302
    token_id = re.search(r'action="/devices/(\d+)/revoke"', client.get("/devices").text).group(1)
    assert client.post(f"/devices/{token_id}/revoke", data={"csrf": csrf}).status_code == 302
    assert api.get("/api/v1/now", headers=auth).status_code == 401


def test_bob_cannot_revoke_alices_token(app) -> None:
    alice, bob = app.test_client(), app.test_client()
    csrf_a = login(alice, "alice")
    alice.post("/devices", data={"csrf": csrf_a, "name": "meter display"})
    token_id = re.search(r'action="/devices/(\d+)/revoke"', alice.get("/devices").text).group(1)
    csrf_b = login(bob, "bob")
    assert bob.post(f"/devices/{token_id}/revoke", data={"csrf": csrf_b}).status_code == 404
    assert "meter display" in alice.get("/devices").text


def test_csrf_and_origin(app) -> None:
    client = app.test_client()
    csrf = login(client, "alice")
    assert client.post("/devices", data={"name": "x"}).status_code == 403
    assert client.post("/devices", data={"name": "x", "csrf": "forged"}).status_code == 403
    r = client.post("/devices", data={"name": "x", "csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert client.post("/devices", data={"name": "x", "csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert "<td>x</td>" not in client.get("/devices").text
    # the other consumer's CSRF token is worthless in this session
    other = app.test_client()
    csrf_b = login(other, "bob")
    assert client.post("/devices", data={"name": "x", "csrf": csrf_b}).status_code == 403


def test_setup_code_is_single_use_and_wrong_codes_count(app) -> None:
    client = app.test_client()
    login(client, "alice")
    pre = csrf_of(client.get("/login").text)
    again = client.post("/setup", data={"csrf": pre, "username": "alice", "code": portalkit.CODES["alice"],
                                        "password": "attacker-password"})
    assert again.status_code == 401
    bad = client.post("/setup", data={"csrf": pre, "username": "bob", "code": portalkit.CODES["alice"],
                                      "password": "attacker-password"})
    assert bad.status_code == 401


def test_login_delays_grow_and_never_lock_for_good(app) -> None:
    client = app.test_client()
    login(client, "alice")
    other = app.test_client()
    pre = csrf_of(other.get("/login").text)
    codes = [other.post("/login", data={"csrf": pre, "username": "alice", "password": f"wrong-{i}"}).status_code
             for i in range(5)]
    assert codes[:3] == [401, 401, 401] and 429 in codes[3:]
    r = other.post("/login", data={"csrf": pre, "username": "alice", "password": portalkit.PASSWORDS["alice"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) <= 900  # even the right password waits
    accounts = app.extensions["smgw_portal"].accounts
    import time
    assert accounts.wait_left(["account:alice"], now=time.time() + 901) == 0  # the delay ends


def test_logout_ends_the_session(app) -> None:
    client = app.test_client()
    csrf = login(client, "alice")
    cookie = client.get_cookie("smgw_session").value
    assert client.post("/logout", data={"csrf": csrf}).status_code == 302
    replay = app.test_client()
    replay.set_cookie("smgw_session", cookie)
    assert replay.get("/now").status_code == 302


def test_headers_and_cookies(app) -> None:
    client = app.test_client()
    pre = csrf_of(client.get("/login").text)
    client.post("/setup", data={"csrf": pre, "username": "alice", "code": portalkit.CODES["alice"],
                                "password": portalkit.PASSWORDS["alice"]})
    r = client.post("/login", data={"csrf": pre, "username": "alice", "password": portalkit.PASSWORDS["alice"]})
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/charts?kind=week")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in page.text and "style=" not in page.text  # nothing the CSP would have to allow


def test_hostile_input_is_escaped(app) -> None:
    client = app.test_client()
    csrf = login(client, "alice")
    r = client.post("/devices", data={"csrf": csrf, "name": "<script>alert(1)</script>"})
    assert r.status_code == 400 and "<script>alert" not in r.text
    assert client.get("/charts?kind=<svg>").status_code == 404
    r = client.get("/charts?kind=day&date=<img src=x>")
    assert r.status_code == 400 and "<img src=x>" not in r.text
    assert client.get("/export/download?from=2026-01-01&to=2024-01-01").status_code == 400
    assert client.get("/export/download?from=2020-01-01&to=2026-01-01").status_code == 400  # > 366 days


def test_live_streams_are_bounded_and_given_back(app) -> None:
    client = app.test_client()
    login(client, "alice")
    first = client.get("/live", buffered=False)
    second = client.get("/live", buffered=False)
    assert first.status_code == second.status_code == 200
    assert first.mimetype == "text/event-stream"
    assert next(first.response) == b"retry: 5000\n\n"
    assert client.get("/live").status_code == 503  # max_streams = 2: a third waits
    first.close()
    second.close()  # never read: still given back
    again = client.get("/live", buffered=False)
    assert again.status_code == 200
    again.close()
