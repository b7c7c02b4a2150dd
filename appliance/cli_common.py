"""What the CLI modules share: the ``--config`` option and stopping on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click

from appliance.config import DEFAULT_CONFIG_PATH

config_option = click.option("--config", "config_path", type=click.Path(path_type=Path),
                             default=DEFAULT_CONFIG_PATH, show_default=True)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM (systemd) and SIGINT (Ctrl-C) end the foreground loops cleanly."""

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def print_json_line(doc: dict[str, object]) -> None:
    """One JSON object per line, flushed: the foreground services' output that tests and
    the demo read as it comes."""
    click.echo(json.dumps(doc))
    sys.stdout.flush()
