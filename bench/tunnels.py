"""Tunnel and firewall benchmark (needs root, openvpn, nft, softhsm2).

Prints one JSON object: ``ruleset_apply_ms`` (nft -c then nft -f of the rendered ruleset,
median of 20), ``connect_median_s_bsi`` / ``connect_median_s_modern`` (openvpn started by
the supervisor -> CONNECTED, token key, median of 10 each), ``openvpn_rss_mb`` (resident
memory of one connected client) split into ``openvpn_rss_file_mb`` (mapped pages of
openvpn and its libraries, shared with every other process using them) and
``openvpn_rss_anon_mb`` (its heap, stack and relocated library data), and with both
parties' tunnels up at once
``openvpn_pss_mb`` / ``openvpn_private_mb`` (RSS counts the shared libcrypto, libc and
SoftHSM2 pages in full for every process; private memory is what one more tunnel costs),
in a netns testbed that is removed afterwards.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.system.test_tunnels import party_servers
from tests.system.testbed import PARTIES, make_testbed

CYCLES = 10

_DRIVER = r"""
import json, os, statistics, sys, time
from pathlib import Path
from appliance import config as config_mod
from appliance.rendered import supervised
from appliance.tunnels import Supervisor
from firewall import nftables
from pki.token import read_pin

cfg = config_mod.load(Path(sys.argv[1]))
rendered = cfg.paths.rendered
ruleset = (rendered / "nftables.conf").read_text()
apply_ms = []
for _ in range(20):
    t0 = time.perf_counter()
    nftables.apply(ruleset, cfg.paths.rendered)
    apply_ms.append((time.perf_counter() - t0) * 1000)
connect, rss, split = [], None, {}
for _ in range(int(sys.argv[2])):
    sup = Supervisor(supervised(cfg, ["dso"]), read_pin(cfg.token.pin_file))
    sup.start()
    ok = sup.run_until(lambda: sup.status()[0].state == "CONNECTED", 15)
    if ok:
        connect.append(sup.status()[0].connect_seconds())
        for line in Path(f"/proc/{sup.pid('dso')}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith(("RssAnon:", "RssFile:")):
                split[line.split(":")[0]] = int(line.split()[1]) / 1024
    sup.stop()
# memory with every party's tunnel up at once: RSS counts shared library pages in full for
# each process; PSS shares them out; private dirty is what one more tunnel really costs
names = [p.name for p in cfg.parties]
sup = Supervisor(supervised(cfg, names), read_pin(cfg.token.pin_file))
sup.start()
memory = {}
if sup.run_until(lambda: all(s.state == "CONNECTED" for s in sup.status()), 15):
    for name in names:
        roll = {l.split()[0].rstrip(":"): int(l.split()[1]) for l in
                Path(f"/proc/{sup.pid(name)}/smaps_rollup").read_text().splitlines()[1:]}
        memory[name] = {"rss": roll["Rss"] / 1024, "pss": roll["Pss"] / 1024,
                          "private": (roll["Private_Clean"] + roll["Private_Dirty"]) / 1024}
sup.stop()
print(json.dumps({"apply_ms": statistics.median(apply_ms), "connect": connect, "rss_mb": rss, "rss_split": split,
                  "memory": memory}))
"""


def measure(profile: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="smgw-bench-tun-") as tmp, make_testbed(Path(tmp), profile) as bed:
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        if applied.returncode != 0:
            raise SystemExit(applied.stderr)
        with party_servers(bed):
            time.sleep(0.3)
            done = bed.lab.run("gw", sys.executable, "-c", _DRIVER, str(bed.config), str(CYCLES), env=bed.env,
                               timeout=600)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    bsi, modern = measure("bsi"), measure("modern")
    largest = max(bsi, modern, key=lambda r: cast(float, r["rss_mb"]))
    split = cast("dict[str, float]", largest["rss_split"])
    out = {
        "benchmark": "tunnels",
        "ruleset_apply_ms": round(statistics.median([bsi["apply_ms"], modern["apply_ms"]]), 2),  # type: ignore[list-item]
        "connect_median_s_bsi": round(statistics.median(bsi["connect"]), 4),  # type: ignore[arg-type]
        "connect_median_s_modern": round(statistics.median(modern["connect"]), 4),  # type: ignore[arg-type]
        "connects": {"bsi": len(bsi["connect"]), "modern": len(modern["connect"]), "tried_each": CYCLES},  # type: ignore[arg-type]
        "openvpn_rss_mb": round(cast(float, largest["rss_mb"]), 2),
        "openvpn_rss_file_mb": round(split["RssFile"], 2),
        "openvpn_rss_anon_mb": round(split["RssAnon"], 2),
        "openvpn_pss_mb": round(max(m["pss"] for r in (bsi, modern) for m in r["memory"].values()), 2),  # type: ignore[attr-defined]
        "openvpn_private_mb": round(max(m["private"] for r in (bsi, modern) for m in r["memory"].values()), 2),  # type: ignore[attr-defined]
        "parties_in_testbed": len(PARTIES),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
