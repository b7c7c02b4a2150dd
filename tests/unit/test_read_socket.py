"""The headend's read API on a Unix socket (``[ingest] read_socket``): served over it, mode
0660 whatever the umask, a socket left by a killed headend replaced, a live one or any other
file refused, and only its own socket removed when it closes."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import stat
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from headend.document import Delivery, Value
from headend.ingest import ReadSocket, serve_reads_unix
from headend.store import HeadendStore

START = dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("headend")
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self._path))


def _get(path: Path, url: str) -> tuple[int, object]:
    connection = _UnixConnection(path)
    try:
        connection.request("GET", url)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_reads_over_a_unix_socket_only_its_mode_lets_in(tmp_path: Path) -> None:
    store = HeadendStore(f"sqlite:///{tmp_path}/ingest.db")
    store.store(Delivery("a" * 32, "gw-0001", "37155794", "meter_id", "dso", "dso-rt", 3, START,
                         START + dt.timedelta(minutes=15), START,
                         (Value("1.8.0", "kWh", START, START + dt.timedelta(minutes=15), Decimal("4417.218")),)),
                "2026-11-25T08:16:00Z")
    path = tmp_path / "read.sock"
    stale = socket.socket(socket.AF_UNIX)  # a socket left by a headend that was killed
    stale.bind(str(path))
    stale.close()
    old = os.umask(0)  # the mode does not depend on the umask the headend was started with
    try:
        listener = ReadSocket.listen(path)
    finally:
        os.umask(old)
    assert os.umask(old) == old  # and the umask is the caller's again
    server = serve_reads_unix(store, listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o660
        status, values = _get(path, "/v1/meters/37155794/readings?from=2026-11-25T08:00:00Z")
        assert status == 200 and [v["value"] for v in values] == ["4417.218"]  # type: ignore[attr-defined]
        status, one = _get(path, "/v1/deliveries/" + "a" * 32)
        assert status == 200 and one["gateway"] == "gw-0001"  # type: ignore[index]
        assert _get(path, "/v1/meters/37155794/readings?from=1%27%20OR%201=1")[0] == 400
    finally:
        server.shutdown()
        server.server_close()  # a worker's server: its handle only, the file stays for the others
    assert stat.S_ISSOCK(path.stat().st_mode)
    listener.close()
    assert not path.exists()  # closed by its owner: nothing left to connect to, nothing stale
    path.write_text("not a socket")
    with pytest.raises(OSError):
        ReadSocket.listen(path)
    assert path.read_text() == "not a socket"
    live = socket.socket(socket.AF_UNIX)  # another headend serving the same path: never taken over
    live.bind(str(tmp_path / "live.sock"))
    live.listen(1)
    with pytest.raises(OSError, match="another process serves this socket"):
        ReadSocket.listen(tmp_path / "live.sock")
    assert stat.S_ISSOCK((tmp_path / "live.sock").stat().st_mode)
    live.close()
    replaced = ReadSocket.listen(tmp_path / "other.sock")
    os.unlink(replaced.path)
    (tmp_path / "other.sock").write_text("someone else's since")
    replaced.close()  # removes only the socket it made
    assert (tmp_path / "other.sock").read_text() == "someone else's since"
    store.close()
