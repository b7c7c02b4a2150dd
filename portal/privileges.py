"""What the portal checks about itself before it serves: who it runs as, and that it can read
the store. It says what is wrong in its log and serves all the same.

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


def check_identity(store: Path) -> None:
    """Warnings, not refusals: a portal that cannot read the store yet still serves its
    login page, and the error on its data pages then has this line to explain it."""
    if 0 in os.getresuid():
        log.warning("serving as root: set [portal] user (e.g. smgw-portal) so that smgw gateway run starts "
                    "the portal as a user of its own, as its systemd unit does")
    problem = store_problem(store)
    if problem is not None:
        log.error("%s", problem)


def store_problem(store: Path) -> str | None:
    try:
        store.stat()
    except FileNotFoundError:
        return None  # not made yet: nothing to check
    except PermissionError:
        return f"cannot reach the store {store}: the portal's user needs the group of its folder"
    except OSError as exc:
        return f"cannot reach the store {store}: {exc.strerror}"
    if not os.access(store, os.R_OK):
        return f"cannot read the store {store}: the portal's user needs the store's group"
    return None
