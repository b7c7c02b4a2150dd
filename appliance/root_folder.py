"""The folder ``smgw apply`` renders into: root's, and changeable by root alone.

The services run what lies there: the tunnel supervisor starts openvpn on the rendered
configs with the CAP_NET_ADMIN its unit hands it, and root's nft loads the last good
ruleset kept there. Whoever can change or swap that folder can therefore get a capability
(an OpenVPN ``plugin`` or ``up`` line) or a ruleset of their own, and a root process writing
through a link someone else planted writes wherever that someone likes. So before apply
writes a byte: every folder from ``/`` down is root's, none is a symlink, and none is
writable by anyone else, except a shared folder such as ``/tmp`` whose sticky bit keeps
others from renaming root's entries. Below a folder like that only root can place anything,
and plain writes by path are safe (the StrictModes rule of OpenSSH and sudo).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from appliance.errors import SmgwError

MODE = 0o750  #: the services' group reads, nobody else


def root_folder(path: Path, gid: int) -> Path:
    """Check (and make, if missing) ``path`` as a folder only root may change, group ``gid``."""
    for folder in reversed(path.parents):  # / first
        _only_root_changes(folder, shared_ok=True)
    try:
        os.mkdir(path, MODE)
        os.chmod(path, MODE, follow_symlinks=False)  # (whatever the umask)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SmgwError(f"{path}: cannot make the folder: {exc.strerror}") from None
    if _only_root_changes(path, shared_ok=False).st_gid != gid:
        os.chown(path, 0, gid, follow_symlinks=False)  # (a setgid bit an operator set stays)
    return path


def state_group(state: Path) -> int:
    """The services' group: the state folder's, which provisioning makes for user smgw (made
    here, root's, if missing, as the store would make it)."""
    try:
        state.mkdir(mode=0o750, parents=True, exist_ok=True)
        return state.stat().st_gid
    except OSError as exc:
        raise SmgwError(f"paths.state {state}: {exc.strerror}") from None


def _only_root_changes(folder: Path, *, shared_ok: bool) -> os.stat_result:
    try:
        info = os.lstat(folder)
    except OSError as exc:
        raise SmgwError(f"{folder}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise SmgwError(f"{folder} is a symlink: give the real path (a link's folder's owner could point it "
                        "elsewhere)")
    if not stat.S_ISDIR(info.st_mode):
        raise SmgwError(f"{folder} is not a folder")
    if info.st_uid != 0:
        raise SmgwError(f"{folder} belongs to uid {info.st_uid}, not root: root's rendered configs must not "
                        "lie where another user could swap them")
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if others_write and not (shared_ok and info.st_mode & stat.S_ISVTX):
        raise SmgwError(f"{folder} is writable by others (mode {stat.S_IMODE(info.st_mode):o}): root's rendered "
                        "configs must not lie where another user could swap them")
    return info


def retire(state: Path, names: tuple[str, ...]) -> list[str]:
    """Remove what older smgw versions rendered into the state folder (user smgw's), so no
    service can be pointed at it again. By name in that folder: a symlink found there is
    removed itself, never followed (``shutil.rmtree`` works by folder descriptors)."""
    removed = []
    for name in names:
        path = state / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(str(path))
    return removed
