"""The ingest listens on its tunnel's address before OpenVPN has made that address: the two
start side by side (two units, or two lab processes), and an ingest that lost the race used to
exit with EADDRNOTAVAIL, leaving a connected tunnel with nobody to deliver to."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from appliance.lab_world import build_world, headend_toml
from tests.system.conftest import ROOT, SMGW, require_root

CHILD = r"""
import http.client, subprocess, sys, threading
from headend.ingest_server import serve
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


FETCH_UNIX = r"""
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])
c = C("headend"); c.request("GET", sys.argv[2]); r = c.getresponse(); print(r.status, json.dumps(json.loads(r.read())))
"""


def test_read_api_on_a_unix_socket_served_by_all_workers(tmp_path: Path) -> None:
    """``smgw headend run`` with ``[ingest] read_socket`` and two workers: the read API answers
    on the one socket (mode 0660), not on 127.0.0.1:8444, and the socket goes when it stops."""
    require_root()
    env = build_world(tmp_path, "modern")
    config = headend_toml(tmp_path, "dso", "modern")
    folder = Path(tempfile.mkdtemp(prefix="smgw-reads-"))  # traversable (pytest's tmp is root's alone)
    folder.chmod(0o711)
    sock = folder / "read.sock"
    config.write_text(config.read_text().replace("[ingest]\n", f'[ingest]\nread_socket = "{sock}"\nworkers = 2\n'))
    ns = f"rdsk{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *SMGW, "headend", "run", "--config", str(config),
                                 "--listen", "127.0.0.1", "--seconds", "10"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        listening = json.loads(proc.stdout.readline() or "{}")
        assert listening.get("read_api") == f"unix:{sock}", (listening, proc.stderr.read() if proc.poll() else "")
        assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o660
        for _ in range(3):  # the one socket, served by both workers
            got = subprocess.run([sys.executable, "-c", FETCH_UNIX, str(sock), "/v1/meters/37155794/readings"],
                                 check=False, capture_output=True, text=True, timeout=20, cwd=ROOT)
            assert got.stdout.split(" ", 1) == ["200", "[]\n"], got.stdout + got.stderr
        # the file's mode decides: another user is refused, the same user in the socket's group reads
        for groups, answer in (("--clear-groups", "PermissionError"), (f"--groups={sock.stat().st_gid}", "200 ")):
            other = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", groups, sys.executable, "-c",
                                    FETCH_UNIX, str(sock), "/v1/meters/37155794/readings"],
                                   check=False, capture_output=True, text=True, timeout=20, cwd=ROOT)
            assert answer in other.stdout + other.stderr, other.stdout + other.stderr
        tcp = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                              "import socket; socket.create_connection(('127.0.0.1', 8444), timeout=2)"],
                             check=False, capture_output=True, text=True, timeout=20)
        assert "ConnectionRefusedError" in tcp.stderr, tcp.stderr  # no read API on loopback TCP
        proc.wait(timeout=60)
        assert not sock.exists()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(folder, ignore_errors=True)
