"""Portal benchmark: chart pages against a year of data, and the portal's memory.

A store in a temp dir holds one meter's year: a readout every 157.68 s with five readings
each (1.8.0, 1.8.1, 1.8.2, 2.8.0, 21.7.0), 1,000,000 readings in all, written by
``portal.sample.fill``, plus the meter's 15-minute load profile (1.5, 35,040 intervals),
inserted by a second pass here (fill writes a load profile row only for a readout that falls
on a quarter hour, which a 157.68 s step rarely does). The real server (``python -m
portal``: cheroot, TLS, Flask) runs as a child process; a client sets the consumer's
password with the one-time code, logs in and fetches, over one kept-alive TLS connection:

- ``/charts?kind=year`` (this year and the last: 26 register seeks, 12 + 12 bars),
- ``/charts?kind=day`` (24 + 24 hourly bars),
- ``/profile`` (a day of the load profile, 96 bars),

``--requests`` times each after one warm-up request. Latency is the client's round trip on
loopback; the TLS handshake is excluded (the connection is reused) and the server's CPU
time per request (``/proc/PID/stat``) is reported beside it. ``portal_rss_mb``,
``portal_pss_mb`` and ``portal_hwm_mb`` are summed over the server's process tree after
the load (``portal_rss_mb_by_stage`` shows where it grew). The TLS certificate is made
before the server starts, as every start after a gateway's first finds it.

Prints one JSON object. Usage: python bench/portal.py [--requests N] [--readings N] [--days N] [--threads N]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import math
import os
import platform
import re
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from portal.sample import _kw, fill
from portal.tlscert import ensure_certificate
from tests.portalkit import CODES, PASSWORDS, free_port, settings_doc

CONSUMER = "alice"
METER = "ISK-A-0001"
ZONE = ZoneInfo("Europe/Berlin")
TARGETS = {"year_view_p95_ms": 100, "day_view_p95_ms": 100, "portal_rss_mb": 40}
CHART_MARK = b'<svg class="chart"'
TICKS = os.sysconf("SC_CLK_TCK")


# -- the store ---------------------------------------------------------------------------------

def build_store(path: Path, days: int, readings: int) -> dict[str, object]:
    """``days`` of history ending at the last quarter hour: ``readings`` raw readings (5 per
    readout) and a 15-minute load profile. Returns the counts as the store has them."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    end -= timedelta(minutes=end.minute % 15)
    start = end - timedelta(days=days)
    step = timedelta(microseconds=round(days * 86400 * 5 / readings * 1e6))
    fill(path, METER, start, end, step=step, load_profile=False, deliveries=30)
    con = sqlite3.connect(path)
    try:
        first_id, last_id = con.execute("SELECT min(id), max(id) FROM readouts WHERE meter_id = ?",
                                        (METER,)).fetchone()
        per_step = step.total_seconds()
        rows = []
        for i in range(days * 96):
            moment = start + timedelta(minutes=15 * i)
            # the readout that would have carried it: the first one at or after the interval's start
            readout = min(last_id, first_id + math.ceil(i * 900 / per_step))
            rows.append((METER, moment.isoformat(timespec="microseconds"), str(_kw(moment, 1.0)), readout))
        with con:
            con.executemany("INSERT OR IGNORE INTO load_profile (meter_id, start, address, value, unit, status, "
                            "readout_id) VALUES (?, ?, '1.5', ?, 'kW', '00', ?)", rows)
        counts = {
            "readings": con.execute("SELECT count(*) FROM readings WHERE meter_id = ?", (METER,)).fetchone()[0],
            "readouts": con.execute("SELECT count(*) FROM readouts WHERE meter_id = ?", (METER,)).fetchone()[0],
            "load_profile_intervals": con.execute("SELECT count(*) FROM load_profile WHERE meter_id = ?",
                                                  (METER,)).fetchone()[0],
        }
        # the 1.8.0 register must grow monotonically or the charts show negative bars
        values = [float(v) for (v,) in con.execute("SELECT value FROM readings WHERE meter_id = ? AND "
                                                   "address = '1.8.0' ORDER BY read_at", (METER,))]
        if any(b < a for a, b in pairwise(values)):
            raise SystemExit("bench: 1.8.0 is not monotonic in the generated store")
    finally:
        con.close()
    return {**counts, "readout_step_s": per_step, "first": start.isoformat(), "last": end.isoformat(),
            "store_mb": round(path.stat().st_size / 2**20, 1)}


