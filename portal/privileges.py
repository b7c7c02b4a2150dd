"""Leaving root: the household's web server never answers a request as root.

Under systemd the unit starts the portal as its own user (``User=smgw-portal``) and there is
nothing to leave. ``smgw gateway run`` as root (a board without systemd, the demo, the tests)
starts it as root. With ``[portal] user`` set, the portal then binds its port while it is
still root (so 443 needs no capability), gives its own folder to that user, and becomes that
user for good (all three uids and gids, its supplementary groups from ``/etc/group``). It
does this before it makes a certificate, opens a database or reads a request. Without
``user`` it serves as root and says so in its log: the warning names the key that ends it.

The user must reach the gateway's store read-only. On a provisioned gateway it is in the
store's group (``smgw``). It needs nothing else, and the portal refuses a user that is root
or in group root.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("smgw.portal")


class PrivilegeError(Exception):
    """The configured user cannot be used, or becoming it failed: the portal does not start."""


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  #: supplementary groups, from /etc/group (the primary one included)


def resolve(user: str) -> Identity:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(
            f"portal.user: {user!r} does not exist; create it (useradd --system --no-create-home "
            f"--shell /usr/sbin/nologin {user}) or name another") from None
    groups = tuple(os.getgrouplist(user, entry.pw_gid))
    if entry.pw_uid == 0 or 0 in groups:
        raise PrivilegeError(f"portal.user: {user!r} is root or in group root; the portal needs a user of its own")
    return Identity(user, entry.pw_uid, entry.pw_gid, groups)


def hand_over(folder: Path, who: Identity) -> None:
    """The portal's own folder (accounts, sessions, its TLS key) belongs to ``who``, mode 0700.

    A folder left by an earlier run as root is given over with the regular files in it. The
    folder is root's own at that moment, so nothing in it can be a link planted by a user.
    A folder owned by anyone else is not touched: that is a configuration error, reported.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise PrivilegeError(f"portal.state_dir: {folder} is not a folder")
    if info.st_uid == who.uid:
        return
    if info.st_uid != 0:
        raise PrivilegeError(f"portal.state_dir: {folder} belongs to uid {info.st_uid}, not to {who.name}")
    for entry in os.scandir(folder):
        found = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(found.st_mode) and found.st_uid == 0:
            os.chown(entry.path, who.uid, who.gid, follow_symlinks=False)
    os.chown(folder, who.uid, who.gid, follow_symlinks=False)
    os.chmod(folder, 0o700)
    log.info("gave %s to %s", folder, who.name)


def become(who: Identity) -> None:
    """All real, effective and saved ids, so there is no way back (checked, not assumed)."""
    os.setgroups(list(who.groups))
    os.setresgid(who.gid, who.gid, who.gid)
    os.setresuid(who.uid, who.uid, who.uid)
    try:
        os.setresuid(0, 0, 0)
    except PermissionError:
        return
    raise PrivilegeError(f"became {who.name} but could become root again; not serving")


def leave_root(user: str | None, state_dir: Path, store: Path) -> None:
    """Become ``user`` if this process is root; nothing to do when it is not (systemd's unit)."""
    if os.geteuid() != 0:
        return
    if user is None:
        log.warning("serving as root: set [portal] user (e.g. smgw-portal) so the portal runs as a user of its own")
        return
    who = resolve(user)
    hand_over(state_dir, who)
    python = [p for p in dict.fromkeys([sysconfig.get_paths()["stdlib"], *sys.path]) if p and os.path.isdir(p)]
    become(who)
    _check_python(python, who)
    _check_store(store, who)
    log.info("serving as %s (uid %d)", who.name, who.uid)


def _check_python(folders: list[str], who: Identity) -> None:
    """Python imports some modules only when first used (a request may need one): every
    folder it imports from must stay readable, or a page fails at some later request."""
    for folder in folders:
        if not os.access(folder, os.R_OK | os.X_OK):
            raise PrivilegeError(f"{who.name} cannot read {folder}, where Python imports from: install "
                                 "Python and smgw where the portal's user can read them (Debian's python3 is)")


def _check_store(store: Path, who: Identity) -> None:
    """Said now, once, rather than as an error on every page: the user must read the store."""
    try:
        store.stat()
    except FileNotFoundError:
        return  # not made yet: nothing to check
    except PermissionError:
        raise PrivilegeError(f"{who.name} cannot reach the store {store}: put it in the group of the store's "
                             "folder") from None
    if not os.access(store, os.R_OK):
        raise PrivilegeError(f"{who.name} cannot read the store {store}: put it in the store's group")
