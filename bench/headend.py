"""Headend ingest benchmark: sealed ~2 kB deliveries (the issue's size: 6 values, 2.1 kB
sealed; ``--values 16`` gives the 3.2 kB earlier figures used) POSTed over loopback to the real ingest
(verify, decrypt, document checks, idempotent store) running as the product runs it: two
worker processes sharing the port (``headend.workers``), keep-alive HTTP.

The client is one process of 32 threads, each a gateway of a fleet: its own keep-alive
connection, one delivery in flight at a time (the outbox sends in order and waits for each
acknowledgement), 32 deliveries in flight in all. That is a saturation load, which is what a
capacity figure needs: the ingest answers each turn's deliveries after one commit, so with
few senders in flight it waits for the disk between turns and the figure measures the
clients' patience, not the ingest. The same run at 8 in flight (8 threads taking 32
connections in turn, the earlier sessions' load) is reported beside it,
``deliveries_per_s_sqlite_8_in_flight``. The kernel hands each connection to one worker by a
hash of its addresses (``SO_REUSEPORT``), as it does in the field, and a worker that holds
more connections than the other hands the new one over (``headend.balance``: without that,
how the hash split the 32 connections moved the rate by up to a tenth). The client shares the
machine's two cores with the workers, so the figure is what one 2-core box does as client
and server at once (a lower bound for the ingest alone).

Prints one JSON object: ``deliveries_per_s_sqlite`` and ``deliveries_per_s_postgresql`` for
the ``modern`` profile (NIST P-256) and the same with ``_bsi`` (brainpoolP256r1, which
OpenSSL 3.0 verifies about 2.5 times slower: see bench/cms.py's crypto floor). PostgreSQL is
Debian's server in a throwaway cluster (needs root and the postgresql package; null without).

The SQLite figure is the median of ``--repeat`` runs (3), each run's rate beside it in
``deliveries_per_s_sqlite_runs``: on this 2-core virtual machine one run's rate moves by a
fifth from run to run (the CPU a delivery costs moves as much).

Also ``cpu_us_per_delivery_sqlite``: CPU time per delivery of the ingest workers and of the
client, which, unlike the rate, does not depend on what else the machine is doing.

Usage: python bench/headend.py [--count N] [--values 6] [--profiles modern,bsi] [--no-postgresql]
       [--workers 2] [--clients 32] [--connections 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headend.balance import Seat
from headend.document import Delivery, Value, build, new_delivery_id
from headend.ingest import IngestContext
from headend.ingest_server import serve
from headend.store import HeadendStore
from headend.workers import run_workers
from pki.ca import CertificateAuthority, init_ca
from pki.cms import sign, software_signer
from pki.cms_envelope import encrypt, software_agreement
from tests.pgcluster import bindir, temporary_cluster

CLIENT_THREADS = 32
CONNECTIONS_PER_THREAD = 1
WORKERS = 2


def _document(n: int, count: int) -> bytes:
    """A delivery of ``count`` values: quarter-hour kW values first, then minute kWh registers."""
    start = dt.datetime(2026, 11, 25, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    values = tuple(Value("1.5", "kW", start + dt.timedelta(minutes=15 * i), start + dt.timedelta(minutes=15 * (i + 1)),
                         Decimal("0.412") + i) for i in range(4)) + tuple(
        Value("1.8.0", "kWh", start + dt.timedelta(minutes=i), start + dt.timedelta(minutes=i + 1),
              Decimal("4417.218") + i) for i in range(max(0, count - 4)))
    return build(Delivery(delivery_id=new_delivery_id(), gateway="gw-0001", subject="37155794", identity="meter_id",
                          party="dso", profile="dso-taf7", resolution=3, window_from=start,
                          window_to=start + dt.timedelta(hours=1), created_at=start, values=values[:count]))


class Sealed:
    """A CA, the party's keys and ``count`` sealed deliveries for one crypto profile."""

    def __init__(self, profile: str, folder: Path, count: int, values: int = 6) -> None:
        init_ca(folder / "ca", passphrase=b"correct horse battery", profile=profile)  # type: ignore[arg-type]
        ca = CertificateAuthority(folder / "ca", b"correct horse battery")
        sig, sig_key = ca.issue_generated("gateway-sig", "gw-0001")
        self.enc, self.enc_key = ca.issue_generated("party-enc", "dso.example")
        self.root, self.crl = ca.cert, ca.crl()
        signer = software_signer(sig_key)
        self.payloads = [encrypt(sign(_document(n, values), sig, signer), self.enc, aead=True) for n in range(count)]


