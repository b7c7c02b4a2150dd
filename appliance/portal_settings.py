"""Generate ``portal.json``: all the portal needs to know, and nothing it must not.

The portal gets the store's path (it opens it read-only), its listen address, its TLS
files, the consumers with a SHA-256 of their one-time code (never the code), and the
access profiles as data so it can say them in plain words in German and English. No
token settings, no party endpoints, no keys: the portal cannot tell what it was never told.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from appliance.config import GatewayConfig
from appliance.files import write_atomic
from appliance.profiles import CATALOGUE
from appliance.root_folder import root_folder

SETTINGS_FILE = "portal.json"  #: under ``<paths.rendered>`` after ``smgw apply``


def portal_settings(cfg: GatewayConfig) -> dict[str, Any]:
    portal = cfg.portal
    if portal is None:
        raise ValueError("no [portal] in this config")
    han = cfg.interfaces.han.address
    address = portal.address or (han.ip if han is not None else None)
    return {
        "version": 1,
        "gateway_id": cfg.gateway.id,
        "listen": {"address": str(address), "port": cfg.firewall.portal_port},
        "tls": {"cert": str(portal.tls_cert), "key": str(portal.tls_key)},
        "store": str(cfg.store.path),
        "state_dir": str(portal.state_dir),
        "run_dir": str(cfg.paths.run),
        "timezone": cfg.meter.timezone,
        "threads": portal.threads,
        "max_streams": portal.max_streams,
        "session_hours": portal.session_hours,
        "consumers": [{"name": c.name, "meters": list(c.meters),
                       "setup_code_sha256": hashlib.sha256(c.setup_code.encode()).hexdigest()}
                      for c in portal.consumers],
        "profiles": [{"name": p.name, "party": p.party, "source": p.source,
                      "values": [{"address": a, "unit": CATALOGUE[p.source][a].unit,
                                  "meaning": CATALOGUE[p.source][a].meaning} for a in p.values],
                      "aggregation": p.aggregation, "interval_s": p.interval_s, "resolution": p.resolution,
                      "identity": p.identity, "send_every_s": p.send_every_s, "retention_days": p.retention_days}
                     for p in cfg.profiles],
    }


def render_portal_settings(cfg: GatewayConfig) -> str:
    return json.dumps(portal_settings(cfg), indent=2, sort_keys=True) + "\n"


def settings_path(cfg: GatewayConfig) -> Path:
    return cfg.paths.rendered / SETTINGS_FILE


def install(cfg: GatewayConfig) -> Path:
    """Write ``portal.json`` where the portal looks (``smgw apply`` writes it too, with the rest)."""
    path = settings_path(cfg)
    if os.geteuid() == 0:  # root writes only where nobody else can have planted a link
        root_folder(path.parent, group_from=cfg.paths.state)
    write_atomic(path, render_portal_settings(cfg), 0o640)
    return path
