"""The ingest listens on its tunnel's address before OpenVPN has made that address: the two
start side by side (two units, or two lab processes), and an ingest that lost the race used to
exit with EADDRNOTAVAIL, leaving a connected tunnel with nobody to deliver to."""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.system.conftest import ROOT, require_root

CHILD = r"""
import http.client, subprocess, sys, threading
from headend.ingest import serve
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # (with no interface up, any bind passes)
server = serve(None, "10.77.0.1", 8080)  # the address does not exist yet in this namespace
threading.Thread(target=server.serve_forever, daemon=True).start()
subprocess.run(["ip", "addr", "add", "10.77.0.1/32", "dev", "lo"], check=True)  # the tunnel comes up
con = http.client.HTTPConnection("10.77.0.1", 8080, timeout=5)
con.request("GET", "/v1/nothing-here")
print(con.getresponse().status)
server.shutdown()
"""


def test_ingest_binds_before_its_tunnel_address_exists() -> None:
    require_root()
    ns = f"bind{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CHILD], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "404", done.stdout  # the ingest answered (an unknown path)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
