"""Self-tests: is this gateway still the one that was configured, and can it do its job?

Each check is a small function returning a ``Check``; ``run_checks`` runs the ones this
process may run and ``write_results`` merges them into ``<paths.run>/selftest.json`` (one
file that ``smgw status``, the portal and the admin API read). A *critical* failure means
sending could go wrong (wrong key, changed tunnel config, firewall not ours, forwarding
on, broken database): the core stops processing and sending until the check passes again,
and keeps reading and storing. Low disk space is a warning: it threatens storing, not
sending to the wrong place.

The firewall checks need CAP_NET_ADMIN to list the ruleset. The hardened core has no such
capability, so they run in ``smgw selftest`` (root, from a timer) and reach the core
through the results file. The tunnel configs check goes with them: both render the config
again (Jinja2, the templates, the firewall renderers: about 2 MB), which a process that
runs for years should not hold for a check every quarter of an hour. So a core running as
root (``smgw gateway run`` on a board without systemd, the demo, the tests) does not run
them itself either: it runs ``smgw selftest --rendering-only`` as a child each time
(``rendering_in_child``), which renders, checks, prints and exits. The child reads
gateway.toml, so the core hands it the digest of the config it runs: if the file was edited
(and applied) since the core started, the rendered files are not the core's and both fail,
as they did when the core rendered them itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from appliance.child import ChildFailed, last_said, run_smgw
from appliance.config import GatewayConfig
from appliance.config_snapshot import digest as config_digest
from appliance.errors import SmgwError
from appliance.files import write_atomic
from appliance.gateway_token import gateway_token
from appliance.store import Store
from firewall.errors import FirewallError
from pki.errors import PkiError

FIREWALL_SNAPSHOT = "firewall.loaded"  #: under ``paths.rendered``, written by ``smgw apply``
RESULTS = "selftest.json"  #: under ``paths.run``
FORWARDING = (Path("/proc/sys/net/ipv4/ip_forward"), Path("/proc/sys/net/ipv6/conf/all/forwarding"))


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    critical: bool
    detail: str
    at: str = ""


RETRY_AFTER_S = 1.0  #: a critical check that fails is tried once more after this long


def _check(name: str, critical: bool, run: Callable[[], str]) -> Check:
    """Run one check; any deliberate error is its failure, with the error as the detail.

    A critical one gets a second try: a failure stops all sending, and SoftHSM2 can fail a
    single call while openvpn processes read the same token files (CKR_GENERAL_ERROR)."""
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for attempt in range(2 if critical else 1):
        try:
            return Check(name, True, critical, run(), at)
        except (SmgwError, PkiError, FirewallError, OSError, ValueError) as exc:
            failed = Check(name, False, critical, str(exc)[:300] or type(exc).__name__, at)
            if attempt == 0 and critical:
                time.sleep(RETRY_AFTER_S)
    return failed


def token_labels(cfg: GatewayConfig) -> list[str]:
    """Every token key the gateway uses for signing or a tunnel."""
    labels = [cfg.gateway.sig_key] if cfg.profiles else []
    labels += [p.key_label for p in cfg.parties]
    if cfg.admin is not None:
        labels.append(cfg.admin.key_label)
    return list(dict.fromkeys(labels))


def token_keys(cfg: GatewayConfig) -> str:
    """Each key signs inside the token, and the signature verifies with its certificate."""
    token = gateway_token(cfg)
    digest = hashlib.sha256(b"smgw self-test " + os.urandom(16)).digest()
    for label in token_labels(cfg):
        cert = token.certificate(label)
        if cert is None:
            raise SmgwError(f"token key {label!r} has no certificate")
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise SmgwError(f"token key {label!r}: certificate is not for an EC key")
        try:
            public.verify(token.sign_digest(label, digest), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature:
            raise SmgwError(f"token key {label!r} signs, but not for its certificate") from None
    if cfg.logs.key == "token":
        token.hmac_sha256(cfg.logs.audit_key, digest)
    return f"token {cfg.token.label!r}: {len(token_labels(cfg))} keys sign and verify"


def database(store: Store) -> str:
    result = store.quick_check()
    if result != "ok":
        raise SmgwError(f"quick_check: {result[:200]}")
    return f"{store.path}: quick_check ok"


def forwarding() -> str:
    on = [str(p) for p in FORWARDING if p.exists() and p.read_text().strip() != "0"]
    if on:
        raise SmgwError(f"forwarding is on: {', '.join(on)}")
    return "IPv4 and IPv6 forwarding off"


def ruleset(cfg: GatewayConfig) -> str:
    """The rendered ruleset is the one applied, and the kernel still holds what was loaded."""
    from appliance.zone_policy import (
        zone_policy,  # the render side; imported here, only this check needs it
    )
    from firewall import iptables, nftables

    policy = zone_policy(cfg)
    loaded: Callable[[], str]
    if cfg.firewall.backend == "nftables":
        name, rendered, loaded = "nftables.conf", nftables.render(policy), lambda: nftables.loaded()
    else:
        name, rendered, loaded = "iptables.rules", iptables.render(policy), iptables.loaded
    applied = cfg.paths.rendered / name
    if not applied.exists() or applied.read_text() != rendered:
        raise SmgwError(f"{applied} differs from the config's ruleset: run smgw apply")
    snapshot = cfg.paths.rendered / FIREWALL_SNAPSHOT
    if not snapshot.exists():
        raise SmgwError(f"{snapshot} missing: run smgw apply")
    if loaded() != snapshot.read_text():
        raise SmgwError(f"the loaded {cfg.firewall.backend} rules differ from those smgw apply loaded")
    return f"{cfg.firewall.backend}: loaded rules are the applied ones, and those are the config's"


def tunnel_configs(cfg: GatewayConfig) -> str:
    """The OpenVPN configs the supervisor starts are exactly what the config renders to now."""
    from appliance.render import (
        generate,  # render imports the templates; only this check needs them
    )

    token = gateway_token(cfg)
    files = {k: v for k, v in generate(cfg, token.openvpn_ids()).items() if k.startswith("openvpn/")}
    changed = [k for k, text in files.items()
               if not (cfg.paths.rendered / k).exists() or (cfg.paths.rendered / k).read_text() != text]
    if changed:
        raise SmgwError(f"changed on disk or not applied: {', '.join(sorted(changed))}")
    return f"{len(files)} tunnel configs unchanged"


def disk_space(cfg: GatewayConfig) -> str:
    stat = os.statvfs(cfg.store.path.parent)
    free_mb = stat.f_bavail * stat.f_frsize / 1e6
    if free_mb < cfg.selftest.min_free_mb:
        raise SmgwError(f"{free_mb:.0f} MB free under {cfg.store.path.parent}, below {cfg.selftest.min_free_mb} MB")
    return f"{free_mb:.0f} MB free"


def can_list_firewall() -> bool:
    """Root: this process may run the checks that list the ruleset and render the config again."""
    return os.geteuid() == 0


def rendering_names(cfg: GatewayConfig) -> list[str]:
    """The checks that render the config again, for this config."""
    return (["tunnel_configs"] if cfg.parties or cfg.admin is not None else []) + ["ruleset"]


def rendering_digest(cfg: GatewayConfig) -> str:
    """The config the rendering checks render, as a digest: all of it but the access profiles,
    which render nothing and which the GWA installs while the core runs."""
    return config_digest(replace(cfg, profiles=[]))


def rendering_checks(cfg: GatewayConfig, expect: str | None = None) -> list[Check]:
    """``expect``: the digest of the config the asking core runs. The files on disk are
    rendered from gateway.toml; if that is no longer what the core runs (edited and applied
    without a restart), the rendered tunnels and ruleset are not the core's: both fail."""
    if expect is not None and expect != rendering_digest(cfg):
        return _failed_all(cfg, "gateway.toml is not the config the core runs (changed since it started): "
                                "restart the core")
    runs = {"tunnel_configs": lambda: tunnel_configs(cfg), "ruleset": lambda: ruleset(cfg)}
    return [_check(name, True, runs[name]) for name in rendering_names(cfg)]


