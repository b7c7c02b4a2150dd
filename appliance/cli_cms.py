"""``smgw cms sign|verify|encrypt|decrypt``: DER on stdin and stdout; a refusal is a
non-zero exit with one line on stderr naming the reason."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pki.cms import sign, software_signer, verify
from pki.cms_envelope import decrypt, encrypt, software_agreement
from pki.encoding import read_certificate, read_crl, read_private_key
from pki.profiles import ROLES
from pki.token import DEFAULT_MODULE, Token, read_pin


def _token(token_label: str, pin_file: Path | None) -> Token:
    return Token(token_label, read_pin(pin_file), DEFAULT_MODULE)


_cert_opt = click.option("--cert", type=click.Path(path_type=Path, exists=True), required=True)
_key_opt = click.option("--key", type=click.Path(path_type=Path, exists=True), default=None,
                        help="Software key (PEM): GWA/party side and tests.")
_tok_opt = click.option("--token-key", default=None, help="Label of a key in the token (gateway side).")
_token_opt = click.option("--token", "token_label", default="smgw", show_default=True)
_pin_opt = click.option("--pin-file", type=click.Path(path_type=Path), default=None)


def _one_of(key: Path | None, token_key: str | None) -> None:
    if (key is None) == (token_key is None):
        raise click.UsageError("give exactly one of --key K or --token-key LABEL")


def register(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    wrap = clean_errors

    @main.group("cms")
    def cms_group() -> None:
        """CMS SignedData and EnvelopedData (DER on stdin/stdout)."""

    @cms_group.command("sign")
    @_cert_opt
    @_key_opt
    @_tok_opt
    @_token_opt
    @_pin_opt
    @wrap
    def sign_cmd(cert: Path, key: Path | None, token_key: str | None, token_label: str, pin_file: Path | None) -> None:
        """Sign stdin."""
        _one_of(key, token_key)
        content = sys.stdin.buffer.read()
        if key is not None:
            signer = software_signer(read_private_key(key))
        else:
            tok, label = _token(token_label, pin_file), str(token_key)
            signer = lambda digest: tok.sign_digest(label, digest)
        sys.stdout.buffer.write(sign(content, read_certificate(cert), signer))

    @cms_group.command("verify")
    @click.option("--root", type=click.Path(path_type=Path, exists=True), required=True)
    @click.option("--crl", type=click.Path(path_type=Path, exists=True), default=None)
    @click.option("--role", type=click.Choice(list(ROLES)), default=None)
    @wrap
    def verify_cmd(root: Path, crl: Path | None, role: str | None) -> None:
        """Verify stdin; print the content."""
        crl_obj = read_crl(crl) if crl is not None else None
        content, _ = verify(sys.stdin.buffer.read(), root=read_certificate(root), role=role, crl=crl_obj)  # type: ignore[arg-type]
        sys.stdout.buffer.write(content)

    @cms_group.command("encrypt")
    @click.option("--recipient", type=click.Path(path_type=Path, exists=True), required=True)
    @click.option("--gcm", is_flag=True, help="AuthEnvelopedData with AES-256-GCM instead of AES-256-CBC.")
    @wrap
    def encrypt_cmd(recipient: Path, gcm: bool) -> None:
        """Encrypt stdin for the recipient certificate."""
        sys.stdout.buffer.write(encrypt(sys.stdin.buffer.read(), read_certificate(recipient), aead=gcm))

    @cms_group.command("decrypt")
    @_cert_opt
    @_key_opt
    @_tok_opt
    @_token_opt
    @_pin_opt
    @wrap
    def decrypt_cmd(cert: Path, key: Path | None, token_key: str | None, token_label: str,
                    pin_file: Path | None) -> None:
        """Decrypt stdin with a software key or a token key."""
        _one_of(key, token_key)
        if key is not None:
            agree = software_agreement(read_private_key(key))
        else:
            tok, label = _token(token_label, pin_file), str(token_key)
            agree = lambda peer: tok.agree(label, peer)
        sys.stdout.buffer.write(decrypt(sys.stdin.buffer.read(), read_certificate(cert), agree))
