"""Headend ingest benchmark: sealed ~2 kB deliveries POSTed over loopback to the real ingest
(verify, decrypt, document checks, idempotent store), as fast as one client can send them.

Prints one JSON object with ``deliveries_per_s_sqlite`` (bsi, the default profile) and the
same for ``modern``; PostgreSQL is not built yet (``deliveries_per_s_postgresql``: null).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import platform
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headend.document import Delivery, Value, build
from headend.ingest import IngestContext, serve
from headend.store import HeadendStore
from pki.ca import CertificateAuthority, init_ca
from pki.cms import sign, software_signer
from pki.cms_envelope import encrypt, software_agreement

COUNT = 1500


def _document(n: int) -> bytes:
    start = dt.datetime(2026, 11, 25, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    values = tuple(Value("1.5", "kW", start + dt.timedelta(minutes=15 * i), start + dt.timedelta(minutes=15 * (i + 1)),
                         Decimal("0.412") + i) for i in range(4)) + tuple(
        Value("1.8.0", "kWh", start + dt.timedelta(minutes=i), start + dt.timedelta(minutes=i + 1),
              Decimal("4417.218") + i) for i in range(12))
    return build(Delivery(delivery_id=uuid.uuid4().hex, gateway="gw-0001", subject="37155794", identity="meter_id",
                          party="dso", profile="dso-taf7", resolution=3, window_from=start,
                          window_to=start + dt.timedelta(hours=1), created_at=start, values=values))


def measure(profile: str, folder: Path) -> dict[str, float]:
    init_ca(folder / "ca", passphrase=b"correct horse battery", profile=profile)  # type: ignore[arg-type]
    ca = CertificateAuthority(folder / "ca", b"correct horse battery")
    sig, sig_key = ca.issue_generated("gateway-sig", "gw-0001")
    enc, enc_key = ca.issue_generated("party-enc", "dso.example")
    signer = software_signer(sig_key)
    sealed = [encrypt(sign(_document(n), sig, signer), enc, aead=True) for n in range(COUNT)]
    store = HeadendStore(f"sqlite:///{folder}/ingest.db")
    ctx = IngestContext(party="dso", root=ca.cert, crl=ca.crl(), enc_cert=enc, agree=software_agreement(enc_key),
                        peer_cn=lambda ip: "gw-0001", store=store)
    server = serve(ctx, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    started = time.perf_counter()
    for payload in sealed:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/v1/deliveries", body=payload, headers={"Content-Type": "application/cms"})
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status != 200:
            raise SystemExit(f"ingest refused a delivery: HTTP {response.status}")
    elapsed = time.perf_counter() - started
    server.shutdown()
    stored = store.count()
    store.close()
    return {"per_s": round(COUNT / elapsed, 1), "stored": stored, "bytes": round(sum(map(len, sealed)) / COUNT)}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="smgw-bench-headend-") as tmp:
        bsi = measure("bsi", Path(tmp) / "bsi")
        modern = measure("modern", Path(tmp) / "modern")
    print(json.dumps({
        "benchmark": "headend", "deliveries": COUNT, "delivery_bytes": bsi["bytes"],
        "deliveries_per_s_sqlite": bsi["per_s"], "deliveries_per_s_sqlite_modern": modern["per_s"],
        "deliveries_per_s_postgresql": None, "stored_each_once": bsi["stored"] == COUNT and modern["stored"] == COUNT,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "client_and_server": "one process"},
    }))


if __name__ == "__main__":
    main()