def run_checks(cfg: GatewayConfig, store: Store, *, firewall: bool,
               rendering: Callable[[GatewayConfig], list[Check]] | None = None) -> list[Check]:
    """Every check this process runs: with ``firewall``, the rendering ones in this process
    (``smgw selftest``, as root); else those ``rendering`` gets from elsewhere, if given."""
    checks = [_check("database", True, lambda: database(store)),
              _check("forwarding", True, forwarding),
              _check("disk_space", False, lambda: disk_space(cfg))]
    if token_labels(cfg) or cfg.logs.key == "token":
        checks.insert(0, _check("token", True, lambda: token_keys(cfg)))
    if firewall:
        checks += rendering_checks(cfg)
    elif rendering is not None:
        checks += rendering(cfg)
    return checks


CHILD_TIMEOUT_S = 60.0  #: a rendering self-test child that takes longer has failed (a Pi renders in ~2 s)


def rendering_in_child(config_path: Path, timeout: float = CHILD_TIMEOUT_S) -> Callable[[GatewayConfig], list[Check]]:
    """The rendering checks, each time run by a child ``smgw selftest --rendering-only`` for
    the config the core runs then (see the module's docstring). Whatever goes wrong with the
    child fails them, critical: an unchecked firewall must stop sending as a changed one does."""

    def run(cfg: GatewayConfig) -> list[Check]:
        args = ["selftest", "--config", str(config_path), "--rendering-only", "--expect-digest", rendering_digest(cfg)]
        try:
            done = run_smgw(args, "the self-test process", timeout)
        except ChildFailed as exc:
            return _failed_all(cfg, str(exc))
        try:
            return _child_checks(cfg, done)
        except Exception as exc:  # noqa: BLE001 - whatever it printed, the checks fail; the core goes on
            return _failed_all(cfg, f"the self-test process failed: {last_said(done, type(exc).__name__, 200)}")

    return run


