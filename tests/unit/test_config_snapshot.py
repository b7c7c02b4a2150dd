"""The core's config without pydantic: the verified config as data and back, loaded by a child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from appliance.config import GatewayConfig, load, verify
from appliance.config_snapshot import (
    SnapshotError,
    from_data,
    load_in_child,
    profiles_in_child,
    to_json,
)
from appliance.errors import ConfigError
from appliance.portal_settings import render_portal_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.toml"


def _everything() -> dict[str, Any]:
    """The example with every optional table and key that has a type of its own set."""
    data = tomllib.loads(EXAMPLE.read_text())
    data["meter"].update(id="1ISK0037155794", password_file="/etc/smgw/meter-password", load_profile=True)
    data["interfaces"]["lmn"] = {"name": "lmn0", "address": "10.1.1.1/24"}
    data["parties"][0].update(token_key="tls-dso", tls_crypt_v2_key="/var/lib/smgw/dso.key",
                              encryption_cert="/etc/smgw/pki/d.crt", ingest_address="10.8.0.1")
    data["portal"] = {"address": "192.168.7.1", "user": "smgw-portal",
                      "consumers": [{"name": "anna", "meters": ["M1", "M2"], "setup_code": "abcdefghijkl"}]}
    data["profiles"] = [{"name": "dso-lp", "party": "dso", "template": "taf7"},
                        {"name": "sup-rt", "party": "supplier", "template": "taf10", "identity": "pseudonym"}]
    return data


def test_a_verified_config_comes_back_equal_from_its_data() -> None:
    for cfg in (GatewayConfig(), load(EXAMPLE), verify(_everything())):
        data = json.loads(to_json(cfg))
        back = from_data(GatewayConfig, data)
        # the same text, not only equal values: 12 == 12.0, yet portal.json would differ
        assert back == cfg and to_json(back) == to_json(cfg)
    full = from_data(GatewayConfig, json.loads(to_json(verify(_everything()))))
    assert str(full.interfaces.lmn.address) == "10.1.1.1/24" and full.parties[0].key_label == "tls-dso"  # type: ignore[union-attr]
    assert full.portal is not None and full.portal.consumers[0].meters == ["M1", "M2"]
    assert full.profiles[0].values == ["1.5", "2.5"] and isinstance(full.meter.poll_interval, float)


@pytest.mark.parametrize(("change", "where"), [
    (lambda d: d["meter"].update(baud=9601), "meter.baud"),
    (lambda d: d["meter"].update(baud="9600"), "meter.baud"),
    (lambda d: d["meter"].update(load_profile=1), "meter.load_profile"),
    (lambda d: d["meter"].update(attempts=3.0), "meter.attempts"),
    (lambda d: d["meter"].pop("port"), "meter.port"),
    (lambda d: d["meter"].update(extra=1), "meter.extra"),
    (lambda d: d["parties"][1]["remote"].update(address="not an address"), "parties[1].remote.address"),
    (lambda d: d["store"].update(path=None), "store.path"),
    (lambda d: d.update(parties={}), "parties"),
])
def test_data_of_another_shape_is_refused_with_its_key(change: Any, where: str) -> None:
    data = json.loads(to_json(load(EXAMPLE)))
    change(data)
    with pytest.raises(SnapshotError, match=rf"^{__import__('re').escape(where)}: "):
        from_data(GatewayConfig, data)


def test_the_child_loads_the_config_and_reports_its_errors(tmp_path: Path) -> None:
    assert to_json(load_in_child(EXAMPLE)) == to_json(load(EXAMPLE))
    # the core writes portal.json from what the child gave it, apply from load: the same file
    assert render_portal_settings(load_in_child(EXAMPLE)) == render_portal_settings(load(EXAMPLE))
    bad = tmp_path / "bad.toml"
    bad.write_text('[meter]\nport = "ttyUSB0"\nfoo = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_in_child(bad)
    assert caught.value.source == str(bad)
    assert caught.value.problems == [("meter.port", "must be an absolute device path without spaces"),
                                     ("meter.foo", "unknown key")]
    with pytest.raises(ConfigError, match="cannot read"):
        load_in_child(tmp_path / "missing.toml")


def test_an_error_names_the_inner_key_and_never_the_value() -> None:
    data = json.loads(to_json(verify(_everything())))
    data["portal"]["consumers"][0]["meters"] = "M1"  # beside the household's one-time code
    with pytest.raises(SnapshotError) as caught:
        from_data(GatewayConfig, data)
    assert str(caught.value) == "portal.consumers[0].meters: not a list"
    data["portal"]["consumers"][0]["meters"] = ["M1"]
    data["interfaces"]["lmn"]["address"] = "10.1.1.1/99"
    with pytest.raises(SnapshotError) as caught:
        from_data(GatewayConfig, data)
    assert str(caught.value) == "interfaces.lmn.address: not a valid IPv4Interface"
    assert "abcdefghijkl" not in str(caught.value)


def test_a_relative_path_and_what_the_child_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    (state / "profiles.d").mkdir(parents=True)
    (state / "profiles.d" / "gwa-x.json").write_text("{not json")
    (tmp_path / "gw.toml").write_text(f'[paths]\nstate = "{state}"\nrun = "{tmp_path}/run"\n')
    monkeypatch.chdir(tmp_path)  # the child runs in /, the path is this folder's
    with caplog.at_level("WARNING", logger="smgw.config"):
        cfg = load_in_child(Path("gw.toml"))
    assert cfg.paths.state == state and cfg.profiles == []
    assert any("gwa-x.json: skipped, not a valid access profile" in r.getMessage() for r in caplog.records)


def test_a_child_that_fails_is_a_config_error_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '{\"config\": {\"meter\": 1}}'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(ConfigError, match=r"\(check\): the config check failed"):
        load_in_child(EXAMPLE)
    fake.write_text("#!/bin/sh\necho 'Traceback: boom' >&2\nexit 1\n")
    with pytest.raises(ConfigError, match="the config check failed: Traceback: boom"):
        load_in_child(EXAMPLE)
    fake.write_text("#!/bin/sh\necho '{\"error\": {\"problems\": [[\"a\", \"b\"]]}}'\nexit 2\n")
    with pytest.raises(ConfigError, match="the config check failed"):  # no source: its answer is not believed
        load_in_child(EXAMPLE)
    fake.write_text("#!/bin/sh\nsleep 5\n")
    with pytest.raises(ConfigError, match="took more than 1 s"):
        load_in_child(EXAMPLE, timeout=1)


def test_a_profile_check_child_that_fails_or_cannot_start_is_a_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '[]'\necho 'short answer' >&2\n")  # one verdict short
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(ConfigError, match="the profile check failed: short answer"):
        profiles_in_child([{"name": "a"}])
    fake.write_text("#!/bin/sh\nsleep 5\n")
    with pytest.raises(ConfigError, match="the profile check took more than 1 s"):
        profiles_in_child([], timeout=1)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(ConfigError, match="cannot start the profile check: No such file"):
        profiles_in_child([])
    with pytest.raises(ConfigError, match="cannot start the config check: No such file"):
        load_in_child(EXAMPLE)


def test_the_core_side_never_imports_pydantic() -> None:
    # nor when the admin API (a GateWatcher thread of the core, with --in-process) checks profiles
    code = ("import sys; from pathlib import Path; from appliance.config_snapshot import load_in_child;"
            f"load_in_child(Path({str(EXAMPLE)!r}));"
            "import appliance.cli, appliance.gateway, appliance.delivery_service, appliance.parts, appliance.selftest;"
            "import appliance.tunnel_service, appliance.gatewatcher_service, appliance.admin_api;"
            "from appliance.config_snapshot import profiles_in_child;"
            "assert profiles_in_child([{'name': 'a', 'party': 'dso', 'template': 'taf1'}, {}])[1][0] == 'name';"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"
