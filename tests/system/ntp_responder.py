"""A stand-in time source for the clock-check test: answers SNTP on UDP 123 with this host's
time plus an offset read from a file at each request (so the test can move it).

Usage: ntp_responder.py ADDRESS OFFSET_FILE. Prints "listening" once bound.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path

NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01


def ntp_time(t: float) -> bytes:
    seconds = int(t) + NTP_EPOCH
    return struct.pack("!II", seconds, int((t % 1) * 2**32))


def main() -> None:
    address, offset_file = sys.argv[1], Path(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 123))
    print("listening", flush=True)
    while True:
        request, peer = sock.recvfrom(512)
        received = time.time() + float(offset_file.read_text())
        if len(request) < 48:
            continue
        header = struct.pack("!BBbbII4s", (0 << 6) | (4 << 3) | 4, 1, 6, -20, 0, 0, b"TEST")
        sent = time.time() + float(offset_file.read_text())
        sock.sendto(header + ntp_time(received) + request[40:48] + ntp_time(received) + ntp_time(sent), peer)


if __name__ == "__main__":
    main()
