"""The tunnels' last known states: one file per tunnel under ``<paths.run>/tunnels/``.

One file per tunnel rather than one for all because each party's tunnel may have its own
supervisor process (``smgw-tunnel-<party>.service``): writers never overwrite each other's
states, and a reader (the sender, ``smgw status``, the portal) merges the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from appliance.files import write_atomic

FOLDER = "tunnels"


def write_states(run: Path, docs: Iterable[dict[str, Any]]) -> None:
    for doc in docs:
        # 0644: the portal (another user) shows it; it holds no secret
        write_atomic(run / FOLDER / f"{doc['name']}.json", json.dumps(doc), 0o644)


def read_states(run: Path, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The states on file (only ``names`` if given), by name; unreadable files are skipped."""
    wanted = None if names is None else set(names)
    out = []
    for path in sorted((run / FOLDER).glob("*.json")):
        if wanted is not None and path.stem not in wanted:
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("name") == path.stem:
            out.append(doc)
    return out


def forget_others(run: Path, names: Iterable[str]) -> list[str]:
    """Remove the states of tunnels no longer configured (``smgw apply`` after a party left),
    so that no reader shows or routes to a tunnel that is gone; returns their names."""
    keep = set(names)
    gone: list[str] = []
    # apply runs this as root in a folder user smgw owns: listed and unlinked through the
    # folder's descriptor, so a symlink put in the folder's place is never followed
    try:
        folder = os.open(run / FOLDER, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # missing (no tunnel ran yet), or not a folder: nothing of ours to forget
        return gone
    try:
        for name in sorted(os.listdir(folder)):
            stem, dot, ext = name.rpartition(".")
            if dot and ext == "json" and stem not in keep:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(name, dir_fd=folder)
                    gone.append(stem)
    finally:
        os.close(folder)
    return gone
