"""The network half of ``gateway.toml``: zones, market parties, the GWA, wake-up, time.

Every string here ends up in an OpenVPN config, an nftables ruleset, a systemd unit or a
management-socket command, so each has a pattern that admits nothing else: names are
short identifiers (they become interface names ``tun-<party>`` and file names), addresses
are parsed as IP addresses (the firewall allows exactly them; no DNS names), paths are
absolute and free of spaces, quotes and control characters. Cross-field rules (unique
names and ports, a party's ports not clashing with the gateway's own) are checked in
``GatewayConfig`` where the whole file is in view.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from appliance.config_base import SafeText, StrictModel
from headend.config_types import (  # the one definition; headend may not import appliance
    DnsName,
    SafePath,
)

_IDENT = re.compile(r"[a-z][a-z0-9]{0,9}")
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
AUDIT_KEY = "audit-log"  #: the audit logs' HMAC key in the token, made with it by ``smgw token init``
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


def _ident(value: str) -> str:
    if not _IDENT.fullmatch(value):
        raise ValueError("1-10 lowercase letters and digits, starting with a letter (it names tun-<name>)")
    return value


def _ifname(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise ValueError("interface name: 1-15 of letters, digits, _ . - starting with a letter")
    return value


def _label(value: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError("1-32 of letters, digits and . _ - starting alphanumeric")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
IfName = Annotated[str, AfterValidator(_ifname)]
Label = Annotated[str, AfterValidator(_label)]
Port = Annotated[int, Field(ge=1, le=65535)]
CryptoProfile = Literal["bsi", "modern"]


class Interface(StrictModel):
    """One zone's link: its kernel name and the gateway's address on it."""

    name: IfName = Field(description="kernel interface name")
    address: IPv4Interface | None = Field(default=None, description="gateway address with prefix, e.g. 192.0.2.2/24")


class Interfaces(StrictModel):
    """The zones. ``lmn`` only for IP-based meters; a serial meter needs no interface."""

    wan: Interface = Interface(name="wan0")
    han: Interface = Interface(name="han0")
    lmn: Interface | None = None


class Endpoint(StrictModel):
    address: IPv4Address = Field(description="IP address (the firewall allows exactly this; no DNS names)")
    port: Port = Field(default=1194, description="UDP port")


class Party(StrictModel):
    """A market party: its tunnel server, the name its certificate must carry, its ingest port."""

    name: Ident = Field(description="short name; becomes tun-<name> and openvpn/<name>.conf")
    remote: Endpoint = Field(description="the party's OpenVPN server")
    server_name: DnsName = Field(description="CN the server certificate must carry (verify-x509-name)")
    ingest_port: Port = Field(default=8443, description="TCP port of the party's ingest inside the tunnel")
    profile: CryptoProfile = Field(default="bsi", description="bsi: brainpoolP256r1/TLS 1.2; modern: P-256/TLS 1.3")
    token_key: Label | None = Field(default=None, description="token key label (default gateway-tls-<name>)")
    tls_crypt_v2_key: SafePath | None = Field(
        default=None, description="this gateway's tls-crypt-v2 client key (default <state>/openvpn/<name>.tc.key)")
    encryption_cert: SafePath | None = Field(
        default=None, description="the party's party-enc certificate (default /etc/smgw/pki/<name>-enc.crt)")
    ingest_address: IPv4Address | None = Field(
        default=None, description="the ingest inside the tunnel (default: .1 of the tunnel address's /24)")

    @property
    def key_label(self) -> str:
        return self.token_key or f"gateway-tls-{self.name}"

    @property
    def encryption_cert_path(self) -> Path:
        return self.encryption_cert or Path(f"/etc/smgw/pki/{self.name}-enc.crt")


class Admin(StrictModel):
    """The Gateway Administrator's endpoint: the only place an admin tunnel ever goes."""

    remote: Endpoint
    server_name: DnsName
    api_port: Port = Field(default=8443, description="admin API port on the tunnel address")
    profile: CryptoProfile = "bsi"
    token_key: Label = "gateway-tls-admin"
    api_key: Label = Field(default="gateway-api",
                           description="token key of the admin API's HTTPS (role gateway-api, certificate in the token)")
    tls_crypt_v2_key: SafePath | None = None
    idle_timeout_s: float = Field(default=600, ge=1, le=86400, description="close after this long without traffic")
    max_lifetime_s: float = Field(default=3600, ge=1, le=86400, description="close after this long in any case")

    @property
    def key_label(self) -> str:
        return self.token_key


class Wakeup(StrictModel):
    port: Port = Field(default=7500, description="UDP port for signed WakeUp/BreakUp: the only inbound WAN port")
    rate_per_s: int = Field(default=10, ge=1, le=1000, description="datagrams per second the firewall lets in")
    window_s: float = Field(default=60, ge=1, le=600, description="accepted clock difference of issued_at")


class Time(StrictModel):
    ntp_server: IPv4Address | None = Field(default=None, description="NTP server (UDP 123 out on WAN)")
    max_deviation_s: float = Field(default=3.0, gt=0, le=3600,
                                   description="clock deviation from the server beyond which readings are flagged")
    check_interval_s: float = Field(default=600, ge=5, le=86400, description="how often the core asks the server")


