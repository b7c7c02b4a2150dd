"""Reader benchmark: parser speed against the ``iec62056-21`` package, CPU per readout.

Prints one JSON object. Both parsers get the same data messages (``STX ... ! CR LF ETX
BCC``, built from every telegram of ``tests/corpus``) in the same run; the figure is the
best of several rounds (least disturbed by the machine). ``cpu_ms_per_readout`` runs
complete readouts against the meter simulator in another process and counts only this
process's CPU time, so the wire time (and the simulator) is excluded.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import reduce
from operator import xor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reader.protocol import SessionOptions
from reader.telegram import parse_data_message
from reader.transport import read_meter


def data_message(telegram: bytes) -> bytes:
    """The telegram's data part as a mode C data message with CR LF lines and a fresh BCC."""
    raw = bytes(b & 0x7F for b in telegram)
    body = raw[raw.index(b"\n") + 1:]
    if b"\x02" in body:
        body = body[body.index(b"\x02") + 1: body.index(b"\x03")]
    body = body[: body.rindex(b"!")]
    lines = [ln.rstrip(b"\r") for ln in body.split(b"\n") if ln.strip(b"\r")]
    block = b"\r\n".join(lines) + b"\r\n!\r\n\x03"
    return b"\x02" + block + bytes((reduce(xor, block, 0) & 0x7F,))


def corpus() -> list[tuple[str, bytes]]:
    files = sorted((ROOT / "tests" / "corpus").glob("*.tlg"))
    return [(f.name, data_message(f.read_bytes())) for f in files]


def best_us_per_item(func: object, items: list[bytes], rounds: int = 7, loops: int = 200) -> float:
    call = func  # type: ignore[assignment]
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(loops):
            for item in items:
                call(item)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - start) / (loops * len(items)))
    return best * 1e6


def cpu_per_readout(readouts: int = 20) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="smgw-bench-") as tmp:
        link = Path(tmp) / "meter"
        sim = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "meter-sim", "--link", str(link), "--scenario", "normal"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while not link.exists():
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise SystemExit("meter simulator did not start")
                time.sleep(0.05)
            options = SessionOptions(max_baud=9600)
            read_meter(str(link), options, timeout=10)  # warm-up: imports, caches
            cpu0, wall0 = time.process_time(), time.perf_counter()
            lines = 0
            for _ in range(readouts):
                lines += len(read_meter(str(link), options, timeout=10).readings)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    return {
        "cpu_ms_per_readout": round(cpu / readouts * 1e3, 3),
        "wall_ms_per_readout": round(wall / readouts * 1e3, 1),
        "readouts": readouts,
        "readings_per_readout": lines // readouts,
    }


def main() -> None:
    from iec62056_21.messages import ReadoutDataMessage

    items = corpus()
    both = []
    for name, msg in items:
        try:
            parse_data_message(msg)
            ReadoutDataMessage.from_bytes(msg)
        except Exception as exc:  # noqa: BLE001 - a telegram one side cannot parse is reported, not timed
            print(f"bench: skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        both.append(msg)
    if not both:
        raise SystemExit("bench: no corpus telegram both parsers accept")
    ours = best_us_per_item(parse_data_message, both)
    peer = best_us_per_item(ReadoutDataMessage.from_bytes, both)
    result: dict[str, object] = {
        "benchmark": "reader",
        "telegrams": len(both),
        "corpus_files": len(items),
        "mean_telegram_bytes": round(sum(map(len, both)) / len(both)),
        "parse_us_per_telegram": round(ours, 2),
        "peer": "iec62056-21 0.0.2 (PyPI)",
        "peer_parse_us_per_telegram": round(peer, 2),
        "speedup_vs_peer": round(peer / ours, 2),
        "note": "both check the BCC; ours also builds Decimal values and UTC timestamps, the peer keeps strings",
    }
    result.update(cpu_per_readout())
    result["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
