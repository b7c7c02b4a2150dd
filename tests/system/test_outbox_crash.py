"""kill -9 of the sending core, 20 times, and of the headend, several times: every delivery
arrives, none is stored twice (real processes, a real HTTP ingest on loopback)."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from appliance.processor import SealKit, process
from appliance.profiles import AccessProfile
from appliance.store import Store
from headend.store import HeadendStore
from pki.ca import CertificateAuthority, init_ca
from pki.cms import software_signer
from tests.pkihelpers import PASS
from tests.system.conftest import ROOT
from tests.unit.test_processor import START, _readout

SENDER = """
import datetime as dt, random, sys, time
from appliance.sender import Route, send_due
from pathlib import Path
from appliance.store import Store
store = Store.open(Path(sys.argv[1]))
route = Route("dso", "127.0.0.1", int(sys.argv[2]), None)
while store.pending_count("dso"):
    now = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # every retry is due at once: the test is about crashes
    send_due(store, route, now, random.Random(), limit=1, timeout=2)
    time.sleep(0.005)
"""

HEADEND = """
import sys, threading
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from headend.ingest import IngestContext
from headend.ingest_server import serve
from headend.store import HeadendStore
from pki.ca import CertificateAuthority
from pki.cms_envelope import software_agreement
from pki.encoding import read_certificate
folder = Path(sys.argv[1])
ca = CertificateAuthority(folder / "ca", b"correct horse battery")
key = serialization.load_pem_private_key((folder / "enc.key").read_bytes(), None)
store = HeadendStore(sys.argv[3])
ctx = IngestContext(party="dso", root=ca.cert, crl=ca.crl(), enc_cert=read_certificate(folder / "enc.crt"),
                    agree=software_agreement(key), peer_cn=lambda ip: "gw-0001", store=store)
server = serve(ctx, "127.0.0.1", int(sys.argv[2]))
print("ready", flush=True)
server.serve_forever()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_kill_9_of_sender_and_headend_loses_and_duplicates_nothing(
        tmp_path: Path, headend_database: Callable[[str], str]) -> None:
    from cryptography.hazmat.primitives import serialization

    assert PASS == b"correct horse battery"
    init_ca(tmp_path / "ca", passphrase=PASS, profile="modern")
    ca = CertificateAuthority(tmp_path / "ca", PASS)
    sig, sig_key = ca.issue_generated("gateway-sig", "gw-0001")
    enc, enc_key = ca.issue_generated("party-enc", "dso.example")
    (tmp_path / "enc.crt").write_bytes(enc.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "enc.key").write_bytes(enc_key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    db = tmp_path / "smgw.db"
    with Store.open(db) as store:
        for minute in range(16):
            store.save_readout(meter_id="37155794", readout=_readout(minute),
                               read_at=START + dt.timedelta(minutes=minute))
        kit = SealKit(gateway_id="gw-0001", sig_cert=sig, signer=software_signer(sig_key), enc_certs={"dso": enc},
                      pseudonym=lambda party, meter: "ps-x")
        profile = AccessProfile(name="dso-rt", party="dso", values=["1.8.0"], interval_s=60, send_every_s=60)
        process([profile], store, kit, "37155794", START - dt.timedelta(hours=3))
        total = process([profile], store, kit, "37155794", START + dt.timedelta(minutes=16))
    assert total >= 150
    port = _free_port()
    url = headend_database("dso")
    headend = _start(HEADEND, str(tmp_path), str(port), url)
    assert headend.stdout is not None and headend.stdout.readline().strip() == b"ready"
    rng = random.Random(7)
    kills = 0
    try:
        while kills < 20:  # kill -9 the sender mid-stream, 20 times
            sender = _start(SENDER, str(db), str(port))
            time.sleep(rng.uniform(0.05, 0.4))
            if sender.poll() is None:
                os.kill(sender.pid, signal.SIGKILL)
                kills += 1
            sender.wait()
            if kills in (5, 12):  # and the headend, twice
                os.kill(headend.pid, signal.SIGKILL)
                headend.wait()
                headend = _start(HEADEND, str(tmp_path), str(port), url)
                assert headend.stdout is not None and headend.stdout.readline().strip() == b"ready"
        sender = _start(SENDER, str(db), str(port))  # then let it finish
        assert sender.wait(timeout=240) == 0
    finally:
        headend.kill()
        headend.wait()
    with sqlite3.connect(db) as con:
        outbox = [d for (d,) in con.execute("SELECT delivery_id FROM outbox")]
        unacked = con.execute("SELECT count(*) FROM outbox WHERE acked_at IS NULL").fetchone()[0]
    store = HeadendStore(url)
    stored, values = store.delivery_ids(), store.value_count()
    store.close()
    assert unacked == 0
    assert sorted(stored) == sorted(outbox) and len(set(stored)) == len(stored) == total
    assert values == total  # one value per one-minute delivery: nothing stored twice inside either
