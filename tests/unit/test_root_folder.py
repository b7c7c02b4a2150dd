"""The folder apply renders into is root's and only root's: made so, or refused with the
folder and the reason when another user could swap it; what older versions rendered into the
state folder (user smgw's) is removed without following anything planted there."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.config import validate
from appliance.config_net import Paths
from appliance.errors import SmgwError
from appliance.root_folder import retire, root_folder
from tests.tools import missing

NOBODY = 65534


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder of root's, 0755, under /tmp (sticky, shared): as apply meets /var/lib."""
    if os.geteuid() != 0:
        missing("root (the folders' owners are the point)")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        folder.chmod(0o755)
        yield folder


def _state(base: Path, gid: int) -> Path:
    """A state folder of group ``gid``, as provisioning makes it for the services."""
    state = base / f"state-{gid}"
    state.mkdir(exist_ok=True)
    os.chown(state, NOBODY, gid)
    return state


def test_the_folder_is_made_root_s_group_readable_and_checked_again(base: Path) -> None:
    made = root_folder(base / "smgw-rendered", group_from=_state(base, 1234))
    info = made.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 1234, 0o750)
    (made / "keep").write_text("x")
    made.chmod(0o755)  # readable by all: closed again
    # the group root gave it stays: the state folder's (where a new group comes from) is smgw's to change
    again = root_folder(made, group_from=_state(base, 4321)).stat()
    assert (again.st_gid, stat.S_IMODE(again.st_mode)) == (1234, 0o750) and (made / "keep").exists()


@pytest.mark.parametrize("spoil", ["subfolder owned by smgw", "subfolder group-writable", "symlink inside"])
def test_a_tree_with_a_folder_another_user_could_change_is_refused(base: Path, spoil: str) -> None:
    folder = root_folder(base / "smgw-rendered", group_from=base)
    (folder / "openvpn").mkdir(mode=0o750)
    if spoil == "subfolder owned by smgw":
        os.chown(folder / "openvpn", NOBODY, 0)
    elif spoil == "subfolder group-writable":
        (folder / "openvpn").chmod(0o770)
    else:
        (folder / "openvpn" / "dso.conf").symlink_to(base)
    with pytest.raises(SmgwError, match="openvpn"):
        root_folder(folder, group_from=base)


@pytest.mark.parametrize("spoil", ["folder owned by smgw", "folder group-writable", "parent owned by smgw",
                                   "parent world-writable", "folder a symlink", "parent a symlink", "a file"])
def test_a_folder_another_user_could_swap_is_refused_with_where_and_why(base: Path, spoil: str) -> None:
    parent, folder = base / "lib", base / "lib" / "smgw-rendered"
    parent.mkdir(mode=0o755)
    folder.mkdir(mode=0o750)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir(mode=0o750)
    if spoil == "folder owned by smgw":
        os.chown(folder, NOBODY, 0)
    elif spoil == "folder group-writable":
        folder.chmod(0o770)
    elif spoil == "parent owned by smgw":
        os.chown(parent, NOBODY, 0)
    elif spoil == "parent world-writable":
        parent.chmod(0o777)  # no sticky bit: anyone may rename root's folder away
    elif spoil == "folder a symlink":
        folder.rmdir()
        folder.symlink_to(elsewhere)
    elif spoil == "parent a symlink":
        folder.rmdir()
        parent.rmdir()
        parent.symlink_to(elsewhere)
        folder = parent / "smgw-rendered"
    else:
        folder.rmdir()
        folder.write_text("not a folder")
    with pytest.raises(SmgwError) as refused:
        root_folder(folder, group_from=base)
    message = str(refused.value)
    assert str(parent if "parent" in spoil else folder) in message
    assert any(why in message for why in ("not root", "writable by others", "symlink", "not a folder")), message
    assert list(elsewhere.iterdir()) == []  # nothing made through a link


def test_retire_removes_old_renders_by_name_never_through_a_link(base: Path) -> None:
    state = base / "state"
    (state / "rendered" / "openvpn").mkdir(parents=True)
    (state / "rendered" / "openvpn" / "dso.conf").write_text("client\n")
    victim = base / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    (state / "rendered" / "openvpn" / "link").symlink_to(victim)
    (state / "firewall.loaded").symlink_to(victim / "precious")
    (state / "smgw.db").write_text("the store stays")
    removed, left = retire(state, ("rendered", "firewall.loaded", "nftables.last-good.conf"))
    assert (removed, left) == ([str(state / "rendered"), str(state / "firewall.loaded")], [])
    assert sorted(p.name for p in state.iterdir()) == ["smgw.db"]
    assert (victim / "precious").read_text() == "keep me"
    # a folder user smgw made under the old name is not an old render: left, and said so
    (state / "rendered").mkdir()
    os.chown(state / "rendered", NOBODY, NOBODY)
    removed, left = retire(state, ("rendered",))
    assert removed == [] and len(left) == 1 and left[0].startswith(f"{state / 'rendered'}: not root's")


def test_paths_render_beside_the_state_never_inside_it() -> None:
    assert Paths().rendered == Path("/var/lib/smgw-rendered")
    assert validate(Paths, {}) == Paths()
    assert validate(Paths, {"state": "/srv/gw/state"}).rendered == Path("/srv/gw/state-rendered")
    for inside in ("/srv/gw/state/rendered", "/srv/gw/state", "/srv/gw"):
        with pytest.raises(ValidationError, match="must lie outside state"):
            validate(Paths, {"state": "/srv/gw/state", "rendered": inside})
    with pytest.raises(ValidationError, match="system folder"):
        validate(Paths, {"rendered": "/etc"})
