"""The ``smgw`` command line (ARCHITECTURE §9).

Every command catches the deliberate errors (``EXPECTED_ERRORS``) at the top, prints one
line on stderr and exits with the error's code; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from appliance import config as config_mod
from appliance.cli_common import config_option, stop_on_signals
from appliance.errors import EXPECTED_ERRORS, ConfigError

if TYPE_CHECKING:
    from reader.models import Readout

F = TypeVar("F", bound=Callable[..., Any])


def clean_errors(func: F) -> F:
    """Turn deliberate errors into one stderr line and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            for path, message in exc.problems:
                click.echo(f"{exc.source}: {path}: {message}", err=True)
            sys.exit(exc.exit_code)
        except EXPECTED_ERRORS as exc:
            name = click.get_current_context().command_path
            click.echo(f"{name}: error: {exc}", err=True)
            sys.exit(getattr(exc, "exit_code", 1))

    return wrapper  # type: ignore[return-value]


#: top-level names -> (module, register function) loaded only when that command runs: every
#: smgw process (the core, the tunnel supervisor, the GateWatcher) then carries only its own
#: imports, which on a 512 MB board is tens of megabytes per process
LAZY: dict[str, tuple[str, str]] = {
    "pki": ("appliance.cli_pki", "register"), "cms": ("appliance.cli_cms", "register"),
    "token": ("appliance.cli_token", "register"), "log": ("appliance.cli_log", "register"),
    "render": ("appliance.cli_net", "register"), "apply": ("appliance.cli_net", "register"),
    "tunnels": ("appliance.cli_tunnels", "register"), "status": ("appliance.cli_net", "register"),
    "selftest": ("appliance.cli_net", "register"), "admin": ("appliance.cli_admin", "register"),
    "gatewatcher": ("appliance.cli_admin", "register"), "headend": ("appliance.cli_admin", "register_headend"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            module, function = LAZY[cmd_name]
            getattr(importlib.import_module(module), function)(self, clean_errors)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def main(verbose: int) -> None:
    """smgw: an open Smart Meter Gateway."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _print_human(readout: Readout) -> None:
    ident = readout.identification
    click.echo(f"meter {ident.text} (manufacturer {ident.manufacturer}), {len(readout.readings)} readings")
    for r in readout.readings:
        value = r.value_text()
        shown = value if value is not None else f"({r.status})"
        unit = f" {r.unit}" if r.unit else ""
        stamp = f"  at {r.timestamp.isoformat()}" if r.timestamp else ""
        click.echo(f"  {r.address:<14} {shown}{unit}{stamp}")
    if readout.load_profile is not None:
        click.echo(f"load profile: {len(readout.load_profile)} intervals")
    if readout.logbook is not None:
        click.echo(f"logbook: {len(readout.logbook)} events")


@main.command("read")
@click.option("--port", required=True, help="Serial device of the meter (or the simulator's link).")
@click.option("--baud", type=click.Choice(["300", "600", "1200", "2400", "4800", "9600", "19200"]),
              default="19200", show_default=True, help="Highest speed to switch to.")
@click.option("--address", default="", help="Device address for an addressed sign-on /?ADDR!.")
@click.option("--mode", type=click.Choice(["A", "B", "C", "D", "E"]), default="C", show_default=True,
              help="Protocol mode (E, HDLC, is refused).")
@click.option("--profile", is_flag=True, help="Also read the load profile P.01 (programming mode).")
@click.option("--logbook", is_flag=True, help="Also read the logbook P.98 (programming mode).")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
              default=None, help="Load profile from this time (default: all the meter has).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (ARCHITECTURE §9).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds for the whole readout.")
@click.option("--attempts", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Sign-ons before giving up.")
@click.option("--framing", type=click.Choice(["7E1", "8N1"]), default="7E1", show_default=True)
@click.option("--echo", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Optical head echo suppression.")
@clean_errors
def read_cmd(port: str, baud: str, address: str, mode: str, profile: bool, logbook: bool,
             since: datetime | None, as_json: bool, timeout: float, attempts: int, framing: str,
             echo: str) -> None:
    """Read the meter once. The P1 password comes from $SMGW_METER_PASSWORD (default 00000000)."""
    # here, not at the top: the tunnel supervisor and the GateWatcher run this module too
    from appliance.readout_json import readout_document
    from reader.protocol import SessionOptions
    from reader.transport import read_meter

    if since is not None and since.tzinfo is None:
        since = since.astimezone()
    options = SessionOptions(
        mode=mode,  # type: ignore[arg-type]  # validated by SessionOptions (E refused there)
        address=address,
        max_baud=int(baud),
        attempts=attempts,
        echo=echo,  # type: ignore[arg-type]
        password=os.environ.get("SMGW_METER_PASSWORD", "00000000"),
        load_profile=profile,
        logbook=logbook,
        profile_from=since,
    )
    readout = read_meter(port, options, timeout=timeout, framing=framing)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(readout_document(readout), ensure_ascii=False))
    else:
        _print_human(readout)


@main.command("meter-sim")
@click.option("--link", required=True, type=click.Path(path_type=Path),
              help="Symlink to create for the simulator's pseudo-terminal.")
@click.option("--scenario", default="normal", show_default=True, help="Meter behaviour (see list).")
@click.option("--address", default="12345678", show_default=True, help="Meter device address.")
@clean_errors
def meter_sim_cmd(link: Path, scenario: str, address: str) -> None:
    """Simulate an Iskraemeco MT831 on a pseudo-terminal until interrupted."""
    from reader.sim_pty import run_simulator
    from reader.simulator import SCENARIOS

    if scenario not in SCENARIOS:
        names = ", ".join(sorted(SCENARIOS))
        raise click.BadParameter(f"unknown scenario {scenario!r}; one of: {names}", param_hint="--scenario")
    stop = threading.Event()
    stop_on_signals(stop)
    run_simulator(link, scenario, stop=stop, address=address,
                  password=os.environ.get("SMGW_METER_PASSWORD", "00000000"))


@main.command("check")
@config_option
@click.option("--snapshot", is_flag=True, hidden=True,
              help="Print the verified gateway config as JSON (for the core, which loads no pydantic).")
@click.option("--profiles", is_flag=True, hidden=True,
              help="Verify the JSON list of access profiles on stdin (for the admin API); --config unused.")
@clean_errors
def check_cmd(config_path: Path, snapshot: bool, profiles: bool) -> None:
    """Load and verify a gateway or headend config; print every error with its key path."""
    if profiles:
        from appliance.config_snapshot import profiles_answer

        click.echo(profiles_answer(sys.stdin.read()))
        return
    if snapshot:
        from appliance.config_snapshot import snapshot_answer

        status, text = snapshot_answer(config_path)
        click.echo(text)
        sys.exit(status)
    config_mod.load_any(config_path)
    click.echo(f"{config_path}: ok")


@main.command("demo")
@click.option("--seconds", type=click.FloatRange(min=1), default=None,
              help="Stop after this many seconds (default: run until Ctrl-C).")
@click.option("--poll", type=click.FloatRange(min=1), default=2.0, show_default=True,
              help="Seconds between readouts.")
@click.option("--scenario", default="normal", show_default=True, help="Meter simulator scenario (--simple).")
@click.option("--simple", is_flag=True,
              help="Only the meter, the core and the portal on loopback (no root needed, no namespaces).")
@click.option("--profile", type=click.Choice(["bsi", "modern"]), default="modern", show_default=True,
              help="Crypto profile of the lab's PKI and tunnels.")
@clean_errors
def demo_cmd(seconds: float | None, poll: float, scenario: str, simple: bool, profile: str) -> None:
    """Run the whole system on this machine in network namespaces and show it working (as root)."""
    if simple:
        from appliance.demo import run_demo

        run_demo(seconds, poll, scenario)
        return
    if os.geteuid() != 0:
        why = "the full demo builds network namespaces: run it as root (or use --simple)"
        raise ConfigError("smgw demo", [("(root)", why)])
    from appliance.demo_lab import run_lab_demo

    run_lab_demo(seconds, profile)


@main.group("gateway")
def gateway_group() -> None:
    """The gateway's core service."""


@gateway_group.command("run")
@config_option
@click.option("--readouts", type=click.IntRange(min=1), default=None,
              help="Stop after this many stored readouts (demo and tests).")
@click.option("--core-only", is_flag=True,
              help="Do not start and supervise the tunnels, the GateWatcher and the portal (systemd runs them as units).")
@click.option("--in-process", is_flag=True,
              help="Run the tunnels and the GateWatcher as threads of this process, not as child processes "
                   "(one interpreter: a third of the memory; this process then needs CAP_NET_ADMIN). "
                   "The portal stays a process of its own.")
@clean_errors
def gateway_run_cmd(config_path: Path, readouts: int | None, core_only: bool, in_process: bool) -> None:
    """Run the gateway in the foreground: the core (reader, data processor and sender, logs,
    retention, self-tests) and, as supervised child processes, the tunnels and the GateWatcher."""
    from appliance.config_snapshot import load_in_child
    from appliance.gateway import run_reader_loop
    from appliance.parts import PartSupervisor, ThreadParts, part_commands, part_loops
    from appliance.portal_user import portal_privileges
    from appliance.selftest import can_list_firewall, rendering_in_child

    cfg = load_in_child(config_path)  # verified by a child: this long-running process loads no pydantic
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("smgw").setLevel(logging.INFO)
    def sender_for(config: config_mod.GatewayConfig) -> Any:
        if not config.profiles:
            return None
        from appliance.delivery_service import DeliveryService

        return DeliveryService(config)

    def reload() -> tuple[config_mod.GatewayConfig, Any]:
        fresh = load_in_child(config_path)
        return fresh, sender_for(fresh)

    after = sender_for(cfg)
    stop = threading.Event()
    stop_on_signals(stop)
    if cfg.portal is not None and cfg.portal.enabled and not core_only:
        from appliance.portal_settings import install

        install(cfg)
    parts: PartSupervisor | ThreadParts | None = None
    privileges = {} if core_only else {"portal": portal_privileges(cfg, config_path.absolute())}
    if in_process and not core_only:
        children = part_commands(cfg, str(config_path.absolute()), threads=True)
        parts = ThreadParts(part_loops(cfg), PartSupervisor.for_commands(children, privileges) if children else None)
    elif not core_only:
        parts = PartSupervisor.for_commands(part_commands(cfg, str(config_path.absolute())), privileges)
    if parts is not None:
        parts.start()
    try:
        stats = run_reader_loop(cfg, stop, max_readouts=readouts, after_readout=after, parts=parts, reload=reload,
                                rendering=rendering_in_child(config_path.absolute()) if can_list_firewall() else None)
    finally:
        if parts is not None:
            parts.stop()
    click.echo(f"stopped: {stats.readouts} readouts stored, {stats.failures} failures", err=True)


if __name__ == "__main__":
    main()
