"""Leaving root, the decisions before any id changes: who may be become, and when nothing
happens. Becoming the user for real is tests/system/test_portal_han.py (root, netns)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from portal import privileges
from portal.privileges import PrivilegeError, leave_root, resolve


def test_a_user_that_is_missing_or_root_is_refused_with_the_key() -> None:
    with pytest.raises(PrivilegeError, match=r"portal.user: 'no-such-smgw-user' does not exist; create it"):
        resolve("no-such-smgw-user")
    with pytest.raises(PrivilegeError, match=r"portal.user: 'root' is root"):
        resolve("root")
    nobody = resolve("nobody")
    assert nobody.uid != 0 and nobody.gid != 0 and 0 not in nobody.groups


def test_as_root_without_a_user_it_says_so_and_changes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    monkeypatch.setattr(privileges.os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileges, "become", lambda who: calls.append(who.name))
    with caplog.at_level(logging.WARNING, logger="smgw.portal"):
        leave_root(None, tmp_path / "state", tmp_path / "smgw.db")
    assert "serving as root: set [portal] user" in caplog.text
    assert calls == [] and not (tmp_path / "state").exists()
    with pytest.raises(PrivilegeError, match="does not exist"):  # refused before anything is touched
        leave_root("no-such-smgw-user", tmp_path / "state", tmp_path / "smgw.db")
    assert calls == [] and not (tmp_path / "state").exists()


def test_not_root_means_nothing_to_leave(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """systemd's unit starts it as its user already: the configured user is not looked up."""
    monkeypatch.setattr(privileges.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(privileges, "resolve", lambda user: pytest.fail("looked up a user while not root"))
    leave_root("smgw-portal", tmp_path / "state", tmp_path / "smgw.db")
    assert not (tmp_path / "state").exists()
