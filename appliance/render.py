"""Generate: every file the gateway's config implies, rendered from ``templates/``.

Pure: ``generate(cfg, env)`` returns ``{relative path: text}``; writing and applying are
the caller's (``smgw render`` writes a folder, ``smgw apply`` installs and loads). Jinja2
runs with ``StrictUndefined`` and no autoescape, so every value passes through a quoting
filter of its target language that refuses what it cannot quote safely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from appliance.config import DEFAULT_CONFIG_PATH, GatewayConfig
from appliance.config_net import Admin, Party
from appliance.errors import SmgwError
from appliance.rendered import management_socket
from appliance.zone_policy import tunnel_device, zone_policy
from firewall import iptables, nftables

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
_SAFE_QUOTED = re.compile(r"[A-Za-z0-9 ._/:+=@,-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RenderError(SmgwError):
    """A value that cannot be written into its target file safely."""


def _double_quoted(value: object, target: str) -> str:
    """Letters, digits and ``. _ / : + = @ , -`` and spaces, in double quotes: nothing either
    OpenVPN or systemd would read as a quote, an escape, a variable or a line end."""
    text = str(value)
    if not _SAFE_QUOTED.fullmatch(text) or not text:
        raise RenderError(f"value {text[:40]!r} cannot go into {target}")
    return f'"{text}"'


def ovpn(value: object) -> str:
    """A double-quoted OpenVPN config token: no quotes, backslashes or control characters."""
    return _double_quoted(value, "an OpenVPN config")


def ovpn_single(value: object) -> str:
    """A single-quoted OpenVPN token, taken literally (a pkcs11-id holds backslash escapes)."""
    text = str(value)
    if not text or "'" in text or _CONTROL.search(text) or not text.isascii():
        raise RenderError(f"value {text[:40]!r} cannot go into a single-quoted OpenVPN token")
    return f"'{text}'"


_TMPFILES_PATH = re.compile(r"/[A-Za-z0-9._/+-]+")


def tmpfiles_path(value: object) -> str:
    """A path in a tmpfiles.d line, unquoted: letters, digits and ``. _ / + -`` only (what
    ``SafePath`` allows), so nothing in it is a field separator, a quote or a specifier."""
    text = str(value)
    if not _TMPFILES_PATH.fullmatch(text):
        raise RenderError(f"value {text[:40]!r} cannot go into a tmpfiles.d line")
    return text


def systemd_arg(value: object) -> str:
    """One argument in a unit's ExecStart: quoted; %, $, quotes and control characters refused."""
    return _double_quoted(value, "a systemd unit")


@dataclass(frozen=True, slots=True)
class TunnelView:
    """What a client template needs, resolved (defaults filled in, paths made absolute)."""

    name: str
    device: str
    remote_address: str
    remote_port: int
    server_name: str
    profile: str
    root: Path
    crl: Path
    pkcs11_module: Path
    pkcs11_id: str
    tls_crypt_v2_key: Path
    management_socket: Path


def tunnel_views(cfg: GatewayConfig, pkcs11_ids: dict[str, str]) -> list[TunnelView]:
    """One view per party (and the admin tunnel). ``pkcs11_ids`` maps token key labels to
    their pkcs11-helper serialized ids (read from the token at apply time)."""
    entries: list[tuple[str, Party | Admin]] = [(p.name, p) for p in cfg.parties]
    if cfg.admin is not None:
        entries.append(("admin", cfg.admin))
    views = []
    for name, source in entries:
        label = source.key_label
        if label not in pkcs11_ids:
            raise RenderError(f"tunnel {name}: token key {label!r} not found in token {cfg.token.label!r}")
        views.append(TunnelView(
            name=name, device=tunnel_device(name), remote_address=str(source.remote.address),
            remote_port=source.remote.port, server_name=source.server_name, profile=source.profile,
            root=cfg.pki.root, crl=cfg.pki.crl, pkcs11_module=cfg.token.module, pkcs11_id=pkcs11_ids[label],
            tls_crypt_v2_key=source.tls_crypt_v2_key or cfg.paths.state / "openvpn" / f"{name}.tc.key",
            management_socket=management_socket(cfg, name)))
    return views


def environment(templates: Path = TEMPLATES) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ovpn=ovpn, ovpn_single=ovpn_single, systemd_arg=systemd_arg, tmpfiles_path=tmpfiles_path)
    return env


TMPFILES = "tmpfiles.d/smgw.conf"  #: the run folder, made at boot for the units' user
TUNNEL_UNIT_PREFIX = "smgw-tunnel-"  #: + party name: one unit per party's tunnel


def generate(cfg: GatewayConfig, pkcs11_ids: dict[str, str], templates: Path = TEMPLATES,
             config_path: Path = DEFAULT_CONFIG_PATH, smgw_binary: Path | None = None) -> dict[str, str]:
    env = environment(templates)
    policy = zone_policy(cfg)
    if cfg.firewall.backend == "nftables":
        files = {"nftables.conf": nftables.render(policy, templates)}
    else:
        files = {"iptables.rules": iptables.render(policy)}
    client = env.get_template("openvpn-client.conf.j2")
    views = tunnel_views(cfg, pkcs11_ids)
    for view in views:
        files[f"openvpn/{view.name}.conf"] = client.render(t=view)
    units = UnitView(smgw=smgw_binary or cfg.paths.binary, config=config_path, meter_port=Path(cfg.meter.port), state=cfg.paths.state,
                     rendered=cfg.paths.rendered, run=cfg.paths.run, tunnels=tuple(v.name for v in views), token_dir=cfg.token.store_dir,
                     selftest_every_s=int(cfg.selftest.interval_s),
                     portal_state=cfg.portal.state_dir if cfg.portal is not None else None,
                     portal_port=cfg.firewall.portal_port)
    for unit in unit_names(cfg):
        if unit.startswith(TUNNEL_UNIT_PREFIX):
            party = unit[len(TUNNEL_UNIT_PREFIX):-len(".service")]
            files[f"systemd/{unit}"] = env.get_template("systemd/smgw-tunnel.service.j2").render(u=units, party=party)
        else:
            files[f"systemd/{unit}"] = env.get_template(f"systemd/{unit}.j2").render(u=units)
    files[TMPFILES] = env.get_template("tmpfiles/smgw.conf.j2").render(u=units)
    if cfg.portal is not None and cfg.portal.enabled:
        from appliance.portal_settings import SETTINGS_FILE, render_portal_settings

        files[SETTINGS_FILE] = render_portal_settings(cfg)
    return files


def unit_names(cfg: GatewayConfig) -> list[str]:
    """The systemd units a gateway with this config runs (the GateWatcher only with an [admin])."""
    names = ["smgw-core.service", *(f"{TUNNEL_UNIT_PREFIX}{p.name}.service" for p in cfg.parties),
             "smgw-selftest.service", "smgw-selftest.timer"]
    if cfg.admin is not None:
        names.append("smgw-gatewatcher.service")
    if cfg.portal is not None and cfg.portal.enabled:
        names.append("smgw-portal.service")
    return names


@dataclass(frozen=True, slots=True)
class UnitView:
    smgw: Path
    config: Path
    meter_port: Path
    state: Path
    rendered: Path  #: root's: what apply rendered, read by the services
    run: Path
    tunnels: tuple[str, ...]
    token_dir: Path | None  #: SoftHSM2's token files, which the services write (None: a smart card)
    selftest_every_s: int
    portal_state: Path | None = None  #: the portal's own database folder (None: no portal)

    @property
    def portal(self) -> Path:
        return self.smgw.with_name("smgw-portal")

    portal_port: int = 443
