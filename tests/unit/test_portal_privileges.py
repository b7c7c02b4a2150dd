"""Starting the portal as its user: the decisions before anything starts. The command line
run for real (ids, groups, capabilities, environment, session, parent-death signal, port
443, the refusals that need root) is tests/system/test_portal_han.py and test_parts.py."""

from __future__ import annotations

import logging
import pwd
from pathlib import Path

import pytest

from appliance import portal_user
from appliance.config import GatewayConfig, verify
from appliance.errors import ConfigError
from appliance.portal_user import PortalUser, portal_privileges, resolve, setpriv_options

BIND_SERVICE = "-all,+net_bind_service"


def test_a_user_that_is_missing_root_or_shared_is_refused_with_its_key(tmp_path: Path) -> None:
    store = tmp_path / "smgw.db"
    for name, why in (("no-such-smgw-user", r"'no-such-smgw-user' does not exist; create it \(useradd"),
                      ("root", "'root' is root"), ("nobody", "'nobody' is shared by other services")):
        with pytest.raises(ConfigError, match=f"portal.user: {why}"):
            resolve(name, store)


def _fake_user(monkeypatch: pytest.MonkeyPatch, member: list[int], folders: dict[str, int]) -> None:
    entry = pwd.struct_passwd(("smgw-portal", "x", 998, 997, "", "/nonexistent", "/usr/sbin/nologin"))
    monkeypatch.setattr(portal_user.pwd, "getpwnam", lambda name: entry)
    monkeypatch.setattr(portal_user.os, "getgrouplist", lambda name, gid: member)
    monkeypatch.setattr(portal_user, "_group", lambda path: folders.get(path.name, 0))


def test_groups_are_its_own_and_those_of_the_folders_it_reads(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """Not every group it is in (disk, shadow, softhsm would reach far more than the store)."""
    _fake_user(monkeypatch, [997, 6, 42, 1234], {"state": 1234, "run": 1234, "other": 42})
    user = resolve("smgw-portal", tmp_path / "smgw.db", (tmp_path / "state", tmp_path / "run"))
    assert user.groups == (997, 1234)
    assert setpriv_options(user, 4443)[4:6] == ["--groups", "997,1234"]
    _fake_user(monkeypatch, [997, 0], {})
    with pytest.raises(ConfigError, match="is root or in group root"):
        resolve("smgw-portal", tmp_path / "smgw.db")


def test_the_command_line_keeps_one_capability_and_only_below_1024() -> None:
    user = PortalUser("smgw-portal", 998, 997, (997,))
    low, high = setpriv_options(user, 443), setpriv_options(user, 4443)
    for options in (low, high):
        assert options[:6] == ["--reuid", "998", "--regid", "997", "--groups", "997"]
        assert {"--no-new-privs", "--reset-env"} <= set(options) and "--init-groups" not in options
    assert [o for o in low if "=" in o] == [
        f"--inh-caps={BIND_SERVICE}", f"--ambient-caps={BIND_SERVICE}", f"--bounding-set={BIND_SERVICE}"]
    assert [o for o in high if "=" in o] == ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]


def _config(tmp_path: Path, user: str | None) -> GatewayConfig:
    portal = {"state_dir": str(tmp_path / "portal"), "address": "192.168.7.1"}
    if user is not None:
        portal["user"] = user
    cfg: GatewayConfig = verify({"store": {"path": str(tmp_path / "smgw.db")}, "portal": portal})
    return cfg


def test_only_root_switches_and_root_without_a_user_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    checked: list[str] = []
    monkeypatch.setattr(portal_user, "prepare_state_dir", lambda folder, user: checked.append(f"dir {folder}"))
    monkeypatch.setattr(portal_user, "check_access", lambda options, user, cfg, path: checked.append("access"))
    config = tmp_path / "gateway.toml"
    monkeypatch.setattr(portal_user.os, "geteuid", lambda: 1000)  # systemd started us as a user: nothing to do
    assert portal_privileges(_config(tmp_path, "smgw-portal"), config) == [] and checked == []
    monkeypatch.setattr(portal_user.os, "geteuid", lambda: 0)
    with caplog.at_level(logging.WARNING, logger="smgw.parts"):
        assert portal_privileges(_config(tmp_path, None), config) == []
    assert "the portal starts as root: set [portal] user" in caplog.text and checked == []
    with pytest.raises(ConfigError, match="does not exist"):
        portal_privileges(_config(tmp_path, "no-such-smgw-user"), config)
    assert checked == []  # refused before anything was looked at or made
    _fake_user(monkeypatch, [997], {})
    options = portal_privileges(_config(tmp_path, "smgw-portal"), config)
    assert options[:6] == ["--reuid", "998", "--regid", "997", "--groups", "997"]
    assert checked == ["access", f"dir {tmp_path / 'portal'}"]  # the access check before its folder is made


def test_the_portal_names_a_store_it_cannot_reach_and_serves_all_the_same(tmp_path: Path) -> None:
    from portal.privileges import store_problem

    assert store_problem(tmp_path / "not-made-yet.db") is None
    (tmp_path / "smgw.db").write_bytes(b"")
    assert store_problem(tmp_path / "smgw.db") is None
    assert store_problem(tmp_path / "smgw.db" / "x.db") == f"cannot reach the store {tmp_path}/smgw.db/x.db: Not a directory"
