"""``smgw log show|verify``: read the audit logs and check their chains.

``verify`` exits 3 when it finds tampering (2 stays "bad config", 1 "could not check"), so a
monitoring job can tell "someone edited the log" from "the check itself failed".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from appliance import config as config_mod
from appliance.audit import mac_source
from appliance.audit_chain import LOGS, ChainRow, verify
from appliance.cli_common import config_option
from appliance.store import Store

TAMPERED_EXIT = 3


def _row_doc(row: ChainRow) -> dict[str, object]:
    return {"log": row.log, "seq": row.seq, "at": row.at, "event": row.event, "consumer": row.consumer,
            "detail": json.loads(row.detail)}


def _since(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def register(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    @main.group("log")
    def log_group() -> None:
        """The audit logs: system (for the GWA), calibration, consumer."""

    @log_group.command("show")
    @config_option
    @click.option("--log", "log_name", type=click.Choice(LOGS), default="system", show_default=True)
    @click.option("--since", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
                  default=None, help="Rows from this time on (UTC unless an offset is given).")
    @click.option("--consumer", default=None, help="Only this consumer's rows (meter id).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @clean_errors
    def show_cmd(config_path: Path, log_name: str, since: datetime | None, consumer: str | None,
                 as_json: bool) -> None:
        """Print a log's rows, oldest first."""
        cfg = config_mod.load(config_path)
        with Store.open(Path(cfg.store.path), read_only=True) as store:
            rows = store.audit_rows(log_name, since=_since(since), consumer=consumer)
        for row in rows:
            if as_json:
                click.echo(json.dumps(_row_doc(row), ensure_ascii=False))
            else:
                who = f" [{row.consumer}]" if row.consumer else ""
                # repr-style detail: a value with a newline cannot forge a second line
                click.echo(f"{row.seq:>7} {row.at} {row.event}{who} {row.detail}")

    @log_group.command("verify")
    @config_option
    @click.option("--log", "log_names", type=click.Choice(LOGS), multiple=True,
                  help="Check only this log (repeatable; default all three).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object with the findings per log.")
    @clean_errors
    def verify_cmd(config_path: Path, log_names: tuple[str, ...], as_json: bool) -> None:
        """Check the hash chains; name every changed, deleted, inserted or reordered row."""
        cfg = config_mod.load(config_path)
        result: dict[str, dict[str, object]] = {}
        bad = False
        with Store.open(Path(cfg.store.path), read_only=True) as store, \
                mac_source(cfg, create=False)() as mac:
            for name in log_names or LOGS:
                rows = store.audit_rows(name)
                findings = verify(name, rows, mac)
                bad = bad or bool(findings)
                result[name] = {"rows": len(rows), "intact": not findings,
                                "findings": [{"seq": f.seq, "kind": f.kind, "message": f.message} for f in findings]}
                if not as_json:
                    state = "intact" if not findings else f"{len(findings)} problem(s)"
                    click.echo(f"{name} log: {len(rows)} rows, {state}")
                    for finding in findings:
                        click.echo(f"  {finding}")
        if as_json:
            click.echo(json.dumps({"key": cfg.logs.key, "logs": result}))
        if bad:
            raise SystemExit(TAMPERED_EXIT)
