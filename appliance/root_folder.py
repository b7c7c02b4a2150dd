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


def root_folder(path: Path, group_from: Path) -> Path:
    """Check (and make, if missing) ``path`` as a folder only root may change. A folder made
    here gets the group of ``group_from`` (the state folder: the services'); an existing one
    keeps the group root gave it (the state folder's group is smgw's to change; this one's is not)."""
    for folder in reversed(path.parents):  # / first
        _only_root_changes(folder, shared_ok=True)
    try:
        os.mkdir(path, MODE)
        os.chown(path, 0, _group_of(group_from), follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SmgwError(f"{path}: cannot make the folder: {exc.strerror}") from None
    info = _only_root_changes(path, shared_ok=False)
    if stat.S_IMODE(info.st_mode) & ~stat.S_ISGID != MODE:  # (a setgid bit an operator set stays)
        os.chmod(path, MODE | (info.st_mode & stat.S_ISGID), follow_symlinks=False)
    _tree_only_root_changes(path)
    return path


def _tree_only_root_changes(top: Path) -> None:
    """Every folder below is root's and writable by nobody else, and nothing is a symlink:
    apply writes below by path, and reuses what folders it finds."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for folder, folders, files, folder_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            for name in folders + files:
                info = os.lstat(name, dir_fd=folder_fd)
                where = top / folder / name
                if stat.S_ISLNK(info.st_mode):
                    raise SmgwError(f"{where} is a symlink: nothing in root's rendered folder may point elsewhere")
                if stat.S_ISDIR(info.st_mode):
                    _judge(where, info, shared_ok=False)
    finally:
        os.close(fd)


def _only_root_changes(folder: Path, *, shared_ok: bool) -> os.stat_result:
    try:
        info = os.lstat(folder)
    except OSError as exc:
        raise SmgwError(f"{folder}: {exc.strerror}") from None
    return _judge(folder, info, shared_ok=shared_ok)


def _judge(folder: Path, info: os.stat_result, *, shared_ok: bool) -> os.stat_result:
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


def _group_of(state: Path) -> int:
    """The services' group: the state folder's, which provisioning makes for user smgw (made
    here, root's, if missing, as the store would make it)."""
    try:
        state.mkdir(mode=0o750, parents=True, exist_ok=True)
        return state.stat().st_gid
    except OSError as exc:
        raise SmgwError(f"paths.state {state}: {exc.strerror}") from None


def retire(state: Path, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Remove what older smgw versions rendered into the state folder (user smgw's), so no
    service can be pointed at it again: (what was removed, what was left and why). By name
    in that folder, never following a link: a file or link is unlinked; a folder only if root
    owns it (older applies made it; user smgw cannot have filled it) and with every error
    caught, so nothing planted there can stop an apply."""
    removed, left = [], []
    for name in names:
        path = state / name
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode):
                path.unlink()
            elif info.st_uid == 0:
                shutil.rmtree(path)  # by folder descriptors: links inside are removed, not followed
            else:
                left.append(f"{path}: not root's, so not what an older apply rendered; left as it is")
                continue
        except FileNotFoundError:
            continue
        except (OSError, RecursionError) as exc:
            left.append(f"{path}: cannot remove it: {exc}")
            continue
        removed.append(str(path))
    return removed, left
