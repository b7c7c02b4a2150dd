"""What the portal checks about itself before it serves: who it runs as, and that it can read
the store.

The portal never changes its own ids. Whoever starts it does, before exec: systemd's unit
(``User=smgw-portal``), or ``smgw gateway run`` as root with ``[portal] user`` (through
``setpriv``, see ``appliance.portal_user``). So there is no code in this process that runs as
root on purpose. If it runs as root anyway, it says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("smgw.portal")


class PrivilegeError(Exception):
    """The portal cannot do its work as the user it runs as: it does not start."""


def check_identity(store: Path) -> None:
    if 0 in os.getresuid():
        log.warning("serving as root: set [portal] user (e.g. smgw-portal) so that smgw gateway run starts "
                    "the portal as a user of its own, as its systemd unit does")
    check_store(store)


def check_store(store: Path) -> None:
    """Said now, once, rather than as an error on every page: the store must be readable."""
    try:
        store.stat()
    except FileNotFoundError:
        return  # not made yet: nothing to check
    except PermissionError:
        raise PrivilegeError(f"cannot reach the store {store}: the portal's user needs the group of its folder") from None
    if not os.access(store, os.R_OK):
        raise PrivilegeError(f"cannot read the store {store}: the portal's user needs the store's group")
