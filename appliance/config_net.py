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

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le

from appliance.config_base import SafeText, StrictModel, doc, matching
from headend.config_types import (  # the one definition; headend may not import appliance
    Check,
    DnsName,
    Port,
    SafePath,
    safe_path,
)

AUDIT_KEY = "audit-log"  #: the audit logs' HMAC key in the token, made with it by ``smgw token init``
Ident = Annotated[str, matching(r"[a-z][a-z0-9]{0,9}",
                                "1-10 lowercase letters and digits, starting with a letter (it names tun-<name>)")]
IfName = Annotated[str, matching(r"[A-Za-z][A-Za-z0-9_.-]{0,14}",
                                 "interface name: 1-15 of letters, digits, _ . - starting with a letter")]
Label = Annotated[str, matching(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}",
                                "1-32 of letters, digits and . _ - starting alphanumeric")]
CryptoProfile = Literal["bsi", "modern"]


@dataclass(frozen=True, kw_only=True)
class Interface(StrictModel):
    """One zone's link: its kernel name and the gateway's address on it."""

    name: IfName = field(metadata=doc("kernel interface name"))
    address: IPv4Interface | None = field(
        default=None, metadata=doc("gateway address with prefix, e.g. 192.0.2.2/24"))


@dataclass(frozen=True, kw_only=True)
class Interfaces(StrictModel):
    """The zones. ``lmn`` only for IP-based meters; a serial meter needs no interface."""

    wan: Interface = field(default_factory=lambda: Interface(name="wan0"))
    han: Interface = field(default_factory=lambda: Interface(name="han0"))
    lmn: Interface | None = None


@dataclass(frozen=True, kw_only=True)
class Endpoint(StrictModel):
    address: IPv4Address = field(metadata=doc("IP address (the firewall allows exactly this; no DNS names)"))
    port: Port = field(default=1194, metadata=doc("UDP port"))


@dataclass(frozen=True, kw_only=True)
class Party(StrictModel):
    """A market party: its tunnel server, the name its certificate must carry, its ingest port."""

    name: Ident = field(metadata=doc("short name; becomes tun-<name> and openvpn/<name>.conf"))
    remote: Endpoint = field(metadata=doc("the party's OpenVPN server"))
    server_name: DnsName = field(metadata=doc("CN the server certificate must carry (verify-x509-name)"))
    ingest_port: Port = field(default=8443, metadata=doc("TCP port of the party's ingest inside the tunnel"))
    profile: CryptoProfile = field(
        default="bsi", metadata=doc("bsi: brainpoolP256r1/TLS 1.2; modern: P-256/TLS 1.3"))
    token_key: Label | None = field(
        default=None, metadata=doc("token key label (default gateway-tls-<name>)"))
    tls_crypt_v2_key: SafePath | None = field(
        default=None, metadata=doc("this gateway's tls-crypt-v2 client key (default <state>/openvpn/<name>.tc.key)"))
    encryption_cert: SafePath | None = field(
        default=None, metadata=doc("the party's party-enc certificate (default /etc/smgw/pki/<name>-enc.crt)"))
    ingest_address: IPv4Address | None = field(
        default=None, metadata=doc("the ingest inside the tunnel (default: .1 of the tunnel address's /24)"))

    @property
    def key_label(self) -> str:
        return self.token_key or f"gateway-tls-{self.name}"

    @property
    def encryption_cert_path(self) -> Path:
        return self.encryption_cert or Path(f"/etc/smgw/pki/{self.name}-enc.crt")


@dataclass(frozen=True, kw_only=True)
class Admin(StrictModel):
    """The Gateway Administrator's endpoint: the only place an admin tunnel ever goes."""

    remote: Endpoint
    server_name: DnsName
    api_port: Port = field(default=8443, metadata=doc("admin API port on the tunnel address"))
    profile: CryptoProfile = "bsi"
    token_key: Label = "gateway-tls-admin"
    api_key: Label = field(
        default="gateway-api", metadata=doc("token key of the admin API's HTTPS (role gateway-api, certificate in the token)"))
    tls_crypt_v2_key: SafePath | None = None
    idle_timeout_s: Annotated[float, Ge(1), Le(86400)] = field(
        default=600.0, metadata=doc("close after this long without traffic"))
    max_lifetime_s: Annotated[float, Ge(1), Le(86400)] = field(
        default=3600.0, metadata=doc("close after this long in any case"))

    @property
    def key_label(self) -> str:
        return self.token_key


@dataclass(frozen=True, kw_only=True)
class Wakeup(StrictModel):
    port: Port = field(
        default=7500, metadata=doc("UDP port for signed WakeUp/BreakUp: the only inbound WAN port"))
    rate_per_s: Annotated[int, Ge(1), Le(1000)] = field(
        default=10, metadata=doc("datagrams per second the firewall lets in"))
    window_s: Annotated[float, Ge(1), Le(600)] = field(
        default=60.0, metadata=doc("accepted clock difference of issued_at"))


@dataclass(frozen=True, kw_only=True)
class Time(StrictModel):
    ntp_server: IPv4Address | None = field(default=None, metadata=doc("NTP server (UDP 123 out on WAN)"))
    max_deviation_s: Annotated[float, Gt(0), Le(3600)] = field(
        default=3.0, metadata=doc("clock deviation from the server beyond which readings are flagged"))
    check_interval_s: Annotated[float, Ge(5), Le(86400)] = field(
        default=600.0, metadata=doc("how often the core asks the server"))


