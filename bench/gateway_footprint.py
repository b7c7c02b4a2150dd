"""Gateway footprint: memory and CPU of the whole gateway stack while it works.

The netns testbed of the system tests (root, openvpn, SoftHSM2): a simulated MT831 read
every 30 s, two parties with one-minute send windows, both tunnels up, the GateWatcher
listening; ``smgw gateway run`` supervising it all as on a board without systemd. Samples
every 2 s for ``--seconds`` (default 300):

- ``core_rss_mb`` (max) and ``core_cpu_percent`` (mean, of one core) for the core process,
  and ``core_rss_mb_by_mapping_at_peak``: that RSS split into anonymous memory and the files
  (libraries) mapped;
- ``stack_rss_mb`` and ``stack_pss_mb`` (max of the sum) for every process of the stack: the
  core, the tunnel supervisor, the GateWatcher, the HAN portal and their openvpn processes
  (in the ``in-process`` shape the tunnels and the GateWatcher are threads of the core; the
  portal is a process of its own in both shapes). PSS from ``/proc/PID/smaps_rollup`` shares
  each common page (Python, libcrypto, SoftHSM2) out among the processes that map it: the fair
  sum.

Prints one JSON object. Usage (root): python bench/gateway_footprint.py [--seconds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.lab_world import LAB_PROFILES
from appliance.tunnel_states import read_states
from tests.system.conftest import SMGW
from tests.system.test_deliveries import _start_headends
from tests.system.testbed import make_testbed

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            pass
    return out


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += _children(current)
    return found


def _rss_pss_kb(pid: int) -> tuple[int, int]:
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


def _rss_by_mapping_mb(pid: int) -> dict[str, float]:
    """Where the core's resident pages lie: anonymous memory (Python's objects, the C heaps)
    against each file mapped (libraries: shared with every process that maps them, and
    clean, so the kernel can take them back under pressure). The biggest few, in MB."""
    sizes: dict[str, int] = {}
    name = "anonymous"
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
                path = fields[5] if len(fields) > 5 else ""
                name = "anonymous" if not path.startswith("/") else Path(path).name
            elif fields[0] == "Rss:":
                sizes[name] = sizes.get(name, 0) + int(fields[1])
    except OSError:
        return {}
    top = sorted(sizes.items(), key=lambda item: -item[1])
    out = {k: round(v / 1024, 1) for k, v in top[:8]}
    out["other files"] = round(sum(v for _, v in top[8:]) / 1024, 1)
    return out


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in argv if a in (b"gateway", b"tunnels", b"gatewatcher", b"portal")]
    return f"{pid} {words[0] if words else Path(argv[0].decode(errors='replace')).name}"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _meter_sim(folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    link = folder / "meter"
    proc = subprocess.Popen([*SMGW, "meter-sim", "--link", str(link), "--scenario", "normal"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not link.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, link


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--shape", choices=["in-process", "processes", "both"], default="both",
                        help="the parts as threads of the core, as child processes, or one run of each")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, openvpn)")
    with tempfile.TemporaryDirectory(prefix="smgw-bench-footprint-") as tmp:
        folder = Path(tmp)
        sim, link = _meter_sim(folder)
        try:
            (folder / "bed").mkdir()
            with make_testbed(folder / "bed", "bsi") as bed:
                root = bed.root
                bed.config.write_text(f'[meter]\nport = "{link}"\nid = "ISK-BENCH-0001"\npoll_interval = 30\n'
                                      'timeout = 10\nattempts = 2\n' + bed.config.read_text()
                                      + '\n[firewall]\nportal_port = 443\n'
                                      + f'[portal]\nstate_dir = "{root}/portal"\ntls_cert = "{root}/portal/portal.crt"\n'
                                        f'tls_key = "{root}/portal/portal.key"\n'
                                        '[[portal.consumers]]\nname = "bench"\nmeters = ["ISK-BENCH-0001"]\n'
                                        'setup_code = "BENCH-0123456789AB"\n'
                                      + LAB_PROFILES)
                applied = bed.smgw("gw", "apply", "--config", str(bed.config))
                if applied.returncode != 0:
                    raise SystemExit(f"apply failed: {applied.stderr}")
                servers = _start_headends(bed)
                results = {}
                try:
                    for shape in (["in-process", "processes"] if args.shape == "both" else [args.shape]):
                        flags = ["--in-process"] if shape == "in-process" else []
                        shutil.rmtree(bed.root / "run/tunnels", ignore_errors=True)
                        core = bed.lab.popen("gw", *SMGW, "gateway", "run", *flags, "--config", str(bed.config),
                                             env=bed.env)
                        try:
                            results[shape] = _sample(core.pid, bed.root / "run", args.seconds,
                                                     root / "portal/portal.crt")
                        finally:
                            core.terminate()
                            core.wait(timeout=30)
                finally:
                    for proc in servers:
                        proc.terminate()
                        proc.wait(timeout=10)
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    first = next(iter(results))
    print(json.dumps({"benchmark": "gateway_footprint", "shape": first, **results[first],
                      "other_shapes": {k: v for k, v in results.items() if k != first}, "targets": {
        "core_rss_mb": 50, "core_cpu_percent": 1.0, "stack_pss_mb": 80},
        "setup": "readout every 30 s, two parties sending every 60 s (bsi), the HAN portal idle, admin tunnel closed",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}}))


def _sample(core: int, run: Path, seconds: float, portal_cert: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    # measure the steady state: both tunnels up, and the portal past its first start, whose
    # certificate child (a fork with cryptography loaded, ~19 MB PSS for a moment, once in a
    # gateway's life: every bench run is a fresh install) would otherwise count as a fifth process
    while time.monotonic() < deadline:
        try:
            if sum(t["state"] == "CONNECTED" for t in read_states(run)) == 2 and portal_cert.exists():
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    else:
        raise SystemExit("tunnels did not connect, or the portal made no certificate")
    time.sleep(1)  # the child has written the pair; let it exit
    cpu0, t0 = _cpu_s(core), time.monotonic()
    core_rss = stack_rss = stack_pss = 0
    core_mappings: dict[str, float] = {}
    processes = 0
    per_process: dict[str, float] = {}
    at_peak: dict[str, float] = {}
    seen: dict[str, int] = {}  # a process not there at every sample (a check's nft, a certificate child): how often
    samples = 0
    while time.monotonic() - t0 < seconds:
        pids = _tree(core)
        sizes = [_rss_pss_kb(pid) for pid in pids]
        names = [_name(pid) for pid in pids]
        samples += 1
        for name in {n.split(" ", 1)[-1] for n in names}:  # by command: a transient one has a new pid each time
            seen[name] = seen.get(name, 0) + 1
        rss_now = _rss_pss_kb(core)[0]
        if rss_now > core_rss:
            core_rss, core_mappings = rss_now, _rss_by_mapping_mb(core)
        stack_rss = max(stack_rss, sum(r for r, _ in sizes))
        per_process = {name: round(pss / 1024, 1) for name, (_, pss) in zip(names, sizes, strict=True)}
        total_pss = sum(p for _, p in sizes)
        if total_pss > stack_pss:
            stack_pss, at_peak = total_pss, per_process
        processes = max(processes, len(pids))
        time.sleep(2)
    elapsed = time.monotonic() - t0
    return {"seconds": round(elapsed), "core_rss_mb": round(core_rss / 1024, 1),
            "core_rss_mb_by_mapping_at_peak": core_mappings,
            "core_cpu_percent": round(100 * (_cpu_s(core) - cpu0) / elapsed, 2),
            "stack_rss_mb": round(stack_rss / 1024, 1), "stack_pss_mb": round(stack_pss / 1024, 1),
            "stack_processes": processes, "pss_mb_by_process": per_process, "pss_mb_by_process_at_peak": at_peak,
            "transient_processes": {name: f"{count} of {samples} samples" for name, count in seen.items()
                                    if count < samples}}


if __name__ == "__main__":
    main()
