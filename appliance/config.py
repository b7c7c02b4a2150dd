"""The one configuration model (``/etc/smgw/gateway.toml``): load and verify.

Frozen dataclasses, verified by pydantic with ``extra="forbid"``: an unknown or misspelt key
is an error, never silently ignored. (Dataclasses, not ``BaseModel``: the long-running core
holds its config without loading pydantic, see ``config_snapshot``; construct them through
``verify``/``validate``, as calling a class directly checks nothing and derives no defaults.) Every string that may end up in a config file, a command line or
a management socket refuses control characters (CR, LF, NUL, ...) here, at the edge.
Errors carry the key path (``meter.port``, ``parties[1].remote.port``).
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from annotated_types import Ge, Gt, Le, MaxLen

from appliance.config_base import METER_ID, SafeText, StrictModel, doc, matching
from appliance.config_net import (
    Admin,
    Firewall,
    GatewayIdentity,
    Interfaces,
    Logs,
    Party,
    Paths,
    Pki,
    Retention,
    SelfTest,
    Time,
    Token,
    Wakeup,
)
from appliance.config_portal import Portal
from appliance.errors import ConfigError
from appliance.profiles import AccessProfile, check_profiles
from headend.config_types import Check, SafePath

if TYPE_CHECKING:  # imported where loaded: the gateway's core never builds these models
    from headend.config import GwaConfig, HeadendConfig

DEFAULT_CONFIG_PATH = Path("/etc/smgw/gateway.toml")
UNIX_PATH_MAX = 107  #: sun_path is 108 bytes with its NUL
log = logging.getLogger("smgw.config")


def _mode_e(value: Any) -> Any:
    if isinstance(value, str) and value.upper() == "E":
        raise ValueError("mode E (HDLC, IEC 62056-46/DLMS) is not supported; use A, B, C or D")
    return value


def _device(value: str) -> str:
    if not value.startswith("/") or " " in value:
        raise ValueError("must be an absolute device path without spaces")
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


@dataclass(frozen=True, kw_only=True)
class MeterConfig(StrictModel):
    """The meter on the LMN and how to read it."""

    port: Annotated[SafeText, Check(_device)] = field(
        default="/dev/ttyUSB0", metadata=doc("serial device of the meter"))
    id: Annotated[SafeText, METER_ID] | None = field(
        default=None, metadata=doc("meter id to store; default: the number the meter reports"))
    baud: Literal[300, 600, 1200, 2400, 4800, 9600, 19200] = field(
        default=9600, metadata=doc("highest line speed to switch to (mode B/C negotiate up to this)"))
    framing: Literal["7E1", "8N1"] = field(
        default="7E1", metadata=doc("8N1 for adapters without 7E1: parity travels in bit 7"))
    address: Annotated[SafeText, matching(r"[A-Za-z0-9]{0,32}", "device address: up to 32 letters and digits")] = field(
        default="", metadata=doc("device address for /?ADDR! (bus meters)"))
    mode: Annotated[Literal["A", "B", "C", "D"], Check(_mode_e, before=True)] = field(
        default="C", metadata=doc("IEC 62056-21 protocol mode"))
    poll_interval: Annotated[float, Ge(1.0), Le(86400)] = field(
        default=30.0, metadata=doc("seconds between readouts"))
    timeout: Annotated[float, Gt(0), Le(600)] = field(
        default=30.0, metadata=doc("seconds for one whole readout"))
    attempts: Annotated[int, Ge(1), Le(10)] = field(
        default=3, metadata=doc("sign-ons before a readout fails"))
    echo: Literal["auto", "on", "off"] = field(default="auto", metadata=doc("optical head echo"))
    timezone: Annotated[SafeText, Check(_zone)] = field(
        default="Europe/Berlin", metadata=doc("zone of the meter's clock"))
    load_profile: bool = field(default=False, metadata=doc("also read P.01 (programming mode)"))
    logbook: bool = field(default=False, metadata=doc("also read P.98 (programming mode)"))
    password_file: SafePath | None = field(
        default=None, metadata=doc("file holding the P1 password (default: factory 00000000)"))


@dataclass(frozen=True, kw_only=True)
class StoreConfig(StrictModel):
    """Where readings live."""

    path: SafePath = field(default=Path("/var/lib/smgw/smgw.db"), metadata=doc("SQLite database file"))


@dataclass(frozen=True, kw_only=True)
class GatewayConfig(StrictModel):
    """The whole ``gateway.toml``."""

    gateway: GatewayIdentity = field(default_factory=GatewayIdentity)
    meter: MeterConfig = field(default_factory=MeterConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    interfaces: Interfaces = field(default_factory=Interfaces)
    parties: Annotated[list[Party], MaxLen(16)] = field(default_factory=list)
    admin: Admin | None = None
    wakeup: Wakeup = field(default_factory=Wakeup)
    time: Time = field(default_factory=Time)
    firewall: Firewall = field(default_factory=Firewall)
    token: Token = field(default_factory=Token)
    pki: Pki = field(default_factory=Pki)
    paths: Paths = field(default_factory=Paths)
    logs: Logs = field(default_factory=Logs)
    retention: Retention = field(default_factory=Retention)
    selftest: SelfTest = field(default_factory=SelfTest)
    portal: Portal | None = None
    profiles: Annotated[list[AccessProfile], MaxLen(64)] = field(default_factory=list)

    def _verify(self) -> None:
        """Rules that need the whole file: names and ports that must not collide."""
        seen: dict[str, int] = {}
        for i, party in enumerate(self.parties):
            if party.name == "admin":
                raise ValueError(f"parties[{i}].name: 'admin' is reserved for the GWA tunnel")
            if party.name in seen:
                raise ValueError(f"parties[{i}].name: {party.name!r} already used by parties[{seen[party.name]}]")
            seen[party.name] = i
        labels = [p.key_label for p in self.parties] + ([self.admin.token_key, self.admin.api_key] if self.admin else [])
        doubles = sorted({label for label in labels if labels.count(label) > 1})
        if doubles:
            raise ValueError(f"parties: token key {doubles[0]!r} used by two tunnels (one key per party)")
        if self.wakeup.port == self.firewall.portal_port:
            raise ValueError("wakeup.port: equals firewall.portal_port")
        zones = [self.interfaces.wan.name, self.interfaces.han.name]
        if self.interfaces.lmn is not None:
            zones.append(self.interfaces.lmn.name)
        if len(set(zones)) != len(zones):
            raise ValueError("interfaces: each zone needs its own interface")
        if any(z.startswith("tun-") for z in zones):
            raise ValueError("interfaces: names starting tun- belong to the tunnels")
        # Unix sockets under paths.run: the kernel holds 107 bytes of a path; OpenVPN would cut a
        # longer one silently and its supervisor would never find the management socket
        names = [f"openvpn-{p.name}.sock" for p in self.parties]
        if self.admin is not None:
            names += ["openvpn-admin.sock", "admin-api.sock"]
        longest = max(names, key=len, default="")
        if longest and len(str(self.paths.run / longest).encode()) > UNIX_PATH_MAX:
            raise ValueError(f"paths.run: {self.paths.run / longest} is longer than a Unix socket path may be "
                             f"({len(str(self.paths.run / longest).encode())} > {UNIX_PATH_MAX} bytes); "
                             "choose a shorter run folder")
        if self.portal is not None and self.portal.enabled and self.portal.address is None \
                and self.interfaces.han.address is None:
            raise ValueError("portal.address: needed when interfaces.han has no address (the portal listens on the HAN only)")


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("parties", 1, "remote", "port")`` -> ``parties[1].remote.port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


M = TypeVar("M")


_ADAPTERS: dict[type[Any], Any] = {}


def _adapter(model: type[Any]) -> Any:
    """pydantic's validator for ``model``, imported and built on first use: only where a config
    is verified, never in the core, which has its config verified by a child (``config_snapshot``)."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


