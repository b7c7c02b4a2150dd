"""Starting the portal as a user of its own when ``smgw gateway run`` runs as root.

On a provisioned gateway, systemd starts the portal (``smgw-portal.service``). The unit sets
``User=smgw-portal`` and keeps only CAP_NET_BIND_SERVICE; it sets no-new-privileges and makes
the portal's folder with ``StateDirectory=``. On a board without systemd, ``smgw gateway
run`` as root starts the portal. With ``[portal] user`` it does what the unit does, before
the portal's first instruction. ``setpriv`` sets the user's uids and gids (real, effective,
saved) and its groups from ``/etc/group``. It keeps CAP_NET_BIND_SERVICE only for a port below
1024, and then in the bounding, inheritable and ambient sets alone. It sets
no-new-privileges and starts with a clean environment, so the token PIN, the meter password
and the CA passphrase stay with root. The parent-death signal is set after the ids change
(a change of ids clears it). So no code of the portal ever runs as root.

The user must read ``portal.json``, the store and ``paths.run``: on a provisioned gateway
through group ``smgw``. The portal checks the store itself and says so if it cannot.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from appliance.config import GatewayConfig
from appliance.errors import ConfigError

log = logging.getLogger("smgw.parts")
PRIVILEGED_PORTS = 1024
SOURCE = "smgw gateway run"  #: the errors' source: they stop it before anything starts


@dataclass(frozen=True, slots=True)
class PortalUser:
    name: str
    uid: int
    gid: int


def _refuse(why: str) -> ConfigError:
    return ConfigError(SOURCE, [("portal.user", why)])


def resolve(name: str, store: Path) -> PortalUser:
    """The user, if it is one the portal may run as: not root, not in group root, and not
    the owner of the store (the core's user: the portal only reads the store)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise _refuse(f"{name!r} does not exist; create it (useradd --system --no-create-home "
                      f"--shell /usr/sbin/nologin {name}) or name another") from None
    if entry.pw_uid == 0 or 0 in os.getgrouplist(name, entry.pw_gid):
        raise _refuse(f"{name!r} is root or in group root; the portal needs a user of its own")
    for path in (store, store.parent):
        try:
            owner = path.stat().st_uid
        except OSError:
            continue
        if owner == entry.pw_uid:
            raise _refuse(f"{name!r} owns {path}; the portal only reads the store: give it a user of its own")
    return PortalUser(name, entry.pw_uid, entry.pw_gid)


def setpriv_options(user: PortalUser, port: int) -> list[str]:
    """``setpriv`` options that make the portal ``user`` with nothing of root left."""
    caps = "-all,+net_bind_service" if port < PRIVILEGED_PORTS else "-all"
    return ["--reuid", str(user.uid), "--regid", str(user.gid), "--init-groups", "--no-new-privs", "--reset-env",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"]


def prepare_state_dir(folder: Path, user: PortalUser) -> None:
    """What ``StateDirectory=`` does: the folder is the user's alone, made here if missing.

    Only a folder made by this call is given to the user, through a descriptor opened
    without following links. An existing folder must already be the user's: giving away a
    folder someone else made could give away whatever it links to.
    """
    if not folder.parent.is_dir():
        raise ConfigError(SOURCE, [("portal.state_dir", f"{folder.parent} does not exist")])
    try:
        os.mkdir(folder, 0o700)
        made = True
    except FileExistsError:
        made = False
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(SOURCE, [("portal.state_dir", f"{folder}: {exc.strerror}")]) from None
    try:
        info = os.fstat(fd)
        if made and info.st_uid == 0 and stat.S_ISDIR(info.st_mode):
            os.fchown(fd, user.uid, user.gid)
            os.fchmod(fd, 0o700)
            log.info("made %s for the portal's user %s", folder, user.name)
        elif info.st_uid != user.uid:
            raise ConfigError(SOURCE, [("portal.state_dir", (
                f"{folder} belongs to uid {info.st_uid}, not to {user.name}: chown -R {user.name}: {folder}, "
                "or remove it to have it made"))])
    finally:
        os.close(fd)


def portal_privileges(cfg: GatewayConfig) -> list[str]:
    """The ``setpriv`` options the portal is started with; none when this process is not
    root (systemd started the parts, or a user runs the demo) or no user is configured."""
    portal = cfg.portal
    if portal is None or not portal.enabled or os.geteuid() != 0:
        return []
    if portal.user is None:
        log.warning("the portal starts as root: set [portal] user (e.g. smgw-portal) to run it as a user of its own")
        return []
    user = resolve(portal.user, cfg.store.path)
    prepare_state_dir(portal.state_dir, user)
    return setpriv_options(user, cfg.firewall.portal_port)
