"""The party's side of a tunnel keeps its host to itself: through its tunnel a gateway reaches
the ingest's port on the server's tunnel address and nothing else of the host, with a few
connections at a time; and the ingest is reached from inside the tunnels only (ISSUE 6).

Linux accepts a packet for any local address on any interface, and OpenVPN checks only the
sender's tunnel address, so a gateway that is not what it should be (its own firewall gone, a
route of its own into the tunnel) could otherwise reach every service of the party's host: its
ssh, its database, a read API on a LAN address. The rendered ``nftables.conf`` of the headend
(loaded before its tunnel server starts) is what stops that; the test shows the same probes
getting through without it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from appliance.lab_world import start_party
from tests.system.conftest import SMGW
from tests.system.testbed import JsonLines, make_testbed

TUNNEL_ADDRESS = "10.81.0.1"  # the dso server's own tunnel address (lab_world's headend config)
PARTY_WAN = "192.0.2.11"  # the dso host's WAN address
BACK_OFFICE = "172.16.5.1"  # another address of the party's host, as a back-office LAN would give it
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()"
#: opens up to N connections and holds them; prints how many the other side accepted
HOLD = """
import socket, sys
held = []
for _ in range(int(sys.argv[3])):
    try:
        held.append(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2))
    except OSError:
        pass
print(len(held))
"""


def test_a_gateway_reaches_the_ingest_on_the_party_host_and_nothing_else(tmp_path: Path) -> None:
    with make_testbed(tmp_path, "modern") as bed:
        applied = bed.smgw("gw", "apply", "--config", str(bed.config))
        assert applied.returncode == 0, applied.stderr
        procs = start_party(bed.lab, bed.root, "dso", bed.profile, bed.env)
        assert bed.lab.run("dso", "ip", "addr", "add", f"{BACK_OFFICE}/32", "dev", "lo").returncode == 0
        services = bed.listen("dso", tcp=[22, 5432])  # the host's other services, on every address
        tunnels = JsonLines(bed, "tunnels", "run", seconds=120)
        try:
            assert tunnels.wait_for(lambda line: line["name"] == "dso" and line["state"] == "CONNECTED", 30)
            # a gateway gone bad: its own firewall removed, and a route of its own into the tunnel
            assert bed.lab.run("gw", "nft", "delete", "table", "inet", "smgw").returncode == 0
            routed = bed.lab.run("gw", "ip", "route", "add", f"{BACK_OFFICE}/32", "dev", "tun-dso")
            assert routed.returncode == 0, routed.stderr

            def reach(address: str, port: int) -> bool:  # the listeners answer "ok"; a blocked probe times out
                return bed.probe("gw", "tcp", address, port, timeout=2)

            def ingest_answers(role: str = "gw") -> bool:  # (the ingest answers HTTP, not "ok")
                return bed.lab.run(role, SMGW[0], "-c", CONNECT, TUNNEL_ADDRESS, "8443", env=bed.env).returncode == 0

            def from_wan() -> bool:
                return ingest_answers("wan")

            deadline = time.monotonic() + 30  # (it may still be starting)
            while not ingest_answers() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert ingest_answers(), "the ingest must stay reachable through the tunnel"
            # one gateway holds at most connections_per_gateway (8) of the ingest's connections at once
            held = bed.lab.run("gw", SMGW[0], "-c", HOLD, TUNNEL_ADDRESS, "8443", "11", env=bed.env)
            assert held.stdout.split() == ["8"], held.stdout + held.stderr
            assert ingest_answers(), "the limit counts open connections: they are closed now"
            # the tunnel address is not reached from outside the tunnel: from the WAN, routed to the party's host
            assert bed.lab.run("wan", "ip", "route", "add", f"{TUNNEL_ADDRESS}/32", "via", PARTY_WAN).returncode == 0
            assert not from_wan(), "the ingest answered from the WAN"
            for address, port in ((TUNNEL_ADDRESS, 22), (TUNNEL_ADDRESS, 5432), (BACK_OFFICE, 22), (BACK_OFFICE, 5432)):
                assert not reach(address, port), f"{address}:{port} of the party's host reached through the tunnel"

            # the same probes without the party's tunnel firewall: what it is there for
            assert bed.lab.run("dso", "nft", "delete", "table", "inet", "smgw_tun_dso").returncode == 0
            assert reach(TUNNEL_ADDRESS, 22) and reach(BACK_OFFICE, 5432) and from_wan()
            held = bed.lab.run("gw", SMGW[0], "-c", HOLD, TUNNEL_ADDRESS, "8443", "11", env=bed.env)
            assert held.stdout.split() == ["11"], held.stdout + held.stderr
        finally:
            tunnels.stop()
            services.terminate()
            for proc in procs:
                proc.terminate()
            for proc in [services, *procs]:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