class Firewall(StrictModel):
    backend: Literal["nftables", "iptables"] = "nftables"
    log_rate_per_min: int = Field(default=10, ge=1, le=6000, description="dropped-packet log lines per minute")
    portal_port: Port = Field(default=443, description="HTTPS portal port, HAN only")
    portal_rate_per_s: int = Field(default=50, ge=1, le=10000)


class Token(StrictModel):
    label: Label = "smgw"
    module: SafePath = Path("/usr/lib/softhsm/libsofthsm2.so")
    pin_file: SafePath | None = Field(default=None, description="0600 file with the user PIN; else $SMGW_TOKEN_PIN")
    store_dir: SafePath | None = Field(default=Path("/var/lib/softhsm/tokens"),
                                       description="SoftHSM2's token files (writable for the services); "
                                                   "unset for a smart card")


class Pki(StrictModel):
    root: SafePath = Field(default=Path("/etc/smgw/pki/root.crt"), description="pinned root (the GWA's CA)")
    crl: SafePath = Field(default=Path("/etc/smgw/pki/root.crl"), description="CRL; missing is an error")


#: the system's folders below the top level (every top-level folder is refused anyway)
_SYSTEM_FOLDERS = frozenset({"/var/lib", "/var/log", "/var/run", "/var/tmp", "/usr/local", "/usr/lib"})


def _own_folder(value: Path) -> Path:
    """A folder of smgw's own: a tmpfiles.d rule hands the run folder to user smgw at every boot
    (owner, mode), and apply gives the rendered folder to root and the smgw group, so a slip
    such as ``/run`` must not hand over the system's. (The Path is normal
    already, no empty, ``.`` or trailing parts; SafePath has refused ``..``.)"""
    text = str(value)
    if text.count("/") < 2 or text in _SYSTEM_FOLDERS:
        raise ValueError(f"{text} is a top-level or system folder; give smgw a folder of its own "
                         "(such as /run/smgw, /var/lib/smgw-rendered)")
    return value


DEFAULT_STATE = Path("/var/lib/smgw")


def _beside_state(data: dict[str, Any]) -> Path:
    state = data.get("state", DEFAULT_STATE)
    return Path(state).parent / f"{Path(state).name}-rendered"


class Paths(StrictModel):
    """Where smgw keeps what. ``rendered`` is root's: the services run what lies there (the
    OpenVPN configs, with the capability their units hand openvpn), so it must not lie where
    user smgw, which owns ``state``, could swap it."""

    state: SafePath = Field(default=DEFAULT_STATE, description="state (database, installed profiles; user smgw's)")
    rendered: Annotated[SafePath, AfterValidator(_own_folder)] = Field(
        default_factory=_beside_state, description="what smgw apply renders for the services, root's "
                                                   "(default: beside paths.state, <state>-rendered)")
    run: Annotated[SafePath, AfterValidator(_own_folder)] = Field(
        default=Path("/run/smgw"), description="sockets and pid files (made for user smgw at every boot)")
    binary: SafePath = Field(default=Path("/usr/local/bin/smgw"), description="the smgw command the systemd units run")

    @model_validator(mode="after")
    def _rendered_apart(self) -> Paths:
        if self.rendered.is_relative_to(self.state) or self.state.is_relative_to(self.rendered):
            raise ValueError(f"rendered ({self.rendered}) must lie outside state ({self.state}): user smgw "
                             "owns state and could swap what root renders there")
        return self


class Logs(StrictModel):
    """The three audit logs (system, calibration, consumer): how their rows are sealed."""

    key: Literal["token", "none"] = Field(
        default="token", description="seal rows with HMAC-SHA256 by a token key (token) or plain SHA-256 "
                                     "(none: only for a gateway without a token, e.g. reader-only tests)")
    audit_key: Label = Field(default=AUDIT_KEY, description="token secret key for the HMAC (made by smgw token init)")
    rate_per_s: float = Field(default=20.0, gt=0, le=1000,
                              description="rows per second per event kind; more are counted into one summary row")


class Retention(StrictModel):
    """How long the gateway keeps what; expired rows are deleted with secure_delete, the WAL truncated."""

    readings_days: float = Field(default=400, gt=0, le=3650, description="readouts, readings, load profile, logbook")
    system_log_days: float = Field(default=365, gt=0, le=3650)
    calibration_log_days: float = Field(default=3650, gt=0, le=3650)
    consumer_log_days: float = Field(default=730, gt=0, le=3650)
    interval_s: float = Field(default=3600, ge=1, le=86400, description="how often the core applies retention")


class SelfTest(StrictModel):
    """Self-tests at start and periodically; a critical failure stops processing and sending."""

    interval_s: float = Field(default=900, ge=5, le=86400, description="how often the core runs them")
    min_free_mb: int = Field(default=64, ge=1, le=1_000_000, description="free space under the store below this is a warning")


class GatewayIdentity(StrictModel):
    id: DnsName = Field(default="gw-0001", description="the gateway's name (its certificates' CN)")
    sig_key: Label = Field(default="gateway-sig", description="token key that signs deliveries (role gateway-sig)")


__all__ = ["Admin", "Endpoint", "Firewall", "GatewayIdentity", "Interface", "Interfaces", "Logs", "Party", "Paths",
           "Pki", "Retention", "SafeText", "SelfTest", "Time", "Token", "Wakeup"]
