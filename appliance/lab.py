"""A testbed of network namespaces: the gateway with its WAN and HAN links, a WAN segment
with the market parties' and the GWA's hosts, and a HAN client (tests and the demo).

Built with pyroute2 (no ``ip`` output is parsed); processes run inside a namespace through
``ip netns exec``. Every namespace carries the lab's prefix, so ``close()`` (or a later
``Lab.sweep(prefix)``) removes exactly what this lab made.

    han 192.168.7.10 ── han0 [gw] wan0 192.0.2.2 ── br0 [wan 192.0.2.1] ── 192.0.2.1x [party*, gwa]
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from typing import IO, Self

from pyroute2 import IPRoute, NetNS, netns  # type: ignore[import-untyped]

WAN_PREFIX = 24
GW_WAN = IPv4Interface("192.0.2.2/24")
GW_HAN = IPv4Interface("192.168.7.1/24")
HAN_CLIENT = IPv4Interface("192.168.7.10/24")
WAN_HOST = IPv4Interface("192.0.2.1/24")


@dataclass
class Lab:
    prefix: str
    hosts: dict[str, IPv4Interface] = field(default_factory=dict)  # extra WAN hosts: name -> address
    made: list[str] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    # ------------------------------------------------------------------ build
    def build(self) -> Self:
        for role in ("gw", "wan", "han", *self.hosts):
            name = self.ns(role)
            netns.create(name)
            self.made.append(name)
            with NetNS(name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        self._veth("gw", "wan0", GW_WAN, "wan", f"{self.prefix[:6]}g", None)
        self._veth("gw", "han0", GW_HAN, "han", "eth0", HAN_CLIENT)
        with NetNS(self.ns("wan")) as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
            bridge = ipr.link_lookup(ifname="br0")[0]
            ipr.link("set", index=bridge, state="up")
            ipr.addr("add", index=bridge, address=str(WAN_HOST.ip), prefixlen=WAN_PREFIX)
            ipr.link("set", index=ipr.link_lookup(ifname=f"{self.prefix[:6]}g")[0], master=bridge, state="up")
        # routes that would carry HAN<->WAN traffic if the gateway ever forwarded: the
        # isolation tests then prove the gateway does not, rather than that no route exists
        with NetNS(self.ns("han")) as ipr:
            ipr.route("add", dst="0.0.0.0/0", gateway=str(GW_HAN.ip))
        with NetNS(self.ns("wan")) as ipr:
            ipr.route("add", dst=str(GW_HAN.network), gateway=str(GW_WAN.ip))
        for i, (role, address) in enumerate(self.hosts.items()):
            self._veth(role, "eth0", address, "wan", f"{self.prefix[:6]}{i}", None)
            with NetNS(self.ns("wan")) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=f"{self.prefix[:6]}{i}")[0],
                         master=ipr.link_lookup(ifname="br0")[0], state="up")
        return self

    def _veth(self, left: str, left_if: str, left_addr: IPv4Interface | None, right: str, right_if: str,
              right_addr: IPv4Interface | None) -> None:
        tmp_left, tmp_right = f"v{os.getpid() % 100000}a{len(self.made)}", f"v{os.getpid() % 100000}b{len(self.made)}"
        self.made.append("")  # only to make the temporary names unique
        with IPRoute() as ipr:
            ipr.link("add", ifname=tmp_left, kind="veth", peer=tmp_right)
            ipr.link("set", index=ipr.link_lookup(ifname=tmp_left)[0], net_ns_fd=self.ns(left))
            ipr.link("set", index=ipr.link_lookup(ifname=tmp_right)[0], net_ns_fd=self.ns(right))
        for ns_role, tmp, final, address in ((left, tmp_left, left_if, left_addr), (right, tmp_right, right_if,
                                                                                      right_addr)):
            with NetNS(self.ns(ns_role)) as ipr:
                index = ipr.link_lookup(ifname=tmp)[0]
                ipr.link("set", index=index, ifname=final)
                if address is not None:
                    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
                ipr.link("set", index=index, state="up")

    # ------------------------------------------------------------------ use
    def run(self, role: str, *argv: str, timeout: float = 60, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns(role), *argv], capture_output=True, text=True,
                              check=False, timeout=timeout, env=env, input=input)

    def popen(self, role: str, *argv: str, env: dict[str, str] | None = None,
              stdout: int | IO[bytes] | None = subprocess.DEVNULL,
              stderr: int | IO[bytes] | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv], env=env, stdout=stdout,
                                stderr=stderr)

    def close(self) -> None:
        for name in self.made:
            if name:
                netns.remove(name)
        self.made.clear()

    @staticmethod
    def sweep(prefix: str) -> list[str]:
        """Remove every namespace whose name starts with ``prefix-`` (leftovers of a crash)."""
        gone = [name for name in netns.listnetns() if name.startswith(f"{prefix}-")]
        for name in gone:
            netns.remove(name)
        return gone

    def __enter__(self) -> Self:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()
