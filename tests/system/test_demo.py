"""``smgw demo``: the whole system in namespaces, and nothing of it left behind (ISSUE 10)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.system.conftest import ROOT, SMGW
from tests.system.testbed import require_tools


def test_demo_runs_the_whole_system_and_leaves_nothing(tmp_path: Path) -> None:
    require_tools()
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split())
    done = subprocess.run([*SMGW, "demo", "--seconds", "90"], capture_output=True, text=True, timeout=400,
                          cwd=ROOT, check=False)
    out = done.stdout
    (tmp_path / "demo.out").write_text(out + done.stderr)
    assert done.returncode == 0, out[-2000:] + done.stderr[-2000:]
    # the portal answers the HAN and not the WAN
    assert re.search(r"from the HAN: 200; from the WAN: (?!200)", out), out
    # readings read, deliveries at both parties' headends through their tunnels
    last = [line for line in out.splitlines() if "readouts" in line and "deliveries" in line][-1]
    numbers = dict(re.findall(r"(readouts|dso|supplier)[ =]+(\d+)", last))
    assert int(numbers["readouts"]) >= 5 and int(numbers["dso"]) >= 1 and int(numbers["supplier"]) >= 1, last
    assert "dso=CONNECTED" in last and "supplier=CONNECTED" in last
    # the wake-up cycle: the admin tunnel and its API come, and go with the BreakUp
    assert "admin tunnel CONNECTED" in out and "GWA asks the admin API: gateway gw-0001" in out, out
    assert "admin tunnel closed" in out, out
    # and nothing left: namespaces, processes, files
    work = re.search(r"PKI and security module in (\S+)", out).group(1)  # type: ignore[union-attr]
    assert not Path(work).exists()
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split())
    assert not {n for n in after - before if n.startswith("demo")}, after - before
    left = subprocess.run(["pgrep", "-f", work], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", left.stdout
