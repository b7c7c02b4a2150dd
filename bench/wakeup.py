"""Wake-up benchmark (needs root, openvpn, nft, softhsm2).

Prints one JSON object: ``wakeup_to_connected_median_s`` / ``_p95_s`` (a signed WakeUp
sent to the gateway's wake-up port -> admin tunnel CONNECTED with the GWA, through the real
GateWatcher and supervisor, 20 runs, each closed by a BreakUp), and
``bad_datagrams_refused_per_s``: datagrams the GateWatcher disposes of per second under a
flood (verified and refused, or dropped by its token bucket), beside the verification-only
rates for garbage and for forged signatures (the worst case: a full ECDSA verification).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.system.test_gatewatcher import gwa_server  # the same testbed the tests use
from tests.system.testbed import make_testbed

RUNS = 20

_DRIVER = r"""
import datetime as dt, json, os, socket, statistics, sys, time
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from appliance import config as config_mod
from appliance.gatewatcher import ADMIN, GateWatcher, judge
from appliance.rendered import supervised
from appliance.store import Store
from appliance.tunnels import Supervisor
from headend.gwa import default_sequence
from pki.cms import software_signer
from pki.encoding import read_certificate, read_crl
from pki.token import read_pin
from pki.wakeup import encode, new_body

cfg = config_mod.load(Path(sys.argv[1]))
root_dir = Path(sys.argv[2])
runs = int(sys.argv[3])
sup = Supervisor(supervised(cfg, [ADMIN]), read_pin(cfg.token.pin_file))
cert = read_certificate(root_dir / "gwa-wakeup.crt")
signer = software_signer(serialization.load_pem_private_key((root_dir / "gwa-wakeup.key").read_bytes(), None))
root, crl = read_certificate(cfg.pki.root), read_crl(cfg.pki.crl)
target = (str(cfg.interfaces.wan.address.ip), cfg.wakeup.port)
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sequence = default_sequence()

def state():
    return sup.status()[0].state

with Store.open(cfg.store.path) as store:
    watcher = GateWatcher(cfg, store, sup, root=root, crl=crl)
    times = []
    for _ in range(runs):
        sequence += 1
        datagram = encode(new_body(cfg.gateway.id, "wakeup", sequence), cert, signer)
        t0 = time.perf_counter()
        out.sendto(datagram, target)
        while state() != "CONNECTED" and time.perf_counter() - t0 < 15:
            watcher.poll(0.002)
        times.append(time.perf_counter() - t0)
        sequence += 1
        out.sendto(encode(new_body(cfg.gateway.id, "breakup", sequence), cert, signer), target)
        t1 = time.perf_counter()
        while state() != "STOPPED" and time.perf_counter() - t1 < 10:
            watcher.poll(0.002)
    # verification cost: garbage, and a forged signature (flipped last byte of the DER signature)
    good = encode(new_body(cfg.gateway.id, "wakeup", sequence + 10), cert, signer)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    now = dt.datetime.now(dt.UTC)
    rates = {}
    for name, datagram in (("garbage", os.urandom(600)), ("forged_signature", forged)):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            judge(datagram, gateway_id=cfg.gateway.id, root=root, crl=crl, now=now, window_s=60, store=store)
            n += 1
        rates[name] = n / (time.perf_counter() - t0)
    # the watcher under a flood over the socket: refused + dropped per second
    before = watcher.counters.__dict__.copy()
    n = 5000
    t0 = time.perf_counter()
    for i in range(n):  # one in, one handled: the kernel buffer never overflows, nothing is lost unseen
        out.sendto(forged if i % 2 else os.urandom(300), target)
        watcher.poll(0)
    handled = sum(watcher.counters.__dict__.values()) - sum(before.values())
    flood_rate = handled / (time.perf_counter() - t0)
    watcher.close()
sup.stop()
print(json.dumps({"times": times, "verify_rates": rates, "flood_rate": flood_rate, "flood_handled": handled}))
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="smgw-bench-wake-") as tmp, make_testbed(Path(tmp), "bsi") as bed:
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        if applied.returncode != 0:
            raise SystemExit(applied.stderr)
        with gwa_server(bed):
            time.sleep(0.3)
            done = bed.lab.run("gw", sys.executable, "-c", _DRIVER, str(bed.config), str(bed.root), str(RUNS),
                               env=bed.env, timeout=600)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        got = json.loads(done.stdout)
    times = sorted(got["times"])
    print(json.dumps({
        "benchmark": "wakeup",
        "profile": "bsi",
        "runs": len(times),
        "wakeup_to_connected_median_s": round(statistics.median(times), 4),
        "wakeup_to_connected_p95_s": round(times[max(0, int(len(times) * 0.95) - 1)], 4),
        "bad_datagrams_refused_per_s": round(got["flood_rate"], 1),
        "verify_only_per_s": {k: round(v, 1) for k, v in got["verify_rates"].items()},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }))


if __name__ == "__main__":
    main()
