"""The household portal in a real browser (headless Chromium through Selenium).

What the issue asks for: log in, see the chart and the transparency page, download an
export and check its content, see the rate limit after repeated wrong passwords, a
cross-site form post refused; every step leaves a screenshot (see ``conftest.Shots``).

The tests of the module share one portal and one browser, and run in file order: the first
one sets alice's password through /setup and logs in, the later ones use that session
(``alice`` logs in again when a test runs on its own). The rate limit gets a portal and a
browser of its own, so its failures from 127.0.0.1 lock nobody else out.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import sqlite3
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from portal import periods
from portal.sample import fill
from tests import portalkit
from tests.browser.conftest import Portal, Shots, running_portal

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

ALICE = portalkit.METERS["alice"][0]
BOB = portalkit.METERS["bob"][0]
WAIT_S = 10.0
REFUSED = "This form was not sent from this portal and was refused."
WRONG = "User name or password wrong."


try:
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the browser fixtures call tests.tools.missing(): a skip, or under CI=true a failure
    pass


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], message: str = "",
          timeout: float = WAIT_S, navigating: bool = False) -> Any:
    """Wait for ``condition(driver)``, looking every 50 ms (Selenium's default is 500 ms).
    ``navigating``: the page changes under the condition, so a WebDriver error means "not yet"."""
    ignored = (WebDriverException,) if navigating else None
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored).until(condition, message)


# -- helpers -------------------------------------------------------------------------------------


def path_of(driver: WebDriver) -> str:
    return urllib.parse.urlsplit(driver.current_url).path


def css(driver: WebDriver, selector: str) -> WebElement:
    """The element, waiting for it up to WAIT_S."""
    return until(driver, ec.presence_of_element_located((By.CSS_SELECTOR, selector)), f"no {selector}")


def all_css(driver: WebDriver, selector: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(element: WebElement) -> str:
    """textContent: also for SVG <title>, which is never rendered and so has no .text."""
    return str(element.get_attribute("textContent")).strip()


def status_of(driver: WebDriver) -> int:
    """The HTTP status of the page on screen (Navigation Timing's responseStatus)."""
    return int(driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus"))


def says(driver: WebDriver) -> str:
    """What the page says, for failure messages."""
    return f"{driver.current_url} ({status_of(driver)}): {css(driver, 'main').text!r}"


def go(driver: WebDriver, url: str) -> None:
    driver.get(url)
    css(driver, "body")


def submit_form(driver: WebDriver, fields: dict[str, str], button: str = "submit") -> None:
    """Type into the inputs by id, click the button and wait for the next page."""
    for element_id, value in fields.items():
        box = driver.find_element(By.ID, element_id)
        box.clear()
        box.send_keys(value)
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button).click()
    # navigating: chromedriver may answer "node does not belong to the document" for the old page
    # while it goes (seen in CI), which means the same as stale: ask again
    until(driver, ec.staleness_of(page), "the form's page stayed", navigating=True)
    css(driver, "body")


def en_number(text: str) -> Decimal:
    """A number as the English pages show it: 1,234.567."""
    assert re.fullmatch(r"-?\d{1,3}(,\d{3})*(\.\d+)?", text), f"not an English number: {text!r}"
    return Decimal(text.replace(",", ""))


def de_number(text: str) -> Decimal:
    """A number as the German pages show it: 1.234,567."""
    assert re.fullmatch(r"-?\d{1,3}(\.\d{3})*(,\d+)?", text), f"not a German number: {text!r}"
    return Decimal(text.replace(".", "").replace(",", "."))


def latest_in_store(store: Path, meter: str, address: str = "1.8.0") -> tuple[str, Decimal]:
    """The newest reading as the gateway's store has it: what the pages must show."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        read_at, value = con.execute("SELECT read_at, value FROM readings WHERE meter_id = ? AND address = ? "
                                     "ORDER BY read_at DESC LIMIT 1", (meter, address)).fetchone()
    finally:
        con.close()
    return read_at, Decimal(value)


def zone_of(portal: Portal) -> ZoneInfo:
    return ZoneInfo(portal.settings["timezone"])


def local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)


def setup_password(driver: WebDriver, portal: Portal, name: str) -> None:
    go(driver, portal.url + "/setup")
    submit_form(driver, {"username": name, "code": portalkit.CODES[name],
                         "password": portalkit.PASSWORDS[name]})
    assert path_of(driver) == "/login", f"/setup did not lead to the login: {says(driver)}"
    assert css(driver, "#notice").text == "Password set. Please log in."


def log_in(driver: WebDriver, portal: Portal, name: str, password: str | None = None) -> None:
    """The login form: the one on the page (after a failed attempt), else a fresh /login."""
    if path_of(driver) != "/login" or not all_css(driver, "#login-form"):
        go(driver, portal.url + "/login")
    submit_form(driver, {"username": name, "password": password or portalkit.PASSWORDS[name]})


def ssl_context() -> ssl.SSLContext:
    return ssl._create_unverified_context()  # the portal's certificate is self-signed


def https(portal: Portal, method: str, path: str, body: str | None = None,
          headers: dict[str, str] | None = None) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
    split = urllib.parse.urlsplit(portal.url)
    con = http.client.HTTPSConnection(split.hostname, split.port, context=ssl_context(), timeout=5)
    con.request(method, path, body=body, headers=headers or {})
    return con, con.getresponse()


def session_cookie(driver: WebDriver) -> str:
    cookie = driver.get_cookie("smgw_session")
    assert cookie is not None, "no session cookie in the browser"
    assert cookie["httpOnly"] and cookie["secure"] and cookie.get("sameSite") == "Strict", cookie
    return f"smgw_session={cookie['value']}"


def wait_download(folder: Path, name: str, timeout: float = 15.0) -> Path:
    """The finished download (no .crdownload left beside it)."""
    target = folder / name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.exists() and not list(folder.glob("*.crdownload")) and target.stat().st_size > 0:
            return target
        time.sleep(0.1)
    there = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    raise AssertionError(f"no download {name} in {folder} after {timeout} s: {there}")


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    # 40 days of history: this month began with data, so the year chart has a bar, and the month
    # and week charts have a previous period. Four live streams: every visit to /now opens one,
    # and the server notices a closed one only at its second keep-alive (about 30 s later)
    with running_portal(tmp_path_factory.mktemp("portal"), days=40, max_streams=4) as running:
        print(f"portal {running.url}, log {running.running.log}")
        yield running


@pytest.fixture
def alice(browser: WebDriver, portal: Portal) -> WebDriver:
    """The module's browser, logged in as alice (sets her password first if no test did yet).
    It looks at /status, not /now: every /now opens a live stream, and those are few."""
    go(browser, portal.url + "/status")
    if path_of(browser) == "/login":
        if not portal.state.get("password_set"):
            setup_password(browser, portal, "alice")
            portal.state["password_set"] = True
        log_in(browser, portal, "alice")
    assert path_of(browser) in ("/now", "/status"), f"alice is not logged in: {says(browser)}"
    assert css(browser, ".who").text == "alice"
    return browser


@dataclass
class Attacker:
    """Another site on this machine (plain HTTP, another port): its pages post to the portal."""

    url: str
    pages: dict[str, str]


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((body or "not here").encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", portalkit.free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, name="attacker-site", daemon=True)
    thread.start()
    try:
        yield Attacker(f"http://127.0.0.1:{server.server_address[1]}", pages)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- the tests, in the order a household would go ------------------------------------------------


def test_setup_and_login_show_the_current_registers(browser: WebDriver, portal: Portal, shots: Shots) -> None:
    go(browser, portal.url + "/now")
    assert path_of(browser) == "/login", f"a page with data without login: {says(browser)}"
    assert not all_css(browser, "nav"), "the navigation is for logged-in households only"
    shots(browser, "login-required")

    css(browser, "a[href='/setup']").click()
    css(browser, "#code")
    assert path_of(browser) == "/setup"
    for element_id, value in (("username", "alice"), ("code", portalkit.CODES["alice"]),
                              ("password", portalkit.PASSWORDS["alice"])):
        browser.find_element("id", element_id).send_keys(value)
    shots(browser, "setup-filled")
    submit_form(browser, {})
    assert path_of(browser) == "/login", f"/setup did not lead to the login: {says(browser)}"
    assert css(browser, "#notice").text == "Password set. Please log in."
    portal.state["password_set"] = True
    shots(browser, "setup-done")

    for element_id, value in (("username", "alice"), ("password", portalkit.PASSWORDS["alice"])):
        browser.find_element("id", element_id).send_keys(value)
    shots(browser, "login-filled")
    submit_form(browser, {})
    assert path_of(browser) == "/now", f"the login did not lead to /now: {says(browser)}"
    assert css(browser, ".who").text == "alice"
    assert "Consumption" in css(browser, "nav").text

    shown = en_number(css(browser, "#registers td[data-address='1.8.0']").text)
    read_at, stored = latest_in_store(portal.store, ALICE)
    assert shown == stored, f"/now shows 1.8.0 = {shown}, the store's latest reading ({read_at}) is {stored}"
    assert ALICE in css(browser, "h1").text
    for address in ("1.8.1", "1.8.2", "2.8.0"):
        en_number(css(browser, f"#registers td[data-address='{address}']").text)
    assert css(browser, "#live").get_attribute("data-url") == f"/live?meter={ALICE}"
    shots(browser, "now")


def test_live_values_arrive_on_the_now_page(alice: WebDriver, portal: Portal, shots: Shots) -> None:
    # /live itself: an event stream for the logged-in household (bounded: first line only)
    con, response = https(portal, "GET", "/live", headers={"Cookie": session_cookie(alice)})
    try:
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        assert response.getheader("Cache-Control") == "no-store"
        assert response.readline() == b"retry: 5000\n"
    finally:
        con.close()
    con, response = https(portal, "GET", "/live")
    assert response.status == 302 and response.getheader("Location", "").endswith("/login"), \
        "the live stream without a session"
    con.close()

    # the page's EventSource: a new readout in the store shows up without a reload. The stream
    # sends readouts newer than its start, so if the page connected only after the first new
    # readout, the next one (a second later) shows it
    if path_of(alice) != "/now":
        go(alice, portal.url + "/now")
    cell = css(alice, "#registers td[data-address='1.8.0']")
    before = en_number(cell.text)
    _, fresh = latest_in_store(portal.store, ALICE)
    for _ in range(3):
        fresh += Decimal("0.250")
        moment = datetime.now(UTC)
        fill(portal.store, ALICE, moment, moment + timedelta(seconds=1), start_kwh=fresh, load_profile=False)
        try:  # live.js shows the value as the stream sends it: 1234.567, no thousands separator
            until(alice, lambda d, want=fresh: Decimal(cell.text.replace(",", "")) == want, timeout=3)
            break
        except TimeoutException:
            continue
    else:
        raise AssertionError(f"1.8.0 stays {cell.text}: the live stream did not bring the new readings")
    assert fresh > before
    assert "on" in str(css(alice, "#live").get_attribute("class")).split()
    shots(alice, "now-live-update")


@pytest.mark.parametrize("kind", periods.KINDS)
def test_consumption_charts(alice: WebDriver, portal: Portal, shots: Shots, kind: str) -> None:
    go(alice, f"{portal.url}/charts?kind={kind}")
    assert path_of(alice) == "/charts"
    svg = css(alice, "figure#chart > svg.chart")
    assert svg.get_attribute("role") == "img"
    assert kind in str(css(alice, "p.tabs a.active").get_attribute("href"))

    bars = [text_of(t) for t in all_css(alice, "svg.chart rect.cur > title")]
    previous = [text_of(t) for t in all_css(alice, "svg.chart rect.prev > title")]
    assert bars, f"no bars of this {kind} in the chart"
    if kind != "year":  # 40 days of history: yesterday, last week and last month have data
        assert previous, f"no bars of the previous {kind}"
    else:
        assert not previous, "there is no history of last year"
    assert all(t.startswith("This period ") and t.endswith(" kWh") for t in bars), bars[:3]

    # the total under the chart is the sum of its bars (each bar's title carries its exact value)
    values = [en_number(t.rsplit(": ", 1)[1].removesuffix(" kWh")) for t in bars]
    total = en_number(css(alice, "#total").text)
    assert total == sum(values, Decimal(0)), f"#total {total} != sum of {len(values)} bars"
    assert all(v >= 0 for v in values)
    en_number(css(alice, "#total-before").text)
    alice.execute_script("arguments[0].scrollIntoView()", svg)
    shots(alice, f"chart-{kind}")


def test_load_profile_chart(alice: WebDriver, portal: Portal, shots: Shots) -> None:
    go(alice, portal.url + "/profile")
    css(alice, "figure#chart > svg.chart")
    assert not all_css(alice, "svg.chart rect.prev"), "the load profile has no previous period"
    # today: the meter's P.01 once its first quarter hour has ended, else the registers (just
    # after local midnight, when CI may well run)
    assert css(alice, "p.source").text in (
        "Average power per 15 minutes as measured by the meter (P.01).",
        "Average power per 15 minutes, from the register readings.")
    shots(alice, "profile-today")

    zone = zone_of(portal)
    yesterday = datetime.now(zone).date() - timedelta(days=1)
    css(alice, f"a[href*='date={yesterday.isoformat()}']").click()  # "← Earlier"
    until(alice, lambda d: yesterday.isoformat() in d.current_url
          and d.execute_script("return document.readyState") == "complete", navigating=True)
    assert yesterday.isoformat() in css(alice, "h1").text
    quarters = len(periods.quarter_hours(yesterday, zone)) - 1  # 96, or 92/100 on a DST day
    bars = all_css(alice, "svg.chart rect.cur > title")
    assert len(bars) == quarters, f"{len(bars)} bars for the {quarters} quarter hours of {yesterday}"
    values = [en_number(text_of(t).rsplit(": ", 1)[1].removesuffix(" kW")) for t in bars]
    assert all(v > 0 for v in values), "the sample household always draws some power"
    assert "as measured by the meter" in css(alice, "p.source").text  # a whole day of P.01 intervals
    shots(alice, "profile-yesterday")


def test_transparency_shows_only_own_deliveries(alice: WebDriver, portal: Portal, shots: Shots) -> None:
    go(alice, portal.url + "/transparency")
    rows = all_css(alice, "#deliveries tr.delivery")
    parties = [r.find_element("css selector", ".party").text for r in rows]
    assert len(rows) == 3, f"alice's store has 3 deliveries, the page lists {len(rows)}"
    assert set(parties) == {"dso"}, parties
    assert "sup" not in parties, "bob's deliveries (party sup) must never show to alice"
    assert {r.find_element("css selector", ".profile").text for r in rows} == {"dso-taf7"}
    assert "96 values" in rows[0].find_element("css selector", ".what").text
    profiles = css(alice, "#profiles").text
    assert "dso" in profiles and "1.5" in profiles and "90" in profiles, profiles
    shots(alice, "transparency")


def _export(driver: WebDriver, start: date, end: date, fmt: str) -> None:
    for element_id, day in (("from", start), ("to", end)):
        box = driver.find_element(By.ID, element_id)
        # a date input takes typed text in the browser's locale; the value property is ISO everywhere
        driver.execute_script("arguments[0].value = arguments[1];"
                              "arguments[0].dispatchEvent(new Event('change', {bubbles: true}))", box, day.isoformat())
        assert box.get_attribute("value") == day.isoformat()
    Select(driver.find_element(By.ID, "format")).select_by_value(fmt)
    driver.find_element(By.ID, "download").click()


def test_export_downloads_csv_and_json(alice: WebDriver, portal: Portal, downloads: Path, shots: Shots) -> None:
    zone = zone_of(portal)
    today = datetime.now(zone).date()
    start, end = today - timedelta(days=1), today + timedelta(days=1)
    start_utc, end_utc = local_midnight_utc(start, zone), local_midnight_utc(end, zone)

    go(alice, portal.url + "/export")
    assert css(alice, "#from").get_attribute("type") == "date"
    _export(alice, start, end, "csv")
    shots(alice, "export-csv")
    csv_file = wait_download(downloads, f"smgw-{ALICE}-{start}-{end}.csv")
    text = csv_file.read_text()
    assert text.splitlines()[0] == "read_at_utc,address,value,unit"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows, "an empty export"
    for row in rows:
        assert re.fullmatch(r"-?\d+(\.\d+)?", row["value"]), f"not a decimal: {row}"
        moment = datetime.fromisoformat(row["read_at_utc"])
        assert start_utc <= moment < end_utc, f"{row} is outside {start_utc} .. {end_utc}"
    energy = [r for r in rows if r["address"] == "1.8.0"]
    assert {r["unit"] for r in energy} == {"kWh"}
    assert len(energy) >= 96, f"yesterday alone has 96 quarter hours, the export has {len(energy)} 1.8.0 rows"
    assert datetime.fromisoformat(energy[0]["read_at_utc"]) == start_utc, "the export starts at local midnight"
    values = [Decimal(r["value"]) for r in energy]
    assert values == sorted(values), "the 1.8.0 register never runs backwards"
    read_at, stored = latest_in_store(portal.store, ALICE)
    assert (energy[-1]["read_at_utc"], values[-1]) == (read_at, stored), "the export ends with the newest reading"
    assert {r["address"] for r in rows} >= {"1.8.0", "1.8.1", "1.8.2"}

    _export(alice, start, end, "json")
    json_file = wait_download(downloads, f"smgw-{ALICE}-{start}-{end}.json")
    doc = json.loads(json_file.read_text())
    assert doc["meter"] == ALICE
    assert datetime.fromisoformat(doc["from"]) == start_utc and datetime.fromisoformat(doc["to"]) == end_utc
    assert doc["readings"], "no readings in the JSON export"
    assert [(r["read_at"], r["address"], r["value"], r["unit"] or "") for r in doc["readings"]] == \
        [(r["read_at_utc"], r["address"], r["value"], r["unit"]) for r in rows], "JSON and CSV differ"
    shots(alice, "export-json")

    # another household's meter is not found, not exported
    go(alice, f"{portal.url}/export/download?meter={BOB}&from={start}&to={end}&format=csv")
    assert css(alice, "#message").text == "Not found."
    assert not list(downloads.glob(f"smgw-{BOB}-*")), "bob's readings were downloaded by alice"
    shots(alice, "export-other-meter")


def _attack_page(target: str, fields: dict[str, str]) -> str:
    """The attacker's page: a hidden form that posts itself to the portal once the page loaded."""
    inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
    return (f'<!doctype html><title>Win a prize</title><p>Loading your prize...</p>'
            f'<form id="f" method="post" action="{target}">{inputs}</form>'
            f'<script>addEventListener("load", function () {{ document.getElementById("f").submit(); }});</script>')


def _landed(portal: Portal, path: str) -> Callable[[WebDriver], bool]:
    """The browser shows the portal's answer at ``path``, loaded completely."""
    def check(driver: WebDriver) -> bool:
        return (driver.current_url.startswith(portal.url) and path_of(driver) == path
                and driver.execute_script("return document.readyState") == "complete"
                and bool(all_css(driver, "#message")))
    return check


def test_cross_site_form_posts_are_refused(alice: WebDriver, portal: Portal, attacker: Attacker, shots: Shots) -> None:
    attacker.pages["/prize"] = _attack_page(portal.url + "/devices", {"name": "evil", "csrf": "forged"})
    attacker.pages["/bye"] = _attack_page(portal.url + "/logout", {"csrf": "forged"})

    alice.get(attacker.url + "/prize")
    until(alice, _landed(portal, "/devices"), "the attacker's post did not arrive", navigating=True)
    assert css(alice, "#message").text == REFUSED
    assert status_of(alice) == 403
    shots(alice, "cross-site-post-refused")

    alice.get(attacker.url + "/bye")
    until(alice, _landed(portal, "/logout"), "the attacker's post did not arrive", navigating=True)
    assert css(alice, "#message").text == REFUSED
    assert status_of(alice) == 403

    go(alice, portal.url + "/devices")
    assert path_of(alice) == "/devices", "the cross-site logout ended alice's session"
    assert css(alice, ".who").text == "alice"
    assert "evil" not in css(alice, "main").text, "the cross-site post created a device token"
    shots(alice, "devices-after-attack")

    # the same origin and token, but a foreign Origin (SameSite=Strict hides the browser's cookie
    # from the attacker anyway, so this asks the portal directly): refused as well
    token = css(alice, "#token-form input[name='csrf']").get_attribute("value")
    base = {"Cookie": session_cookie(alice), "Content-Type": "application/x-www-form-urlencoded"}
    for headers, csrf in (({"Origin": attacker.url}, token), ({"Origin": portal.url}, "forged"),
                          ({"Sec-Fetch-Site": "cross-site"}, token)):
        con, response = https(portal, "POST", "/devices", urllib.parse.urlencode({"name": "evil2", "csrf": csrf}),
                              {**base, **headers})
        body = response.read().decode()
        con.close()
        assert response.status == 403 and REFUSED in body, (headers, response.status)

    # and from the portal's own form it works: the refusal is not just a broken form
    submit_form(alice, {"device-name": "kitchen display"}, button="create-token")
    assert re.fullmatch(r"\S{20,}", css(alice, "#new-token").text)
    names = [r.find_element("css selector", "td").text for r in all_css(alice, "#tokens tr")[1:]]
    assert names == ["kitchen display"], names
    shots(alice, "devices-own-form")


def test_german(alice: WebDriver, portal: Portal, shots: Shots) -> None:
    try:
        css(alice, "header a.lang").click()  # "Deutsch"
        until(alice, lambda d: d.execute_script("return document.documentElement.lang") == "de", "still English",
              navigating=True)
        assert path_of(alice) == "/now"
        assert alice.get_cookie("smgw_lang")["value"] == "de"
        nav = css(alice, "nav").text
        assert "Verbrauch" in nav and "Transparenz" in nav and "Consumption" not in nav, nav
        assert "Bezug gesamt" in css(alice, "#registers").text
        shown = de_number(css(alice, "#registers td[data-address='1.8.0']").text)
        assert shown == latest_in_store(portal.store, ALICE)[1]
        shots(alice, "german-now")
        go(alice, portal.url + "/charts?kind=day")
        assert css(alice, "h1").text.startswith("Verbrauch")
        de_number(css(alice, "#total").text)
        shots(alice, "german-chart")
    finally:
        go(alice, portal.url + "/lang/en")
    assert css(alice, "html").get_attribute("lang") == "en"


# -- the rate limit: a portal and a browser of its own --------------------------------------------


@pytest.fixture
def spare_portal(tmp_path: Path) -> Iterator[Portal]:
    # no live streams: bob's /now opens none, so the server stops at once afterwards
    with running_portal(tmp_path / "portal", max_streams=0) as running:
        yield running


def test_rate_limit_after_wrong_passwords(fresh_browser: WebDriver, spare_portal: Portal, shots: Shots) -> None:
    driver = fresh_browser
    setup_password(driver, spare_portal, "bob")

    for attempt in range(1, 4):  # three attempts are free
        log_in(driver, spare_portal, "bob", f"wrong-password-{attempt}")
        assert css(driver, "#error").text == WRONG, f"attempt {attempt}: {says(driver)}"
        assert status_of(driver) == 401
    shots(driver, "login-wrong-password")

    # then a delay that doubles with each failure (2 s, 4 s, ...); wait the first one out and fail
    # once more, so that the checks below run well inside a delay of at least 4 s
    first_refusal = None
    for attempt in range(4, 9):
        log_in(driver, spare_portal, "bob", f"wrong-password-{attempt}")
        message = css(driver, "#error").text
        if "Too many attempts" not in message:
            assert message == WRONG, says(driver)
            continue
        assert status_of(driver) == 429
        wait = re.search(r"wait (\d+) seconds", message)
        assert wait, message
        seconds = int(wait.group(1))
        if first_refusal is None:
            first_refusal = message
            shots(driver, "login-too-many-attempts")
        if seconds >= 4:
            break
        time.sleep(seconds)
    else:
        raise AssertionError(f"eight wrong passwords and no delay of 4 s or more; first refusal: {first_refusal}")
    assert path_of(driver) == "/login" and not all_css(driver, ".who")

    # while the delay runs, even the right password is not tried; and the delay holds for the
    # source address (127.0.0.1) as well, not only for bob's account
    log_in(driver, spare_portal, "bob")
    assert "Too many attempts" in css(driver, "#error").text, f"the right password in the delay: {says(driver)}"
    assert status_of(driver) == 429
    assert path_of(driver) == "/login" and not all_css(driver, ".who")
    log_in(driver, spare_portal, "alice", "another-guess")
    assert "Too many attempts" in css(driver, "#error").text, f"another account, same address: {says(driver)}"
    shots(driver, "login-still-too-many")

    # a delay, never a lockout: after the wait the right password gets in
    time.sleep(seconds + 0.2)
    log_in(driver, spare_portal, "bob")
    assert path_of(driver) == "/now", f"no login after the wait: {says(driver)}"
    assert css(driver, ".who").text == "bob"
    assert BOB in css(driver, "h1").text
    shots(driver, "login-after-the-wait")
