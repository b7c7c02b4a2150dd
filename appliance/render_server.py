"""The party side of a tunnel: the OpenVPN server config a headend runs, rendered from
``templates/openvpn-server.conf.j2`` with the same quoting filters as the gateway's. It
lives here, not in ``headend/``, because the filters are the appliance's and ``headend``
may not import ``appliance`` (ARCHITECTURE §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Literal

from appliance.render import TEMPLATES, environment
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


def generate_headend(cfg: HeadendConfig, templates: Path = TEMPLATES) -> dict[str, str]:
    """Generate for a headend: its tunnel server config."""
    server = _server(cfg, cfg.headend.server_name, f"tun-{cfg.headend.name}")
    return {"openvpn/server.conf": render_server(server, templates)}


def status_file(cfg: HeadendConfig | GwaConfig) -> Path:
    """Who is connected under which tunnel address (the headend's ingest reads it)."""
    return cfg.paths.run / "openvpn-status.log"


def generate_gwa(cfg: GwaConfig, templates: Path = TEMPLATES) -> dict[str, str]:
    """Generate for the GWA: the admin tunnel server the gateways dial after a WakeUp."""
    return {"openvpn/server.conf": render_server(_server(cfg, cfg.gwa.server_name, "tun-gwa"), templates)}
