"""Starting the portal as a user of its own when ``smgw gateway run`` runs as root.

On a provisioned gateway, systemd starts the portal (``smgw-portal.service``: ``User=``,
hardening, ``InaccessiblePaths=`` for the secrets). On a board without systemd, ``smgw gateway
run`` as root starts it. With ``[portal] user`` it starts it through one ``setpriv``, before
the portal's first instruction: the user's uids and gids (real, effective, saved), as
supplementary groups only those of the gateway's folders it must read, no-new-privileges, a
clean environment (the token PIN and the meter password stay with root), no capability but
CAP_NET_BIND_SERVICE for a port below 1024, and the parent-death signal set after the ids
change (a change of ids clears it). The supervisor adds a session of its own and a pipe for
its output (``appliance.parts``). So no code of the portal ever runs as root.

That is less than the unit does (no read-only root, no private /tmp, no system call filter,
no memory limit), so what the unit hides is checked instead: ``gateway run`` refuses a user
that can read a secret (the config with the households' one-time codes, the PIN, the meter
password, the tunnels' keys, the token's files) or write the gateway's state, as that user
(``setpriv ... test``, which sees groups and ACLs as the portal will).

The user must read ``portal.json``, the store and ``paths.run``: on a provisioned gateway
through group ``smgw``. The portal checks the store itself and logs it if it cannot.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliance.child import SETPRIV
from appliance.config import GatewayConfig
from appliance.errors import ConfigError
from appliance.portal_settings import settings_path

log = logging.getLogger("smgw.parts")
PRIVILEGED_PORTS = 1024
SOURCE = "smgw gateway run"  #: the errors' source: they stop it before anything starts


NOBODY = 65534  #: shared by whatever else runs as nobody: any of it could trace the portal


@dataclass(frozen=True, slots=True)
class PortalUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()  #: supplementary groups: its own and those of the folders it reads


def _refuse(why: str) -> ConfigError:
    return ConfigError(SOURCE, [("portal.user", why)])


def resolve(name: str, store: Path, reads: tuple[Path, ...] = ()) -> PortalUser:
    """The user, if it is one the portal may run as: its own (not root, not nobody, not in
    group root), not the owner of the store (the core's user). Its supplementary groups are
    its own and, of the groups of ``reads`` (the folders it must read), those it is in."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise _refuse(f"{name!r} does not exist; create it (useradd --system --no-create-home "
                      f"--shell /usr/sbin/nologin {name}) or name another") from None
    member = os.getgrouplist(name, entry.pw_gid)
    if entry.pw_uid == 0 or entry.pw_gid == 0 or 0 in member:
        raise _refuse(f"{name!r} is root or in group root; the portal needs a user of its own")
    if entry.pw_uid == NOBODY:
        raise _refuse(f"{name!r} is shared by other services, which could trace the portal; give it a user of its own")
    for path in (store, store.parent):
        try:
            owner = path.stat().st_uid
        except OSError:
            continue
        if owner == entry.pw_uid:
            raise _refuse(f"{name!r} owns {path}; the portal only reads the store: give it a user of its own")
    wanted = {entry.pw_gid} | {_group(path) for path in reads}
    return PortalUser(name, entry.pw_uid, entry.pw_gid, tuple(sorted(g for g in set(member) & wanted if g)))


def _group(path: Path) -> int:
    try:
        return path.stat().st_gid
    except OSError:
        return 0


def setpriv_options(user: PortalUser, port: int) -> list[str]:
    """``setpriv`` options that make the portal ``user`` with nothing of root left."""
    caps = "-all,+net_bind_service" if port < PRIVILEGED_PORTS else "-all"
    groups = ",".join(str(g) for g in user.groups or (user.gid,))
    return ["--reuid", str(user.uid), "--regid", str(user.gid), "--groups", groups, "--no-new-privs", "--reset-env",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"]


def _secrets(cfg: GatewayConfig, config_path: Path) -> list[Path]:
    """What the portal's unit makes inaccessible, and the rest of what only the core may read."""
    tunnels = [(p.name, p.tls_crypt_v2_key) for p in cfg.parties]
    if cfg.admin is not None:
        tunnels.append(("admin", cfg.admin.tls_crypt_v2_key))
    found = [config_path, cfg.meter.password_file, cfg.token.pin_file, cfg.token.store_dir,
             *(key or cfg.paths.state / "openvpn" / f"{name}.tc.key" for name, key in tunnels)]
    return [path for path in found if path is not None and path.exists()]


def _as_user(options: list[str], test: str, path: Path) -> bool:
    """``test -r``/``-w`` as the portal will be: its ids and groups, ACLs included."""
    if SETPRIV is None:
        raise RuntimeError("setpriv (util-linux) is missing: cannot start the portal as its user")
    return subprocess.run([SETPRIV, *options, "--", "test", test, str(path)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode == 0


def _read_folders(cfg: GatewayConfig) -> tuple[Path, ...]:
    """The gateway's folders the portal reads in: its groups come from these."""
    return cfg.store.path.parent, cfg.paths.state, cfg.paths.run, settings_path(cfg).parent


def check_access(options: list[str], user: str, cfg: GatewayConfig, config_path: Path) -> None:
    """Refuse a user that could read a secret, or write what it reads of the gateway's."""
    for path in _secrets(cfg, config_path):
        if _as_user(options, "-r", path):
            raise _refuse(f"{user!r} can read {path}, which only the core may: take the user out of the group "
                          "that can, or the file's mode")
    for path in (cfg.store.path, settings_path(cfg), *_read_folders(cfg)):
        if path.exists() and _as_user(options, "-w", path):
            raise _refuse(f"{user!r} can write {path}; the portal only reads the gateway's files")


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
            log.info("made %s for the portal's user %s", folder, user.name)
        elif info.st_uid != user.uid:
            hint = f"chown -R {user.name}: {folder} if root made it, else remove it" if info.st_uid == 0 else \
                "remove it to have it made"
            why = f"{folder} belongs to uid {info.st_uid}, not to {user.name}: {hint}"
            raise ConfigError(SOURCE, [("portal.state_dir", why)])
        os.fchmod(fd, 0o700)  # the user's alone, as StateDirectoryMode= keeps it
    finally:
        os.close(fd)


def portal_privileges(cfg: GatewayConfig, config_path: Path) -> list[str]:
    """The ``setpriv`` options the portal is started with; none when this process is not
    root (systemd started the parts, or a user runs the demo) or no user is configured."""
    portal = cfg.portal
    if portal is None or not portal.enabled or os.geteuid() != 0:
        return []
    if portal.user is None:
        log.warning("the portal starts as root: set [portal] user (e.g. smgw-portal) to run it as a user of its own")
        return []
    user = resolve(portal.user, cfg.store.path, _read_folders(cfg))
    options = setpriv_options(user, cfg.firewall.portal_port)
    check_access(options, portal.user, cfg, config_path)
    prepare_state_dir(portal.state_dir, user)
    return options