def _child_checks(cfg: GatewayConfig, done: subprocess.CompletedProcess[bytes]) -> list[Check]:
    """The child's verdict, taken only as far as it must be: exit 0, each expected name once or
    more (any failure wins), ``ok`` a real boolean, always critical; a name it did not report
    fails. Any other name makes the whole answer an error (it would hide the core's own check)."""
    if done.returncode != 0:
        raise ValueError(f"exit status {done.returncode}")
    reported = json.loads(done.stdout)
    if not isinstance(reported, list):
        raise TypeError("not a list")
    wanted = rendering_names(cfg)
    found: dict[str, Check] = {}
    for item in reported:
        if not isinstance(item, dict) or item.get("name") not in wanted or type(item.get("ok")) is not bool:
            raise ValueError("not a check")
        check = Check(str(item["name"]), item["ok"], True, str(item.get("detail", ""))[:300], str(item.get("at", ""))[:40])
        if check.name not in found or not check.ok:
            found[check.name] = check
    missing = [c for c in _failed_all(cfg, "the self-test process did not report it") if c.name not in found]
    return [found[name] for name in wanted if name in found] + missing


def _failed_all(cfg: GatewayConfig, detail: str) -> list[Check]:
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return [Check(name, False, True, detail, at) for name in rendering_names(cfg)]


def write_results(cfg: GatewayConfig, checks: list[Check]) -> dict[str, Check]:
    """Merge ``checks`` into the results file (other runners' checks stay) and return all."""
    path = cfg.paths.run / RESULTS
    merged = read_results(cfg)
    merged.update({c.name: c for c in checks})
    # 0644: the portal (another user) shows it; it holds no secret
    write_atomic(path, json.dumps({name: asdict(c) for name, c in sorted(merged.items())}, indent=1), 0o644)
    return merged


def read_results(cfg: GatewayConfig) -> dict[str, Check]:
    try:
        doc = json.loads((cfg.paths.run / RESULTS).read_text())
        return {name: Check(**fields) for name, fields in doc.items()}
    except (OSError, ValueError, TypeError):
        return {}


def blocking(results: dict[str, Check]) -> list[Check]:
    """The failed critical checks: while any is there, nothing is processed or sent."""
    return [c for c in results.values() if c.critical and not c.ok]
