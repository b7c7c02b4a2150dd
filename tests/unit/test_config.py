"""The config model: defaults pinned, every error named by its key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.config import GatewayConfig, load, verify
from appliance.config_snapshot import to_json
from appliance.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.toml"


def test_default_model_is_pinned() -> None:
    dump = json.loads(to_json(GatewayConfig()))
    assert dump["parties"] == [] and dump["admin"] is None
    assert dump["wakeup"] == {"port": 7500, "rate_per_s": 10, "window_s": 60.0}
    assert dump["profiles"] == []
    assert dump["interfaces"] == {"wan": {"name": "wan0", "address": None}, "han": {"name": "han0", "address": None},
                                  "lmn": None}
    assert dump["firewall"]["backend"] == "nftables" and dump["token"]["label"] == "smgw"
    assert {k: dump[k] for k in ("meter", "store")} == {
        "meter": {
            "port": "/dev/ttyUSB0", "id": None, "baud": 9600, "framing": "7E1", "address": "",
            "mode": "C", "poll_interval": 30.0, "timeout": 30.0, "attempts": 3, "echo": "auto",
            "timezone": "Europe/Berlin", "load_profile": False, "logbook": False,
            "password_file": None,
        },
        "store": {"path": "/var/lib/smgw/smgw.db"},
    }


def test_example_config_is_accepted() -> None:
    cfg = load(EXAMPLE)
    assert cfg.meter.mode == "C"


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"meter": {"port": "/dev/tty\nS0"}}, "meter.port", "control character"),
        ({"meter": {"port": "dev/ttyS0"}}, "meter.port", "absolute"),
        ({"meter": {"id": "x\x00"}}, "meter.id", "control character"),
        # C1 controls and the Unicode line separators: str.splitlines() breaks a line at them
        ({"meter": {"address": "1\x85"}}, "meter.address", "control character"),
        ({"gateway": {"sig_key": "key\u2028x"}}, "gateway.sig_key", "1-32 of letters"),
        ({"meter": {"timezone": "Europe/Berlin\u2029"}}, "meter.timezone", "control character"),
        ({"meter": {"password_file": "meter-password"}}, "meter.password_file", "absolute path"),
        ({"meter": {"password_file": "/etc/smgw/pw\nx"}}, "meter.password_file", "absolute path"),
        ({"meter": {"id": "a b"}}, "meter.id", "meter id"),
        ({"meter": {"baud": 1234}}, "meter.baud", "9600"),
        ({"meter": {"mode": "E"}}, "meter.mode", "HDLC"),
        ({"meter": {"mode": "X"}}, "meter.mode", "'A', 'B', 'C' or 'D'"),
        ({"meter": {"address": "12;rm"}}, "meter.address", "letters and digits"),
        ({"meter": {"poll_interval": 0}}, "meter.poll_interval", "greater than or equal to 1"),
        ({"meter": {"timezone": "Mars/Olympus"}}, "meter.timezone", "unknown time zone"),
        ({"meter": {"colour": "red"}}, "meter.colour", "unknown key"),
        ({"store": {"path": "relative.db"}}, "store.path", "absolute"),
        ({"stor": {}}, "stor", "unknown key"),
        # handed to user smgw at every boot by a tmpfiles.d rule: never the system's own folders
        ({"paths": {"run": "/run"}}, "paths.run", "top-level or system folder"),
        ({"paths": {"run": "/var/lib/"}}, "paths.run", "top-level or system folder"),
        ({"paths": {"run": "/smgw"}}, "paths.run", "top-level or system folder"),
        # rendered is derived from state, and that derived folder is checked as a given one is
        ({"paths": {"state": "/run"}}, "paths.rendered", "/run-rendered is a top-level or system folder"),
        # a table where text belongs is an error of that key, not a crash (once a TypeError)
        ({"paths": {"state": 7}}, "paths.state", "not a valid path"),
        ({"profiles": [{"name": "x", "party": "dso", "template": {}}]}, "profiles[0].template", "'taf1'"),
        ({"profiles": [{"name": "x", "party": "dso", "template": ["taf1"]}]}, "profiles[0].template", "'taf1'"),
    ],
)
def test_errors_name_the_key_path(data: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        verify(data, "t.toml")
    assert any(p == path and message in m for p, m in info.value.problems), info.value.problems


def test_check_cli_prints_every_error_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[meter]\nbaud = 7\nmode = "E"\nport = "x"\n[store]\npath = "rel"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(bad)])
    assert result.exit_code == 2
    for key in ("meter.baud", "meter.mode", "meter.port", "store.path"):
        assert f"{bad}: {key}: " in result.output


def test_check_cli_reports_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.toml"
    bad.write_text("[meter\nport = 1\n")
    result = CliRunner().invoke(main, ["check", "--config", str(bad)])
    assert result.exit_code == 2 and "(syntax)" in result.output and "line 1" in result.output
    result = CliRunner().invoke(main, ["check", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_check_cli_ok(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(EXAMPLE)])
    assert result.exit_code == 0 and "ok" in result.output


def test_readme_config_reference_is_the_generated_one() -> None:
    from appliance.config_doc import table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert table() in readme, "README config reference is stale: python -m appliance.config_doc"


def test_a_run_folder_too_long_for_the_management_sockets_is_refused() -> None:
    """OpenVPN cuts a management socket path beyond 107 bytes without a word, and the tunnel would
    wait forever for its hold release: verify names paths.run instead (found by the Ansible lab,
    whose run folder lies deep in pytest's temporary tree)."""
    from appliance.config import UNIX_PATH_MAX, verify

    base = {"gateway": {"id": "gw-0001"},
            "parties": [{"name": "dso", "server_name": "dso.example", "remote": {"address": "192.0.2.11"}}],
            "admin": {"server_name": "gwa.example", "remote": {"address": "192.0.2.20"}}}
    fits = "/r/" + "x" * (UNIX_PATH_MAX - len("/r//openvpn-admin.sock") - 1)
    verify({**base, "paths": {"run": fits}})
    with pytest.raises(ConfigError) as caught:
        verify({**base, "paths": {"run": fits + "yy"}})
    assert caught.value.problems[0][0] == "paths.run" or "paths.run" in str(caught.value), caught.value.problems
    assert "openvpn-admin.sock" in str(caught.value) and "Unix socket" in str(caught.value)