@dataclass(frozen=True, kw_only=True)
class Firewall(StrictModel):
    backend: Literal["nftables", "iptables"] = "nftables"
    log_rate_per_min: Annotated[int, Ge(1), Le(6000)] = field(
        default=10, metadata=doc("dropped-packet log lines per minute"))
    portal_port: Port = field(default=443, metadata=doc("HTTPS portal port, HAN only"))
    portal_rate_per_s: Annotated[int, Ge(1), Le(10000)] = 50


@dataclass(frozen=True, kw_only=True)
class Token(StrictModel):
    label: Label = "smgw"
    module: SafePath = Path("/usr/lib/softhsm/libsofthsm2.so")
    pin_file: SafePath | None = field(
        default=None, metadata=doc("0600 file with the user PIN; else $SMGW_TOKEN_PIN"))
    store_dir: SafePath | None = field(
        default=Path("/var/lib/softhsm/tokens"),
        metadata=doc("SoftHSM2's token files (writable for the services); unset for a smart card"))


@dataclass(frozen=True, kw_only=True)
class Pki(StrictModel):
    root: SafePath = field(default=Path("/etc/smgw/pki/root.crt"), metadata=doc("pinned root (the GWA's CA)"))
    crl: SafePath = field(default=Path("/etc/smgw/pki/root.crl"), metadata=doc("CRL; missing is an error"))


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
DEFAULT_RENDERED = Path("/var/lib/smgw-rendered")  #: beside the default state


def _beside_state(data: dict[str, Any]) -> Path:
    state = data.get("state", DEFAULT_STATE)
    return Path(state).parent / f"{Path(state).name}-rendered"


@dataclass(frozen=True, kw_only=True)
class Paths(StrictModel):
    """Where smgw keeps what. ``rendered`` is root's: the services run what lies there (the
    OpenVPN configs, with the capability their units hand openvpn), so it must not lie where
    user smgw, which owns ``state``, could swap it."""

    state: SafePath = field(
        default=DEFAULT_STATE, metadata=doc("state (database, installed profiles; user smgw's)"))
    rendered: Annotated[SafePath, Check(_own_folder)] = field(
        default=DEFAULT_RENDERED, metadata=doc("what smgw apply renders for the services, root's "
                                                "(default: beside paths.state, <state>-rendered)"))
    run: Annotated[SafePath, Check(_own_folder)] = field(
        default=Path("/run/smgw"), metadata=doc("sockets and pid files (made for user smgw at every boot)"))
    binary: SafePath = field(
        default=Path("/usr/local/bin/smgw"), metadata=doc("the smgw command the systemd units run"))

    @classmethod
    def _before(cls, data: Any) -> Any:
        if isinstance(data, dict) and "rendered" not in data:
            try:  # derived from a state that is a path of the allowed letters, else state's error says it
                return {**data, "rendered": _beside_state({"state": safe_path(Path(data.get("state", DEFAULT_STATE)))})}
            except (TypeError, ValueError):
                pass
        return data

    def _verify(self) -> None:
        if self.rendered.is_relative_to(self.state) or self.state.is_relative_to(self.rendered):
            raise ValueError(f"rendered ({self.rendered}) must lie outside state ({self.state}): user smgw "
                             "owns state and could swap what root renders there")


@dataclass(frozen=True, kw_only=True)
class Logs(StrictModel):
    """The three audit logs (system, calibration, consumer): how their rows are sealed."""

    key: Literal["token", "none"] = field(
        default="token", metadata=doc("seal rows with HMAC-SHA256 by a token key (token) or plain SHA-256 "
                                      "(none: only for a gateway without a token, e.g. reader-only tests)"))
    audit_key: Label = field(
        default=AUDIT_KEY, metadata=doc("token secret key for the HMAC (made by smgw token init)"))
    rate_per_s: Annotated[float, Gt(0), Le(1000)] = field(
        default=20.0, metadata=doc("rows per second per event kind; more are counted into one summary row"))


@dataclass(frozen=True, kw_only=True)
class Retention(StrictModel):
    """How long the gateway keeps what; expired rows are deleted with secure_delete, the WAL truncated."""

    readings_days: Annotated[float, Gt(0), Le(3650)] = field(
        default=400.0, metadata=doc("readouts, readings, load profile, logbook"))
    system_log_days: Annotated[float, Gt(0), Le(3650)] = 365.0
    calibration_log_days: Annotated[float, Gt(0), Le(3650)] = 3650.0
    consumer_log_days: Annotated[float, Gt(0), Le(3650)] = 730.0
    interval_s: Annotated[float, Ge(1), Le(86400)] = field(
        default=3600.0, metadata=doc("how often the core applies retention"))


@dataclass(frozen=True, kw_only=True)
class SelfTest(StrictModel):
    """Self-tests at start and periodically; a critical failure stops processing and sending."""

    interval_s: Annotated[float, Ge(5), Le(86400)] = field(
        default=900.0, metadata=doc("how often the core runs them"))
    min_free_mb: Annotated[int, Ge(1), Le(1_000_000)] = field(
        default=64, metadata=doc("free space under the store below this is a warning"))


@dataclass(frozen=True, kw_only=True)
class GatewayIdentity(StrictModel):
    id: DnsName = field(default="gw-0001", metadata=doc("the gateway's name (its certificates' CN)"))
    sig_key: Label = field(
        default="gateway-sig", metadata=doc("token key that signs deliveries (role gateway-sig)"))


__all__ = ["Admin", "Endpoint", "Firewall", "GatewayIdentity", "Interface", "Interfaces", "Logs", "Party", "Paths",
           "Pki", "Retention", "SafeText", "SelfTest", "Time", "Token", "Wakeup"]
