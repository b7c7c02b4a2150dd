"""``headend.toml``: a market party's data-center side of the tunnels.

Its own strict model (``headend`` imports nothing of ``appliance``, ARCHITECTURE §2), with
the same habits: unknown keys are errors, names and paths follow strict patterns, every
address is an IP address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from headend.config_types import DnsName, Port, SafePath


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Party(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,9}$")] = Field(description="the party's short name")
    server_name: DnsName = Field(description="CN of the tunnel server certificate (gateways pin it)")


class Listen(_Strict):
    address: IPv4Address
    port: Port = 1194


class Tunnel(_Strict):
    listen: Listen
    network: IPv4Interface = Field(description="the server's tunnel address with prefix, e.g. 10.81.0.1/24")
    profile: Literal["bsi", "modern"] = "bsi"
    cert: SafePath
    key: SafePath = Field(description="the server's software key (party side), mode 0600")
    tls_crypt_v2_server_key: SafePath

    @model_validator(mode="after")
    def _network(self) -> Tunnel:
        if self.network.network.num_addresses < 4 or self.network.ip in (self.network.network.network_address,
                                                                         self.network.network.broadcast_address):
            raise ValueError("tunnel.network: a host address in a subnet of at least 4 addresses")
        return self


class Pki(_Strict):
    root: SafePath
    crl: SafePath


class Ingest(_Strict):
    port: Port = 8443
    enc_cert: SafePath = Field(default=Path("/etc/smgw-headend/pki/enc.crt"), description="role party-enc")
    enc_key: SafePath = Field(default=Path("/etc/smgw-headend/pki/enc.key"), description="its key, mode 0600")
    database: Annotated[str, Field(
        pattern=r"^(sqlite:///?/[A-Za-z0-9._/+-]+|postgresql://[A-Za-z0-9._@:/%+-]*(\?[A-Za-z0-9._=&/%+-]+)?)$")] = Field(
        default="sqlite:////var/lib/smgw-headend/ingest.db",
        description="sqlite:////path or postgresql://user@host/db (a password belongs in ~/.pgpass, not here)")
    workers: int = Field(default=2, ge=1, le=64, description="ingest processes sharing the port (SO_REUSEPORT)")
    read_api: bool = Field(default=True, description="serve the read API (GET /v1/meters/{id}/readings, /v1/deliveries/{id})")
    read_address: IPv4Address = Field(default=IPv4Address("127.0.0.1"),
                                      description="the read API's address: a loopback address of the headend host")
    read_port: Port = 8444
    read_socket: SafePath | None = Field(
        default=None, description="serve the read API on this Unix socket (mode 0660: the headend's user and "
                                  "group) instead of read_address:read_port, which every local user reaches")
    connections_per_gateway: int = Field(default=8, ge=1, le=256,
                                         description="open ingest connections one tunnel address may hold (the "
                                                     "tunnel device's firewall resets the next, and each ingest "
                                                     "process closes it); a gateway keeps one")

    @model_validator(mode="after")
    def _reads_on_loopback(self) -> Ingest:
        """A gateway can send through its tunnel to *any* address of the headend host (Linux
        accepts a packet for a local address on any interface; OpenVPN checks only the source),
        so a read API on the host's LAN or WAN address would serve every meter to every
        gateway. Only 127/8 is safe: the kernel drops it when it arrives on the tun device."""
        on_tcp = self.read_api and self.read_socket is None
        if on_tcp and not self.read_address.is_loopback:
            raise ValueError(f"read_address: {self.read_address} is not a loopback address; every gateway can reach "
                             "the headend host's other addresses through its tunnel (reach the read API from the "
                             "back office through a proxy on the host, or read the database)")
        if self.read_socket is not None and len(str(self.read_socket).encode()) > 107:
            raise ValueError(f"read_socket: {self.read_socket} is longer than a Unix socket path may be (107 bytes)")
        if on_tcp and self.read_port == self.port:
            raise ValueError(f"read_port: {self.read_port} is the ingest's port")
        return self


class Paths(_Strict):
    state: SafePath = Path("/var/lib/smgw-headend")
    run: SafePath = Path("/run/smgw-headend")


class HeadendConfig(_Strict):
    headend: Party
    tunnel: Tunnel
    pki: Pki
    ingest: Ingest = Ingest()
    paths: Paths = Paths()


class GwaIdentity(_Strict):
    server_name: DnsName = Field(description="CN of the GWA's gwa-admin certificate (gateways pin it)")


class GwaPaths(_Strict):
    state: SafePath = Path("/var/lib/smgw-gwa")
    run: SafePath = Path("/run/smgw-gwa")


class GwaConfig(_Strict):
    """The Gateway Administrator's host: the one OpenVPN server the gateways' admin tunnels
    end at (they dial it after a signed WakeUp; nothing ever dials a gateway)."""

    gwa: GwaIdentity
    tunnel: Tunnel
    pki: Pki
    paths: GwaPaths = GwaPaths()