def validate(model: type[M], data: Any) -> M:
    """``data`` as a verified ``model``; pydantic's ``ValidationError`` (a ValueError) if not."""
    obj: M = _adapter(cast("type[Any]", model)).validate_python(data)
    return obj


def problems_of(exc: Any) -> list[tuple[str, str]]:
    """A pydantic ``ValidationError`` as ``[(key path, message)]``, in the words ``smgw check`` uses."""
    problems = []
    for err in exc.errors(include_url=False):
        message = err["msg"]
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        problems.append((key_path(tuple(err["loc"])), message))
    return problems


def verify(data: dict[str, Any], source: str = "<config>", model: type[M] = GatewayConfig) -> M:  # type: ignore[assignment]
    """Validate parsed TOML; raise ``ConfigError`` listing every problem with its key path."""
    from pydantic import ValidationError

    try:
        model_obj = validate(model, data)
    except ValidationError as exc:
        raise ConfigError(source, problems_of(exc)) from None
    if isinstance(model_obj, GatewayConfig):
        cross = check_profiles(model_obj.profiles, [p.name for p in model_obj.parties],
                               model_obj.meter.poll_interval, model_obj.meter.load_profile)
        if cross:
            raise ConfigError(source, cross)
    return model_obj


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", f"cannot read: {exc.strerror}")]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [("(file)", f"not UTF-8 at byte {exc.start}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [("(syntax)", str(exc))]) from None