# -- the server --------------------------------------------------------------------------------

def write_settings(root: Path, port: int, threads: int) -> Path:
    doc = settings_doc(root, port)
    doc["threads"] = threads
    # the certificate as every start after the first finds it: made once, here, not by the server
    ensure_certificate(Path(doc["tls"]["cert"]), Path(doc["tls"]["key"]), "127.0.0.1", doc["gateway_id"])
    doc["consumers"] = [{"name": CONSUMER, "meters": [METER],
                         "setup_code_sha256": hashlib.sha256(CODES[CONSUMER].encode()).hexdigest()}]
    path = root / "portal.json"
    path.write_text(json.dumps(doc))
    return path


def start_server(settings: Path, port: int) -> subprocess.Popen[bytes]:
    log = settings.with_name("portal.log")
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "portal", "--settings", str(settings)], cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench: portal exited {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise SystemExit(f"bench: portal did not listen on {port}: {log.read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Client:
    """One kept-alive TLS connection with a cookie jar of one origin."""

    def __init__(self, port: int) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the portal's own self-signed certificate
        self.origin = f"https://127.0.0.1:{port}"
        self.connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Accept-Language": "en"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            from urllib.parse import urlencode

            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = self.origin
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        content = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or "expires=Thu, 01 Jan 1970" in header:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value
        return response.status, content, dict(response.headers)

    def close(self) -> None:
        self.connection.close()


def _csrf(page: bytes) -> str:
    found = re.search(rb'name="csrf" value="([^"]*)"', page)
    if not found:
        raise SystemExit("bench: no csrf field in the form")
    return found.group(1).decode()


def log_in(client: Client) -> None:
    status, page, _ = client.request("GET", "/login")
    if status != 200 or "smgw_pre" not in client.cookies:
        raise SystemExit(f"bench: GET /login answered {status} without the smgw_pre cookie")
    csrf = _csrf(page)
    status, page, headers = client.request("POST", "/setup", {"csrf": csrf, "username": CONSUMER,
                                                              "code": CODES[CONSUMER], "password": PASSWORDS[CONSUMER]})
    if status != 302 or "setup_done" not in headers.get("Location", ""):
        raise SystemExit(f"bench: POST /setup answered {status}: {page[:300]!r}")
    status, page, _ = client.request("GET", "/login?notice=setup_done")
    status, page, _ = client.request("POST", "/login", {"csrf": _csrf(page), "username": CONSUMER,
                                                        "password": PASSWORDS[CONSUMER]})
    if status != 302 or "smgw_session" not in client.cookies:
        raise SystemExit(f"bench: POST /login answered {status} without a session: {page[:300]!r}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(client: Client, path: str, count: int, pid: int, must: bytes = b"") -> dict[str, float]:
    def fetch() -> float:
        started = time.perf_counter()
        status, body, _ = client.request("GET", path)
        elapsed = time.perf_counter() - started
        if status != 200 or CHART_MARK not in body or must not in body:
            raise SystemExit(f"bench: GET {path} answered {status} without the expected chart: {body[:300]!r}")
        return elapsed * 1000

    first = fetch()  # warm-up: the page's templates compiled, the store's pages in cache
    cpu0 = _cpu_s(pid)
    times = sorted(fetch() for _ in range(count))
    cpu = _cpu_s(pid) - cpu0
    return {"first_ms": round(first, 1), "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[max(0, math.ceil(0.95 * len(times)) - 1)], 1), "max_ms": round(times[-1], 1),
            "server_cpu_ms": round(1000 * cpu / count, 1)}


# -- memory ------------------------------------------------------------------------------------

def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return found


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def memory(pid: int) -> dict[str, float]:
    pids = _tree(pid)
    return {"portal_rss_mb": round(sum(_status_kb(p, "VmRSS") for p in pids) / 1024, 1),
            "portal_pss_mb": round(sum(_pss_kb(p) for p in pids) / 1024, 1),
            "portal_hwm_mb": round(sum(_status_kb(p, "VmHWM") for p in pids) / 1024, 1),
            "portal_processes": len(pids), "portal_threads": _status_kb(pid, "Threads"),
            "portal_store_connections": _open_files(pid, "smgw.db")}


def _open_files(pid: int, name: str) -> int:
    """How many descriptors of ``pid`` point at the file ``name`` (one per SQLite connection)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).endswith("/" + name)
        except OSError:
            pass
    return count


# -- main --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (after one warm-up)")
    parser.add_argument("--readings", type=int, default=1_000_000, help="raw readings in the store (5 per readout)")
    parser.add_argument("--days", type=int, default=365, help="days of history (and of 15-minute load profile)")
    parser.add_argument("--threads", type=int, default=8, help="the portal's request threads (config default 8)")
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="smgw-bench-portal-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        store = build_store(root / "smgw.db", args.days, args.readings)
        build_s = time.perf_counter() - t0
        port = free_port()
        process = start_server(write_settings(root, port, args.threads), port)
        try:
            stages = {"started": memory(process.pid)["portal_rss_mb"]}
            client = Client(port)
            try:
                log_in(client)
                stages["logged_in"] = memory(process.pid)["portal_rss_mb"]
                day = (datetime.fromisoformat(str(store["last"])).astimezone(ZONE) - timedelta(days=2)).date()
                pages = {"year_view": f"/charts?kind=year&date={day}", "day_view": f"/charts?kind=day&date={day}",
                         "profile_day": f"/profile?date={day}"}
                results = {}
                for name, path in pages.items():
                    # the profile page must draw the meter's own load profile, not fall back to the registers
                    must = b"as measured by the meter" if name == "profile_day" else b""
                    results[name] = measure(client, path, args.requests, process.pid, must)
                    stages[f"after_{name}"] = memory(process.pid)["portal_rss_mb"]
            finally:
                client.close()
            after = memory(process.pid)
        finally:
            stop_server(process)
    figures: dict[str, object] = {}
    for name, result in results.items():
        figures[f"{name}_p50_ms"] = result["p50_ms"]
        figures[f"{name}_p95_ms"] = result["p95_ms"]
        figures[f"{name}_max_ms"] = result["max_ms"]
        figures[f"{name}_first_ms"] = result["first_ms"]
        figures[f"{name}_server_cpu_ms"] = result["server_cpu_ms"]
    print(json.dumps({
        "benchmark": "portal", **store, "build_s": round(build_s, 1), "requests_per_page": args.requests,
        "portal_threads_setting": args.threads,
        "pages": pages, **figures, **after, "portal_rss_mb_by_stage": stages,
        "targets": TARGETS,
        "meets_targets": {
            "year_view_p95_ms": figures["year_view_p95_ms"] <= TARGETS["year_view_p95_ms"],  # type: ignore[operator]
            "day_view_p95_ms": figures["day_view_p95_ms"] <= TARGETS["day_view_p95_ms"],  # type: ignore[operator]
            "portal_rss_mb": after["portal_rss_mb"] <= TARGETS["portal_rss_mb"]},
        "method": ("sequential GETs from one client over one kept-alive TLS connection on loopback (handshake "
                   "excluded); latency = client round trip (request written to body read), after one warm-up "
                   "request per page; server_cpu_ms = the server process's user+system CPU per request; memory "
                   "from /proc (VmRSS, smaps_rollup Pss, VmHWM) summed over the server's process tree after the "
                   "load; the server as deployed: python -m portal (cheroot, TLS, --threads request threads)"),
        "total_s": round(time.monotonic() - began, 1),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "client_and_server": "same machine"},
    }))


if __name__ == "__main__":
    main()
