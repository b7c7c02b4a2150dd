"""Starting the portal as its user: the decisions before anything starts. The command line
run for real (ids, capabilities, environment, parent-death signal, port 443) is
tests/system/test_portal_han.py (root, netns)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance import portal_user
from appliance.config import verify
from appliance.errors import ConfigError
from appliance.portal_user import PortalUser, portal_privileges, resolve, setpriv_options

BIND_SERVICE = "-all,+net_bind_service"


def test_a_user_that_is_missing_or_root_is_refused_with_its_key(tmp_path: Path) -> None:
    store = tmp_path / "smgw.db"
    with pytest.raises(ConfigError, match=r"portal.user: 'no-such-smgw-user' does not exist; create it \(useradd"):
        resolve("no-such-smgw-user", store)
    with pytest.raises(ConfigError, match=r"portal.user: 'root' is root"):
        resolve("root", store)
    nobody = resolve("nobody", store)
    assert nobody.uid != 0 and nobody.gid != 0


def test_the_command_line_keeps_one_capability_and_only_below_1024() -> None:
    user = PortalUser("smgw-portal", 998, 997)
    low, high = setpriv_options(user, 443), setpriv_options(user, 4443)
    for options in (low, high):
        assert options[:4] == ["--reuid", "998", "--regid", "997"]
        assert {"--init-groups", "--no-new-privs", "--reset-env"} <= set(options)
    assert [o for o in low if "=" in o] == [
        f"--inh-caps={BIND_SERVICE}", f"--ambient-caps={BIND_SERVICE}", f"--bounding-set={BIND_SERVICE}"]
    assert [o for o in high if "=" in o] == ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]


def _config(tmp_path: Path, user: str | None) -> object:
    portal = {"state_dir": str(tmp_path / "portal"), "address": "192.168.7.1"}
    if user is not None:
        portal["user"] = user
    return verify({"store": {"path": str(tmp_path / "smgw.db")}, "portal": portal})


def test_only_root_switches_and_root_without_a_user_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(portal_user, "prepare_state_dir", lambda folder, user: None)
    monkeypatch.setattr(portal_user.os, "geteuid", lambda: 1000)  # systemd started us as a user: nothing to do
    assert portal_privileges(_config(tmp_path, "nobody")) == []  # type: ignore[arg-type]
    monkeypatch.setattr(portal_user.os, "geteuid", lambda: 0)
    with caplog.at_level(logging.WARNING, logger="smgw.parts"):
        assert portal_privileges(_config(tmp_path, None)) == []  # type: ignore[arg-type]
    assert "the portal starts as root: set [portal] user" in caplog.text
    options = portal_privileges(_config(tmp_path, "nobody"))  # type: ignore[arg-type]
    assert options[:2] == ["--reuid", str(resolve("nobody", tmp_path / "smgw.db").uid)]
    with pytest.raises(ConfigError, match="does not exist"):
        portal_privileges(_config(tmp_path, "no-such-smgw-user"))  # type: ignore[arg-type]
