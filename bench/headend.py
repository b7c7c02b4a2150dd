"""Headend ingest benchmark: sealed ~2 kB deliveries POSTed over loopback to the real ingest
(verify, decrypt, document checks, idempotent store) running as the product runs it: two
worker processes sharing the port (``headend.workers``), keep-alive HTTP.

The client is one process of four threads, each with its own keep-alive connection, sending
pre-sealed deliveries; it shares the machine's two cores with the workers, so the figure is
what one 2-core box does as client and server at once (a lower bound for the ingest alone).

Prints one JSON object: ``deliveries_per_s_sqlite`` and ``deliveries_per_s_postgresql`` for
the ``modern`` profile (NIST P-256) and the same with ``_bsi`` (brainpoolP256r1, which
OpenSSL 3.0 verifies about 2.5 times slower: see bench/cms.py's crypto floor). PostgreSQL is
Debian's server in a throwaway cluster (needs root and the postgresql package; null without).

Usage: python bench/headend.py [--count N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headend.document import Delivery, Value, build
from headend.ingest import IngestContext, serve
from headend.store import HeadendStore
from headend.workers import run_workers
from pki.ca import CertificateAuthority, init_ca
from pki.cms import sign, software_signer
from pki.cms_envelope import encrypt, software_agreement
from tests.pgcluster import bindir, temporary_cluster

CLIENT_THREADS = 4
WORKERS = 2


def _document(n: int) -> bytes:
    start = dt.datetime(2026, 11, 25, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    values = tuple(Value("1.5", "kW", start + dt.timedelta(minutes=15 * i), start + dt.timedelta(minutes=15 * (i + 1)),
                         Decimal("0.412") + i) for i in range(4)) + tuple(
        Value("1.8.0", "kWh", start + dt.timedelta(minutes=i), start + dt.timedelta(minutes=i + 1),
              Decimal("4417.218") + i) for i in range(12))
    return build(Delivery(delivery_id=uuid.uuid4().hex, gateway="gw-0001", subject="37155794", identity="meter_id",
                          party="dso", profile="dso-taf7", resolution=3, window_from=start,
                          window_to=start + dt.timedelta(hours=1), created_at=start, values=values))


class Sealed:
    """A CA, the party's keys and ``count`` sealed deliveries for one crypto profile."""

    def __init__(self, profile: str, folder: Path, count: int) -> None:
        init_ca(folder / "ca", passphrase=b"correct horse battery", profile=profile)  # type: ignore[arg-type]
        ca = CertificateAuthority(folder / "ca", b"correct horse battery")
        sig, sig_key = ca.issue_generated("gateway-sig", "gw-0001")
        self.enc, self.enc_key = ca.issue_generated("party-enc", "dso.example")
        self.root, self.crl = ca.cert, ca.crl()
        signer = software_signer(sig_key)
        self.payloads = [encrypt(sign(_document(n), sig, signer), self.enc, aead=True) for n in range(count)]


def _send(port: int, payloads: list[bytes], failures: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for payload in payloads:
        connection.request("POST", "/v1/deliveries", body=payload, headers={"Content-Type": "application/cms"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            failures.append(f"HTTP {response.status}")
            return
    connection.close()


def measure(sealed: Sealed, database: str) -> dict[str, object]:
    HeadendStore(database).close()
    with socket.socket() as probe:  # a free port for the workers to share
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])

    def serve_one(stop: threading.Event, ready: Callable[[], None]) -> None:
        store = HeadendStore(database)
        ctx = IngestContext(party="dso", root=sealed.root, crl=sealed.crl, enc_cert=sealed.enc,
                            agree=software_agreement(sealed.enc_key), peer_cn=lambda ip: "gw-0001", store=store)
        server = serve(ctx, "127.0.0.1", port)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        ready()
        stop.wait()
        server.shutdown()
        store.close()

    stop, up = threading.Event(), threading.Event()
    runner = threading.Thread(target=run_workers, args=(WORKERS, serve_one, stop), kwargs={"on_ready": up.set})
    runner.start()
    if not up.wait(30):
        raise SystemExit("ingest workers did not start")
    failures: list[str] = []
    shares = [sealed.payloads[i::CLIENT_THREADS] for i in range(CLIENT_THREADS)]
    clients = [threading.Thread(target=_send, args=(port, share, failures)) for share in shares]
    started = time.perf_counter()
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    elapsed = time.perf_counter() - started
    stop.set()
    runner.join()
    if failures:
        raise SystemExit(f"ingest refused deliveries: {failures[:3]}")
    store = HeadendStore(database)
    stored = store.count()
    store.close()
    return {"per_s": round(len(sealed.payloads) / elapsed, 1), "stored_each_once": stored == len(sealed.payloads)}


def _fresh_database(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return url.replace("@/postgres?", f"@/{name}?", 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="smgw-bench-headend-") as tmp, ExitStack() as stack:
        pg_bin = bindir() if os.geteuid() == 0 else None
        pg_url = stack.enter_context(temporary_cluster(pg_bin)) if pg_bin is not None else None
        for profile in ("modern", "bsi"):
            sealed = Sealed(profile, Path(tmp) / profile, args.count)
            suffix = "" if profile == "modern" else "_bsi"
            sqlite = measure(sealed, f"sqlite:///{tmp}/{profile}.db")
            results[f"deliveries_per_s_sqlite{suffix}"] = sqlite["per_s"]
            results[f"stored_each_once_sqlite{suffix}"] = sqlite["stored_each_once"]
            if pg_url is not None:
                pg = measure(sealed, _fresh_database(pg_url, f"bench_{profile}"))
                results[f"deliveries_per_s_postgresql{suffix}"] = pg["per_s"]
                results[f"stored_each_once_postgresql{suffix}"] = pg["stored_each_once"]
            else:
                results[f"deliveries_per_s_postgresql{suffix}"] = None
        delivery_bytes = round(sum(map(len, sealed.payloads)) / len(sealed.payloads))
    print(json.dumps({
        "benchmark": "headend", "deliveries": args.count, "delivery_bytes": delivery_bytes, **results,
        "workers": WORKERS, "client_threads": CLIENT_THREADS, "target_per_s": 1500,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "client_and_server": "same machine"},
    }))


if __name__ == "__main__":
    main()