def load(path: Path) -> GatewayConfig:
    """Read and verify a gateway config file (every failure is a ``ConfigError``), with the
    access profiles the GWA installed over the admin API."""
    cfg: GatewayConfig = verify(_read(path), str(path), GatewayConfig)
    extra = installed_profiles(cfg)
    return replace(cfg, profiles=[*cfg.profiles, *extra]) if extra else cfg


INSTALLED_DIR = "profiles.d"  #: under ``paths.state``: profiles installed over the admin API


#: a profile as given, verified: the profile, or its first problem ``(key path, message)``
ProfileVerdict = AccessProfile | tuple[str, str]


def verify_profiles(raws: list[Any]) -> list[ProfileVerdict]:
    """Each raw profile verified by pydantic here (``config_snapshot.profiles_in_child`` has a
    child do it, for a process that keeps pydantic out)."""
    from pydantic import ValidationError

    out: list[ProfileVerdict] = []
    for raw in raws:
        try:
            out.append(validate(AccessProfile, raw))
        except ValidationError as exc:
            out.append(problems_of(exc)[0])
    return out


def installed_profiles(cfg: GatewayConfig, taken: set[str] | None = None,
                       verify_all: Callable[[list[Any]], list[ProfileVerdict]] = verify_profiles,
                       ) -> list[AccessProfile]:
    """The GWA's installed profiles that still fit this config. One that no longer does (its
    party was removed, say) is skipped with a warning, not an error: a config that fails to
    load would also stop the GateWatcher, and with it the GWA's way to remove the profile."""
    folder = cfg.paths.state / INSTALLED_DIR
    names = set(taken) if taken is not None else {p.name for p in cfg.profiles}  # the config file's own
    found: list[tuple[Path, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            found.append((path, json.loads(path.read_text())["profile"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: skipped, not a valid access profile (%s)", path, str(exc).splitlines()[0])
    out: list[AccessProfile] = []
    for (path, _raw), verdict in zip(found, verify_all([raw for _path, raw in found]), strict=True):
        if isinstance(verdict, tuple):
            log.warning("%s: skipped, not a valid access profile (%s: %s)", path, *verdict)
            continue
        problems = check_profiles([verdict], [p.name for p in cfg.parties], cfg.meter.poll_interval,
                                  cfg.meter.load_profile)
        if verdict.name in names or path.stem != verdict.name or problems:
            why = problems[0][1] if problems else "its name is taken or does not match the file"
            log.warning("%s: skipped: %s", path, why)
            continue
        names.add(verdict.name)
        out.append(verdict)
    return out


def load_any(path: Path) -> GatewayConfig | HeadendConfig | GwaConfig:
    """A gateway's, a headend's or the GWA's config, told apart by a ``[headend]`` or ``[gwa]`` table."""
    from headend.config import GwaConfig, HeadendConfig

    data = _read(path)
    if "headend" in data:
        return verify(data, str(path), HeadendConfig)
    if "gwa" in data:
        return verify(data, str(path), GwaConfig)
    return verify(data, str(path))
