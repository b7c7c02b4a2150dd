"""The party side of a tunnel: the OpenVPN server config a headend runs, rendered from
``templates/openvpn-server.conf.j2`` with the same quoting filters as the gateway's. It
lives here, not in ``headend/``, because the filters are the appliance's and ``headend``
may not import ``appliance`` (ARCHITECTURE §2)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Literal

from appliance.render import TEMPLATES, environment
from firewall import nftables
from headend.config import GwaConfig, HeadendConfig
from pki.names import check_name


@dataclass(frozen=True)
class ServerTunnel:
    name: str
    listen_address: IPv4Address
    listen_port: int
    tunnel: IPv4Interface  # the server's own tunnel address, e.g. 10.8.0.1/24
    root: Path
    cert: Path
    key: Path
    crl: Path
    tls_crypt_v2_server_key: Path
    profile: Literal["bsi", "modern"] = "bsi"
    device: str = "tun-srv"
    extra_push: tuple[str, ...] = field(default=())  # tests only: what a hostile server might push
    status_file: Path | None = None

    def __post_init__(self) -> None:
        check_name(self.name)

    @property
    def tunnel_address(self) -> str:
        return str(self.tunnel.ip)

    @property
    def tunnel_netmask(self) -> str:
        return str(self.tunnel.network.netmask)

    @property
    def pool_start(self) -> str:
        return str(self.tunnel.ip + 1)

    @property
    def pool_end(self) -> str:
        return str(self.tunnel.network.broadcast_address - 1)


def render_server(server: ServerTunnel, templates: Path = TEMPLATES) -> str:
    return environment(templates).get_template("openvpn-server.conf.j2").render(s=server)


def _server(cfg: HeadendConfig | GwaConfig, name: str, device: str) -> ServerTunnel:
    """A tunnel server from the ``[tunnel]`` and ``[pki]`` a headend and the GWA share."""
    tunnel = cfg.tunnel
    return ServerTunnel(name=name, listen_address=tunnel.listen.address, listen_port=tunnel.listen.port,
                        tunnel=tunnel.network, root=cfg.pki.root, cert=tunnel.cert, key=tunnel.key,
                        crl=cfg.pki.crl, tls_crypt_v2_server_key=tunnel.tls_crypt_v2_server_key,
                        profile=tunnel.profile, device=device, status_file=status_file(cfg))


@dataclass(frozen=True)
class TunnelFirewall:
    """What the gateways may reach on a tunnel server's host through their tunnels: the
    ingest's port on the server's tunnel address (a headend), or nothing new at all (the GWA,
    whose admin API client connects out to the gateway, never the other way)."""

    name: str
    device: str
    tunnel: IPv4Interface  #: the server's own tunnel address with its prefix
    ingest_port: int | None
    connections_per_gateway: int = 8

    def __post_init__(self) -> None:
        """Everything that reaches the file bare (not through ``nft_str``) is checked here."""
        if not re.fullmatch(r"tun-[a-z0-9]{1,10}", self.device):  # it becomes the table's bare name
            raise ValueError(f"tunnel device {self.device!r}: tun- and 1-10 of a-z0-9")
        if not isinstance(self.tunnel, IPv4Interface):
            raise TypeError(f"tunnel {self.tunnel!r}: an IPv4 interface address")
        for number in (self.ingest_port or 1, self.connections_per_gateway):
            if type(number) is not int or not 1 <= number <= 65535:
                raise ValueError(f"{number!r}: a port or a count, 1..65535")

    @property
    def address(self) -> IPv4Address:
        return self.tunnel.ip

    @property
    def network(self) -> str:
        return str(self.tunnel.network)

    @property
    def table(self) -> str:
        return "smgw_" + self.device.replace("-", "_")  # device: tun-<a-z0-9>, so a bare nft identifier

    @property
    def reach(self) -> str:
        return f"tcp {self.address}:{self.ingest_port} (the ingest)" if self.ingest_port else "nothing (replies only)"


def render_tunnel_firewall(fw: TunnelFirewall, templates: Path = TEMPLATES) -> str:
    return nftables.environment(templates).get_template("nftables-tunnel-server.conf.j2").render(t=fw)


def generate_headend(cfg: HeadendConfig, templates: Path = TEMPLATES) -> dict[str, str]:
    """Generate for a headend: its tunnel server config, and the firewall of its tunnel device."""
    device = f"tun-{cfg.headend.name}"
    server = _server(cfg, cfg.headend.server_name, device)
    firewall = TunnelFirewall(cfg.headend.name, device, cfg.tunnel.network, cfg.ingest.port,
                              cfg.ingest.connections_per_gateway)
    return {"openvpn/server.conf": render_server(server, templates),
            "nftables.conf": render_tunnel_firewall(firewall, templates)}


def status_file(cfg: HeadendConfig | GwaConfig) -> Path:
    """Who is connected under which tunnel address (the headend's ingest reads it)."""
    return cfg.paths.run / "openvpn-status.log"


def generate_gwa(cfg: GwaConfig, templates: Path = TEMPLATES) -> dict[str, str]:
    """Generate for the GWA: the admin tunnel server the gateways dial after a WakeUp, and the
    firewall of its tunnel device (the GWA connects to a gateway's API, never the reverse)."""
    firewall = TunnelFirewall("gwa", "tun-gwa", cfg.tunnel.network, None)
    return {"openvpn/server.conf": render_server(_server(cfg, cfg.gwa.server_name, "tun-gwa"), templates),
            "nftables.conf": render_tunnel_firewall(firewall, templates)}
