"""``smgw render``, ``smgw apply``, ``smgw status``, ``smgw selftest``: generate and apply (ARCHITECTURE §3)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from appliance import config as config_mod
from appliance.cli_common import config_option
from appliance.config import GatewayConfig
from appliance.errors import SmgwError
from appliance.files import write_atomic
from appliance.gateway_token import gateway_token
from appliance.render import generate, tunnel_views
from appliance.render_server import generate_gwa, generate_headend
from appliance.root_folder import retire, root_folder
from appliance.selftest import (
    FIREWALL_SNAPSHOT,
    FORWARDING,
    blocking,
    forwarding,
    read_results,
    rendering_checks,
    run_checks,
    write_results,
)
from appliance.zone_policy import zone_policy
from firewall import iptables, nftables
from firewall.errors import FirewallError
from headend.config import GwaConfig, HeadendConfig


def pkcs11_ids(cfg: GatewayConfig, ids_file: Path | None) -> dict[str, str]:
    """The token keys' pkcs11-ids: from the token itself, or (offline) from a JSON file."""
    if ids_file is not None:
        try:
            data = json.loads(ids_file.read_text())
        except (OSError, ValueError) as exc:
            raise SmgwError(f"{ids_file}: not a JSON object of key label -> pkcs11-id ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise SmgwError(f"{ids_file}: not a JSON object of key label -> pkcs11-id")
        return data
    return gateway_token(cfg).openvpn_ids()


def write_tree(files: dict[str, str], out: Path) -> int:
    """Write what differs from what is there; returns how many files changed, so that a
    provisioning run can tell a no-op (Ansible's ``changed_when``)."""
    changed = 0
    for relative, text in sorted(files.items()):
        if not _holds(out / relative, text):
            write_atomic(out / relative, text)
            changed += 1
    return changed


def _holds(path: Path, text: str) -> bool:
    """The file is there with exactly this text."""
    try:
        return path.read_text() == text
    except (OSError, UnicodeDecodeError):
        return False


def share_rendered(folder: Path) -> None:
    """``apply`` runs as root, the tunnels, the self-test timer and the portal as the service
    user: what it wrote below ``folder`` takes the folder's group (smgw), whose members may read
    it (files 0640, folders 0750), and nobody else may. The ruleset snapshot among them:
    unreadable, the self-test failed its critical ruleset check on every run, and the core
    stopped sending.

    Defence in depth (the rendered folder is root's alone now; the state folder, where older
    versions wrote, is smgw's): nothing here follows a symlink (the walk is by folder
    descriptors, the changes by name in their folder, never through a link), and only root's
    own files, with one link, are changed; so root never hands the group a file that is not apply's."""
    if os.geteuid() != 0:
        return
    try:
        fd = os.open(folder, _NO_LINK | os.O_DIRECTORY)
    except OSError:  # missing, or a symlink (ELOOP): not apply's
        return
    try:
        gid = os.fstat(fd).st_gid  # (the folder's own, through the descriptor the walk uses)
        for _, folders, files, below in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            for name in folders + files:
                _share_entry(below, name, gid)
    finally:
        os.close(fd)


_NO_LINK = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _share_entry(folder: int, name: str, gid: int) -> None:
    try:
        entry = os.open(name, _NO_LINK, dir_fd=folder)
    except OSError:  # a symlink (ELOOP) or gone
        return
    try:
        _share_one(entry, gid)
    finally:
        os.close(entry)


def _share_one(fd: int, gid: int) -> None:
    """The open file or folder takes group ``gid``: only if root owns it and it has one name."""
    info = os.fstat(fd)
    if info.st_uid != 0 or info.st_gid == gid or (stat.S_ISREG(info.st_mode) and info.st_nlink != 1):
        return
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        os.fchown(fd, -1, gid)


#: what smgw before 0.x rendered into the state folder, where user smgw could swap it
_RETIRED = ("rendered", FIREWALL_SNAPSHOT, "nftables.last-good.conf", "nftables.last-good.tmp")


def _retire_old(cfg: GatewayConfig) -> None:
    """After the apply (nothing planted there can stop it): the old renders go, and a unit
    that still reads them is what the operator must replace."""
    removed, left = retire(cfg.paths.state, _RETIRED)
    for old in removed:
        click.echo(f"removed {old}: rendered into {cfg.paths.rendered} now (install the units rendered there)")
    for problem in left:
        click.echo(f"warning: {problem}", err=True)


def forwarding_off() -> None:
    """No traffic ever crosses zones: IPv4 and IPv6 forwarding off, checked after writing."""
    for path in FORWARDING:
        if not path.exists():
            continue
        path.write_text("0\n")
        if path.read_text().strip() != "0":
            raise SmgwError(f"{path} stays on")


def register(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    wrap = clean_errors

    @main.command("render")
    @config_option
    @click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write into.")
    @click.option("--pkcs11-ids", "ids_file", type=click.Path(path_type=Path), default=None,
                  help="JSON {key label: pkcs11-id} instead of reading the token (offline rendering).")
    @wrap
    def render_cmd(config_path: Path, out: Path, ids_file: Path | None) -> None:
        """Load, verify and generate every file into a folder (gateway: firewall, OpenVPN clients, units;
        headend or GWA: its tunnel server)."""
        cfg = config_mod.load_any(config_path)
        if isinstance(cfg, HeadendConfig):
            files = generate_headend(cfg)
        elif isinstance(cfg, GwaConfig):
            files = generate_gwa(cfg)
        else:  # the units run the config they were rendered from, as apply's do
            files = generate(cfg, pkcs11_ids(cfg, ids_file), config_path=config_path.resolve())
        changed = write_tree(files, out)
        click.echo(f"{out}: {len(files)} files, {changed} changed")

    @main.command("apply")
    @config_option
    @wrap
    def apply_cmd(config_path: Path) -> None:
        """Load, verify, generate, then install: nft -c, nft -f (rollback on failure), forwarding off."""
        cfg = config_mod.load(config_path)
        _files_present(cfg)
        _interfaces_present(cfg)
        # the units run this very config file, wherever it lies
        files = generate(cfg, pkcs11_ids(cfg, None), config_path=config_path.resolve())
        # checked (and made) as a folder only root may change, the services' group reading it
        rendered = root_folder(cfg.paths.rendered, group_from=cfg.paths.state)
        if _in_force(cfg, files):
            share_rendered(rendered)  # (a gateway applied before the snapshot was shared gets it now)
            _retire_old(cfg)
            click.echo(f"unchanged: {len(files)} files and the firewall as loaded already, forwarding off")
            return
        if cfg.firewall.backend == "nftables":
            nftables.check(files["nftables.conf"])
            write_tree(files, rendered)
            nftables.apply(files["nftables.conf"], rendered)
            _quietly(iptables.remove)
            loaded = "table inet smgw"
        else:
            write_tree(files, rendered)
            iptables.apply(zone_policy(cfg))
            _quietly(nftables.remove)
            loaded = "iptables filter chains SMGW-*"
        forwarding_off()
        from appliance.tunnel_states import forget_others

        forget_others(cfg.paths.run, [p.name for p in cfg.parties])
        # what the kernel holds right after loading: the self-test compares against it
        write_tree({FIREWALL_SNAPSHOT: _loaded(cfg)}, rendered)
        share_rendered(rendered)
        _retire_old(cfg)
        click.echo(f"applied: {len(files)} files, {loaded} loaded, forwarding off")

    @main.command("status")
    @config_option
    @click.option("--json", "as_json", is_flag=True)
    @wrap
    def status_cmd(config_path: Path, as_json: bool) -> None:
        """The tunnels' last known states (written by their supervisors to <paths.run>/tunnels/)."""
        from appliance.tunnel_states import read_states

        cfg = config_mod.load(config_path)
        tunnels = read_states(cfg.paths.run, [p.name for p in cfg.parties])
        checks = read_results(cfg)
        stopped = blocking(checks)
        if as_json:
            click.echo(json.dumps({"gateway": cfg.gateway.id, "tunnels": tunnels, "sending": not stopped,
                                   "selftests": {name: asdict(c) for name, c in sorted(checks.items())}}))
            return
        click.echo(f"gateway {cfg.gateway.id}" + (" (sending stopped by a failed self-test)" if stopped else ""))
        for t in tunnels:
            click.echo(f"  tunnel {t['name']:<10} {t['state']:<11} restarts {t['restarts']}  {t['last_error']}")
        for name, c in sorted(checks.items()):
            mark = "ok" if c.ok else ("FAILED" if c.critical else "warning")
            click.echo(f"  self-test {name:<14} {mark:<7} {c.at}  {c.detail}")

    @main.command("selftest")
    @config_option
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--rendering-only", is_flag=True, hidden=True,
                  help="Only the checks that render the config again, printed as JSON and not published: "
                       "for a core running as root, which publishes them itself.")
    @click.option("--expect-digest", default=None, hidden=True,
                  help="With --rendering-only: the digest of the config the asking core runs.")
    @wrap
    def selftest_cmd(config_path: Path, as_json: bool, rendering_only: bool, expect_digest: str | None) -> None:
        """Run every self-test now (the firewall ones need root) and publish the results; exit 1
        if a critical one fails. Run from a timer beside the unprivileged core."""
        from appliance.audit import Auditor
        from appliance.store import Store

        cfg = config_mod.load(config_path)
        if rendering_only:
            click.echo(json.dumps([asdict(c) for c in rendering_checks(cfg, expect_digest)]))
            return
        with Store.open(cfg.store.path) as store:
            checks = run_checks(cfg, store, firewall=True)  # this command is the one meant to run them
            write_results(cfg, checks)
            auditor = Auditor.for_config(store, cfg)
            for c in checks:
                if not c.ok:
                    auditor.record("system", "selftest.failed", {"check": c.name, "critical": c.critical,
                                                                 "detail": c.detail})
        if as_json:
            click.echo(json.dumps([asdict(c) for c in checks]))
        else:
            for c in checks:
                click.echo(f"{c.name:<14} {'ok' if c.ok else 'FAILED':<7} {c.detail}")
        if blocking({c.name: c for c in checks}):
            raise SystemExit(1)



def _in_force(cfg: GatewayConfig, files: dict[str, str]) -> bool:
    """Everything ``apply`` would do is done: the rendered files are these, the kernel holds
    what the last apply loaded, and forwarding is off. Then apply changes nothing and says so."""
    rendered = cfg.paths.rendered
    if not all(_holds(rendered / name, text) for name, text in files.items()):
        return False
    try:
        if not _holds(rendered / FIREWALL_SNAPSHOT, _loaded(cfg)):
            return False
        forwarding()
    except (OSError, FirewallError, SmgwError):
        return False
    return True


def _loaded(cfg: GatewayConfig) -> str:
    """What the kernel holds of our ruleset, as the self-test compares it."""
    return nftables.loaded() if cfg.firewall.backend == "nftables" else iptables.loaded()


def _quietly(remove: Callable[[], None]) -> None:
    """The other backend's rules go when one is applied; absent tools mean nothing to remove."""
    try:
        remove()
    except FirewallError:
        pass


def _files_present(cfg: GatewayConfig) -> None:
    """What the tunnels need on disk: a missing CRL is an error, not a warning."""
    needed = {"pki.root": cfg.pki.root, "pki.crl": cfg.pki.crl}
    for view in tunnel_views(cfg, {label: label for label in _labels(cfg)}):
        needed[f"tunnel {view.name}: tls_crypt_v2_key"] = view.tls_crypt_v2_key
    missing = [f"{what} ({path})" for what, path in needed.items() if not path.is_file()]
    if missing:
        raise SmgwError("missing: " + "; ".join(missing))


def _interfaces_present(cfg: GatewayConfig) -> None:
    """Each zone's interface exists and carries its configured address (read with pyroute2):
    a ruleset for a misnamed interface would silently match nothing."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    zones = {"interfaces.wan": cfg.interfaces.wan, "interfaces.han": cfg.interfaces.han}
    if cfg.interfaces.lmn is not None:
        zones["interfaces.lmn"] = cfg.interfaces.lmn
    problems = []
    with IPRoute() as ipr:
        for key, interface in zones.items():
            found = ipr.link_lookup(ifname=interface.name)
            if not found:
                problems.append(f"{key}: no interface {interface.name!r} on this system")
                continue
            if interface.address is not None:
                have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=found[0], family=2)}
                if (str(interface.address.ip), interface.address.network.prefixlen) not in have:
                    problems.append(f"{key}: {interface.name} does not carry {interface.address}")
    if problems:
        raise SmgwError("; ".join(problems))


def _labels(cfg: GatewayConfig) -> list[str]:
    labels = [p.key_label for p in cfg.parties]
    if cfg.admin is not None:
        labels.append(cfg.admin.key_label)
    return labels