def _send(port: int, payloads: list[bytes], failures: list[str], connections_each: int) -> None:
    """Keep-alive connections taken in turn, requests written whole and responses read by
    their Content-Length: a client that costs the shared cores as little as possible
    (http.client cost ~0.39 ms of CPU per request, a sixth of the server's), since it is
    the server being measured."""
    with ExitStack() as stack:
        connections = []
        for _ in range(connections_each):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connections.append((sock, sock.makefile("rb")))
        for n, payload in enumerate(payloads):
            sock, replies = connections[n % connections_each]
            sock.sendall(b"POST /v1/deliveries HTTP/1.1\r\nHost: headend\r\nContent-Type: application/cms\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (len(payload), payload))
            status, length = replies.readline().split(b" ", 2)[1], 0
            while (line := replies.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            replies.read(length)
            if status != b"200":
                failures.append(f"HTTP {status.decode()}")
                return


def measure(sealed: Sealed, database: str, clients: int | None = None,
            connections_each: int | None = None) -> dict[str, object]:
    clients = clients or CLIENT_THREADS
    connections_each = connections_each or CONNECTIONS_PER_THREAD
    HeadendStore(database).close()
    with socket.socket() as probe:  # a free port for the workers to share
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])

    def serve_one(stop: threading.Event, ready: Callable[[], None], seat: Seat | None) -> None:
        store = HeadendStore(database)
        ctx = IngestContext(party="dso", root=sealed.root, crl=sealed.crl, enc_cert=sealed.enc,
                            agree=software_agreement(sealed.enc_key), peer_cn=lambda ip: "gw-0001", store=store)
        server = serve(ctx, "127.0.0.1", port, per_address=4096, seat=seat)  # the whole fleet comes from 127.0.0.1 here
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
    shares = [sealed.payloads[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=_send, args=(port, share, failures, connections_each)) for share in shares]
    before = os.times()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    client_cpu = _cpu(os.times()) - _cpu(before)
    stop.set()
    runner.join()  # the workers are reaped now: their CPU time is in this process's children times
    after = os.times()
    server_cpu = _children_cpu(after) - _children_cpu(before)
    server_sys = after.children_system - before.children_system
    if failures:
        raise SystemExit(f"ingest refused deliveries: {failures[:3]}")
    store = HeadendStore(database)
    stored = store.count()
    store.close()
    count = len(sealed.payloads)
    return {"per_s": round(count / elapsed, 1), "stored_each_once": stored == count,
            "server_cpu_us": round(server_cpu / count * 1e6),
            "server_kernel_us": round(server_sys / count * 1e6), "client_cpu_us": round(client_cpu / count * 1e6)}


def _cpu(times: os.times_result) -> float:
    return times.user + times.system


def _children_cpu(times: os.times_result) -> float:
    """CPU of reaped children: the ingest workers, including their start-up and the idle
    tail until stopped, so a slight overestimate of the CPU one delivery costs."""
    return times.children_user + times.children_system


def _fresh_database(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return url.replace("@/postgres?", f"@/{name}?", 1)


def main() -> None:
    global WORKERS, CLIENT_THREADS, CONNECTIONS_PER_THREAD  # one run's knobs, read by measure and _send
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--values", type=int, default=6,
                        help="values per delivery (6: ~2.1 kB sealed, the issue's ~2 kB; 16: ~3.2 kB)")
    parser.add_argument("--profiles", default="modern,bsi", help="comma-separated crypto profiles to measure")
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only (faster while iterating)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="ingest processes (the product's default: 2)")
    parser.add_argument("--clients", type=int, default=CLIENT_THREADS, help="client threads = deliveries in flight")
    parser.add_argument("--connections", type=int, default=CONNECTIONS_PER_THREAD, help="keep-alive connections per client")
    parser.add_argument("--repeat", type=int, default=3,
                        help="SQLite runs per profile; the median is reported, and every run beside it")
    args = parser.parse_args()
    WORKERS, CLIENT_THREADS, CONNECTIONS_PER_THREAD = args.workers, args.clients, args.connections
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="smgw-bench-headend-") as tmp, ExitStack() as stack:
        pg_bin = bindir() if os.geteuid() == 0 and not args.no_postgresql else None
        pg_url = stack.enter_context(temporary_cluster(pg_bin)) if pg_bin is not None else None
        for profile in args.profiles.split(","):
            sealed = Sealed(profile, Path(tmp) / profile, args.count, args.values)
            suffix = "" if profile == "modern" else "_bsi"
            runs = [measure(sealed, f"sqlite:///{tmp}/{profile}-{n}.db") for n in range(args.repeat)]
            sqlite = sorted(runs, key=lambda run: float(run["per_s"]))[len(runs) // 2]  # the median run
            results[f"deliveries_per_s_sqlite{suffix}"] = sqlite["per_s"]
            results[f"deliveries_per_s_sqlite{suffix}_runs"] = [run["per_s"] for run in runs]
            results[f"stored_each_once_sqlite{suffix}"] = all(run["stored_each_once"] for run in runs)
            results[f"cpu_us_per_delivery_sqlite{suffix}"] = {"server": sqlite["server_cpu_us"], "server_kernel": sqlite["server_kernel_us"],
                                                              "client": sqlite["client_cpu_us"]}
            if profile == "modern":
                few = measure(sealed, f"sqlite:///{tmp}/{profile}-8.db", clients=8, connections_each=4)
                results["deliveries_per_s_sqlite_8_in_flight"] = few["per_s"]
                results["cpu_us_per_delivery_sqlite_8_in_flight"] = {"server": few["server_cpu_us"],
                                                                     "client": few["client_cpu_us"]}
            if pg_url is not None:
                pg = measure(sealed, _fresh_database(pg_url, f"bench_{profile}"))
                results[f"deliveries_per_s_postgresql{suffix}"] = pg["per_s"]
                results[f"stored_each_once_postgresql{suffix}"] = pg["stored_each_once"]
            else:
                results[f"deliveries_per_s_postgresql{suffix}"] = None
        delivery_bytes = round(sum(map(len, sealed.payloads)) / len(sealed.payloads))
    print(json.dumps({
        "benchmark": "headend", "deliveries": args.count, "values_per_delivery": args.values,
        "delivery_bytes": delivery_bytes, **results,
        "workers": WORKERS, "client_threads": CLIENT_THREADS, "in_flight": CLIENT_THREADS,
        "client_connections": CLIENT_THREADS * CONNECTIONS_PER_THREAD, "target_per_s": 1500,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "client_and_server": "same machine"},
    }))


if __name__ == "__main__":
    main()
