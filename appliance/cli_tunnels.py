"""``smgw tunnels run``: the tunnel supervisor's command.

Its own module, not ``cli_net``'s: that one generates and applies (Jinja2, the templates,
the firewall renderers), and the supervisor, a long-running process of its own, needs none of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from appliance.cli_common import config_option, print_json_line, stop_on_signals
from appliance.errors import SmgwError


def register(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    wrap = clean_errors

    @main.group("tunnels")
    def tunnels_group() -> None:
        """The per-party OpenVPN tunnels."""

    @tunnels_group.command("run")
    @config_option
    @click.option("--seconds", type=click.FloatRange(min=0.1), default=None, help="Stop after this long.")
    @click.option("--party", "parties", multiple=True,
                  help="Only this party's tunnel (repeatable; default all): one unit per party.")
    @wrap
    def tunnels_run_cmd(config_path: Path, seconds: float | None, parties: tuple[str, ...]) -> None:
        """Supervise the rendered tunnels in the foreground; one JSON line per state change."""
        from appliance.config_snapshot import load_in_child
        from appliance.tunnel_service import run_tunnels

        cfg = load_in_child(config_path)  # long-running: verified by a child, no pydantic here
        known = [p.name for p in cfg.parties]
        unknown = [p for p in parties if p not in known]
        if unknown:
            raise SmgwError(f"--party {unknown[0]!r}: no such party in {config_path} (parties: "
                            f"{', '.join(known) or 'none'})")
        stop = threading.Event()
        stop_on_signals(stop)
        run_tunnels(cfg, stop, seconds=seconds, emit=print_json_line, parties=list(parties) or None)
