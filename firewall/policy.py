"""The zone policy: which traffic the gateway lets in and out, as plain data.

Zones are interface names; the policy lists only what is allowed (default drop on input,
forward and output) plus the established/related return traffic. Backends (nftables,
iptables) render exactly this matrix, so a probe test of one proves the model for both.
Every field is checked on construction: nothing reaches a ruleset that was not a known
protocol, a port number, an IPv4 address or an interface name of a strict pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from firewall.errors import FirewallError

Direction = Literal["in", "out"]
Proto = Literal["tcp", "udp", "icmp"]
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
_ZONE = re.compile(r"[a-z][a-z0-9_]{0,15}")


def check_ifname(name: str) -> str:
    if not _IFNAME.fullmatch(name):
        raise FirewallError(f"interface name {name!r}: 1-15 of letters, digits, _ . - starting with a letter")
    return name


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    interface: str

    def __post_init__(self) -> None:
        if not _ZONE.fullmatch(self.name):
            raise FirewallError(f"zone name {self.name!r}: lowercase letters, digits, _")
        check_ifname(self.interface)


@dataclass(frozen=True, slots=True)
class Allow:
    """One allowed flow: ``in`` is to the gateway from the zone, ``out`` from the gateway into it."""

    direction: Direction
    zone: str
    proto: Proto
    port: int | None = None
    peer: IPv4Address | None = None  # the remote address (out) or source (in); None: any
    rate_per_s: int | None = None  # new flows per second; None: unlimited
    why: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("in", "out") or self.proto not in ("tcp", "udp", "icmp"):
            raise FirewallError(f"rule {self}: unknown direction or protocol")
        if self.proto == "icmp" and self.port is not None:
            raise FirewallError("icmp has no port")
        if self.proto != "icmp" and (self.port is None or not 1 <= self.port <= 65535):
            raise FirewallError(f"{self.proto} rule needs a port 1-65535, got {self.port}")
        if self.rate_per_s is not None and not 1 <= self.rate_per_s <= 100000:
            raise FirewallError(f"rate {self.rate_per_s}/s out of range")
        if self.peer is not None and not isinstance(self.peer, IPv4Address):
            raise FirewallError(f"peer {self.peer!r} is not an IPv4 address")
        if not re.fullmatch(r"[A-Za-z0-9 ,.:/_-]{0,64}", self.why):
            raise FirewallError(f"rule comment {self.why!r}: letters, digits and , . : / _ - only")


@dataclass(frozen=True, slots=True)
class Policy:
    zones: tuple[Zone, ...]
    allows: tuple[Allow, ...]
    log_rate_per_min: int = 10
    table: str = "smgw"

    def __post_init__(self) -> None:
        names = [z.name for z in self.zones]
        interfaces = [z.interface for z in self.zones]
        if len(set(names)) != len(names) or len(set(interfaces)) != len(interfaces):
            raise FirewallError("zones and their interfaces must be unique")
        for allow in self.allows:
            if allow.zone not in names:
                raise FirewallError(f"rule for unknown zone {allow.zone!r}")
        if not 1 <= self.log_rate_per_min <= 6000:
            raise FirewallError("log rate out of range")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,15}", self.table):
            raise FirewallError(f"table name {self.table!r}")

    def interface(self, zone: str) -> str:
        return next(z.interface for z in self.zones if z.name == zone)
