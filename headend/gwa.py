"""The GWA's side of the wake-up: sign a WakeUp/BreakUp and send it as one UDP datagram."""

from __future__ import annotations

import socket
import time
from ipaddress import IPv4Address

from cryptography import x509

from pki.cms import Signer
from pki.wakeup import Action, encode, new_body


def default_sequence() -> int:
    """Milliseconds since the epoch: grows with every message without a counter to keep."""
    return time.time_ns() // 1_000_000


def send(action: Action, *, gateway_id: str, address: IPv4Address, port: int, cert: x509.Certificate,
         signer: Signer, sequence: int | None = None) -> int:
    """Sign and send; returns the datagram's size. The address is an IP address, never a name."""
    datagram = encode(new_body(gateway_id, action, default_sequence() if sequence is None else sequence), cert,
                      signer)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, (str(address), port))
    return len(datagram)
