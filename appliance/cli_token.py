"""``smgw token ...``: the gateway's security module. The PIN comes from ``--pin-file``
(mode 0600) or ``$SMGW_TOKEN_PIN``; never from an argument."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization

from appliance.config_net import AUDIT_KEY
from pki.encoding import read_certificate
from pki.token import DEFAULT_MODULE, Token, read_pin
from pki.token_init import init_softhsm_token

_token = click.option("--token", "token_label", default="smgw", show_default=True, help="Token label.")
_module = click.option("--module", type=click.Path(path_type=Path), default=DEFAULT_MODULE, show_default=True,
                       help="PKCS#11 module.")
_pin = click.option("--pin-file", type=click.Path(path_type=Path), default=None,
                    help="File with the user PIN (mode 0600); default $SMGW_TOKEN_PIN.")


def _open(token_label: str, module: Path, pin_file: Path | None) -> Token:
    return Token(token_label, read_pin(pin_file), module)


def register(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    wrap = clean_errors

    @main.group("token")
    def token_group() -> None:
        """Gateway keys inside the PKCS#11 token: init, status, list, keygen, csr, import."""

    @token_group.command("init")
    @_token
    @_module
    @_pin
    @click.option("--so-pin-file", type=click.Path(path_type=Path), default=None,
                  help="File with the SO PIN (mode 0600); default $SMGW_TOKEN_SO_PIN.")
    @wrap
    def init_cmd(token_label: str, module: Path, pin_file: Path | None, so_pin_file: Path | None) -> None:
        """Initialise a SoftHSM2 token (PINs typed into a private pty, never on a command line)."""
        pin = read_pin(pin_file)
        init_softhsm_token(token_label, read_pin(so_pin_file, env="SMGW_TOKEN_SO_PIN"), pin, module=module)
        # the audit logs' HMAC key is born with the token, before any service could race to make it
        Token(token_label, pin, module).generate_secret(AUDIT_KEY)
        click.echo(f"token {token_label}: initialised, with secret key {AUDIT_KEY} for the audit logs")

    @token_group.command("status")
    @_token
    @_module
    @_pin
    @wrap
    def status_cmd(token_label: str, module: Path, pin_file: Path | None) -> None:
        """Log in and count the keys (proves the token and PIN work)."""
        keys = _open(token_label, module, pin_file).keys()
        click.echo(f"token {token_label}: ok, {len(keys)} keys, {sum(k.has_certificate for k in keys)} certified")

    @token_group.command("list")
    @_token
    @_module
    @_pin
    @click.option("--json", "as_json", is_flag=True)
    @wrap
    def list_cmd(token_label: str, module: Path, pin_file: Path | None, as_json: bool) -> None:
        """The key pairs in the token (never their private values)."""
        keys = _open(token_label, module, pin_file).keys()
        if as_json:
            now = dt.datetime.now(dt.UTC)
            click.echo(json.dumps([{"label": k.label, "id": k.key_id.hex(), "profile": k.profile,
                                    "certificate": k.has_certificate,
                                    "not_after": k.not_after.isoformat() if k.not_after else None,
                                    "days_left": round((k.not_after - now).total_seconds() / 86400, 2)
                                    if k.not_after else None} for k in keys]))
            return
        for k in keys:
            click.echo(f"{k.label:<24} id {k.key_id.hex()}  {k.profile:<6} {'certified' if k.has_certificate else '-'}")

    @token_group.command("keygen")
    @_token
    @_module
    @_pin
    @click.option("--key", "key_label", required=True, help="Key label, e.g. gateway-sig.")
    @click.option("--profile", type=click.Choice(["bsi", "modern"]), default="bsi", show_default=True)
    @wrap
    def keygen_cmd(token_label: str, module: Path, pin_file: Path | None, key_label: str, profile: str) -> None:
        """Generate a key pair inside the token (sensitive, not extractable)."""
        key = _open(token_label, module, pin_file).generate_key(key_label, profile)  # type: ignore[arg-type]
        click.echo(f"{key.label}: id {key.key_id.hex()}, {key.profile}")

    @token_group.command("csr")
    @_token
    @_module
    @_pin
    @click.option("--key", "key_label", required=True)
    @click.option("--name", required=True, help="Name to request (the CA decides the final subject).")
    @click.option("--out", type=click.Path(path_type=Path), required=True, help="PEM request file.")
    @wrap
    def csr_cmd(token_label: str, module: Path, pin_file: Path | None, key_label: str, name: str, out: Path) -> None:
        """A certificate request signed by the token key."""
        csr = _open(token_label, module, pin_file).make_csr(key_label, name)
        out.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        click.echo(f"{out}: request for {name} ({key_label})")

    @token_group.command("import")
    @_token
    @_module
    @_pin
    @click.option("--key", "key_label", required=True)
    @click.option("--cert", type=click.Path(path_type=Path, exists=True), required=True)
    @wrap
    def import_cmd(token_label: str, module: Path, pin_file: Path | None, key_label: str, cert: Path) -> None:
        """Store the issued certificate next to its key."""
        parsed = read_certificate(cert)
        _open(token_label, module, pin_file).import_certificate(key_label, parsed)
        click.echo(f"{key_label}: certificate {parsed.serial_number:x} imported")
