"""Reachability probes between namespaces: real packets, no rule reading.

``python probe.py listen --tcp 443,8443 --udp 7500`` serves until killed (TCP: accept and
write ``ok``; UDP: echo). ``python probe.py tcp|udp|icmp ADDR [PORT]`` exits 0 when the
peer answered within the timeout, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import struct
import sys
import time


def listen(tcp: list[int], udp: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in tcp:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(16)
        sel.register(s, selectors.EVENT_READ, "tcp")
    for port in udp:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        sel.register(s, selectors.EVENT_READ, "udp")
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "tcp":
                conn, _ = sock.accept()
                conn.sendall(b"ok\n")
                conn.close()
            else:
                data, peer = sock.recvfrom(2048)
                sock.sendto(data, peer)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def probe(kind: str, address: str, port: int, timeout: float) -> bool:
    try:
        if kind == "tcp":
            with socket.create_connection((address, port), timeout=timeout) as s:
                return s.recv(3) == b"ok\n"
        if kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(b"probe", (address, port))
                return s.recvfrom(64)[0] == b"probe"
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            ident = os.getpid() & 0xFFFF
            header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + b"smgw"), ident, 1) + b"smgw"
            s.settimeout(timeout)
            s.sendto(packet, (address, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                reply, _ = s.recvfrom(1024)
                icmp = reply[(reply[0] & 0x0F) * 4:]
                if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                    return True
            return False
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["listen", "tcp", "udp", "icmp"])
    parser.add_argument("address", nargs="?")
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--tcp", default="")
    parser.add_argument("--udp", default="")
    parser.add_argument("--timeout", type=float, default=0.7)
    args = parser.parse_args()
    if args.kind == "listen":
        listen([int(p) for p in args.tcp.split(",") if p], [int(p) for p in args.udp.split(",") if p])
    sys.exit(0 if probe(args.kind, args.address, args.port, args.timeout) else 1)


if __name__ == "__main__":
    main()
