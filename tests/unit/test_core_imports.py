"""What the long-running core loads: on a 512 MB board each megabyte of a process that
runs for years counts. The core never loads what only other commands need: the renderers
(Jinja2: the self-test timer, or a child of a core running as root, re-renders), http.client/http.server/ssl (the sender
and the admin socket speak HTTP through h11), Flask (the portal is a process of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.config import load, validate
from appliance.profiles import AccessProfile
from appliance.selftest import rendering_in_child, run_checks
from appliance.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/gateway.toml"
NEVER_IN_THE_CORE = ("jinja2", "http.client", "http.server", "ssl", "email.parser", "flask", "cheroot")


def _loaded_by(*modules: str) -> set[str]:
    code = (f"import sys, json\nfor m in {list(modules)!r}: __import__(m)\n"
            f"print(json.dumps(sorted(set(sys.modules) & set({list(NEVER_IN_THE_CORE)!r}))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


def test_the_core_as_its_unit_runs_it_loads_no_renderer_no_http_library_no_web_framework() -> None:
    # smgw gateway run --core-only: the command line, the reader loop, the processor and sender
    assert _loaded_by("appliance.cli", "appliance.gateway", "appliance.delivery_service") == set()


def test_the_in_process_gateway_loads_no_renderer_until_a_wakeup_opens_the_admin_tunnel() -> None:
    # the tunnels and the GateWatcher as threads: stunnel's config is rendered when the admin
    # tunnel opens, so the renderers are loaded then, not at the start
    loaded = _loaded_by("appliance.cli", "appliance.gateway", "appliance.delivery_service",
                        "appliance.tunnel_service", "appliance.gatewatcher_service", "appliance.admin_runner")
    assert loaded == set(), loaded


def _example(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text().replace('state = "/var/lib/smgw"', f'state = "{tmp_path}/state"').replace(
        'path = "/var/lib/smgw/smgw.db"', f'path = "{tmp_path}/smgw.db"')
    (tmp_path / "gateway.toml").write_text(text)
    return tmp_path / "gateway.toml"


def test_the_unprivileged_core_leaves_the_rendering_checks_to_root(tmp_path: Path) -> None:
    cfg = load(_example(tmp_path))
    with Store.open(cfg.store.path) as store:
        as_core = {c.name for c in run_checks(cfg, store, firewall=False)}
        as_timer = {c.name for c in run_checks(cfg, store, firewall=True)}
    assert {"tunnel_configs", "ruleset"} & as_core == set()
    assert {"tunnel_configs", "ruleset", "database", "forwarding"} <= as_timer


def test_a_rendering_check_child_that_fails_or_hangs_fails_the_checks_critically(tmp_path: Path) -> None:
    cfg = load(_example(tmp_path))
    missing = rendering_in_child(tmp_path / "nowhere.toml")(cfg)  # the child cannot load its config
    assert [(c.name, c.ok, c.critical) for c in missing] == [("tunnel_configs", False, True), ("ruleset", False, True)]
    assert "nowhere.toml" in missing[0].detail, missing[0].detail
    hung = rendering_in_child(tmp_path / "gateway.toml", timeout=0.01)(cfg)
    assert {c.name for c in hung if not c.ok and c.critical} == {"tunnel_configs", "ruleset"}
    assert "more than" in hung[0].detail
    with Store.open(cfg.store.path) as store:  # and the core's own checks carry them
        checks = run_checks(cfg, store, firewall=False, rendering=lambda _cfg: missing)
    assert {"tunnel_configs", "ruleset", "database"} <= {c.name for c in checks}


def test_the_rendering_checks_fail_when_gateway_toml_is_not_what_the_core_runs(tmp_path: Path) -> None:
    path = _example(tmp_path)
    cfg = load(path)
    checks = rendering_in_child(path)
    changed = "not the config the core runs"
    assert [c.name for c in checks(cfg)] == ["tunnel_configs", "ruleset"]
    assert not any(changed in c.detail for c in checks(cfg))
    # the GWA installs profiles while the core runs: they render nothing, so they change nothing here
    with_profile = replace(cfg, profiles=[validate(AccessProfile, {"name": "dso-x", "party": "dso", "template": "taf1"})])
    assert not any(changed in c.detail for c in checks(with_profile))
    # edited (and applied) without a restart: the rendered files are no longer the core's
    path.write_text(path.read_text().replace("log_rate_per_min = 10", "log_rate_per_min = 11"))
    assert [(c.name, c.ok, c.critical, changed in c.detail) for c in checks(cfg)] == [
        ("tunnel_configs", False, True, True), ("ruleset", False, True, True)]


def test_a_rendering_check_child_is_believed_only_for_its_own_checks(tmp_path: Path) -> None:
    from subprocess import CompletedProcess

    from appliance.selftest import _child_checks

    cfg = load(_example(tmp_path))

    def told(doc: object, code: int = 0) -> list[tuple[str, bool, bool]]:
        return [(c.name, c.ok, c.critical) for c in _child_checks(cfg, CompletedProcess([], code, json.dumps(doc).encode(), b""))]

    ok = {"name": "ruleset", "ok": True, "critical": False, "detail": "", "at": ""}
    assert told([ok, {**ok, "name": "tunnel_configs"}]) == [("tunnel_configs", True, True), ("ruleset", True, True)]
    assert told([ok]) == [("ruleset", True, True), ("tunnel_configs", False, True)]  # unreported: failed
    assert told([ok, {**ok, "ok": False}])[0] == ("ruleset", False, True)  # a failure wins
    for bad in ([{**ok, "name": "database"}], [{**ok, "ok": "false"}], {"ruleset": ok}, [[ok]]):
        with pytest.raises((ValueError, TypeError)):
            told(bad)
    with pytest.raises(ValueError):  # a child that failed, whatever it printed
        told([ok, {**ok, "name": "tunnel_configs"}], code=1)

