"""``smgw pki ...``: the GWA's CA verbs. Secrets never come from the command line: the CA
passphrase is read from ``$SMGW_CA_PASSPHRASE`` or from a file only its owner can read."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.ca import REASONS, CertificateAuthority, init_ca, software_request
from pki.encoding import read_csr
from pki.errors import CaError
from pki.profiles import ROLES


def _passphrase(passphrase_file: Path | None) -> bytes:
    if passphrase_file is not None:
        try:
            mode = passphrase_file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise CaError(f"{passphrase_file}: readable by others (chmod 600 it)")
            return passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise CaError(f"{passphrase_file}: cannot read ({exc.strerror})") from None
    value = os.environ.get("SMGW_CA_PASSPHRASE")
    if not value:
        raise CaError("no CA passphrase: set SMGW_CA_PASSPHRASE or give --passphrase-file")
    return value.encode()


_dir = click.option("--dir", "directory", required=True, type=click.Path(path_type=Path), help="CA directory.")
_pass = click.option("--passphrase-file", type=click.Path(path_type=Path), default=None,
                     help="File holding the CA passphrase (mode 0600); default $SMGW_CA_PASSPHRASE.")


def register(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    wrap = clean_errors  # the CLI's error wrapper (one line on stderr, exit code)

    @main.group("pki")
    def pki_group() -> None:
        """Certificates of the GWA's CA: init-ca, issue, renew, revoke, crl, list, export."""

    @pki_group.command("init-ca")
    @_dir
    @_pass
    @click.option("--profile", type=click.Choice(["bsi", "modern"]), default="bsi", show_default=True)
    @click.option("--name", default="smgw-gwa-root", show_default=True)
    @wrap
    def init_ca_cmd(directory: Path, passphrase_file: Path | None, profile: str, name: str) -> None:
        """Create the root CA (the GWA's)."""
        cert = init_ca(directory, passphrase=_passphrase(passphrase_file), profile=profile, name=name)  # type: ignore[arg-type]
        click.echo(f"{directory}/ca.crt: serial {cert.serial_number:x}, profile {profile}")

    @pki_group.command("issue")
    @_dir
    @_pass
    @click.option("--role", required=True, type=click.Choice(list(ROLES)))
    @click.option("--name", required=True)
    @click.option("--csr", type=click.Path(path_type=Path), default=None, help="PEM or DER request.")
    @click.option("--generate", is_flag=True, help="Make a software key (GWA/party side, tests).")
    @click.option("--out", "prefix", required=True, type=click.Path(path_type=Path), help="Writes PREFIX.crt (+ .key).")
    @wrap
    def issue_cmd(directory: Path, passphrase_file: Path | None, role: str, name: str, csr: Path | None,
                  generate: bool, prefix: Path) -> None:
        """Issue a certificate of a role, from a CSR or for a new software key."""
        if (csr is None) == (not generate):
            raise click.UsageError("give exactly one of --csr F or --generate")
        ca = CertificateAuthority(directory, _passphrase(passphrase_file))
        key_pem = None
        if csr is not None:
            cert = ca.issue(role, name, ca.check_csr(read_csr(csr)))  # type: ignore[arg-type]
        else:
            cert, key = ca.issue_generated(role, name)  # type: ignore[arg-type]
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        prefix.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key_pem is not None:
            fd = os.open(prefix.with_suffix(".key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
        click.echo(f"{prefix}.crt: {role} {name} serial {cert.serial_number:x}")

    @pki_group.command("request")
    @click.option("--key", "key_path", required=True, type=click.Path(path_type=Path),
                  help="Software key file (PEM, mode 0600); made on this host if missing.")
    @click.option("--name", required=True, help="Name to request (the CA decides the final subject).")
    @click.option("--profile", type=click.Choice(["bsi", "modern"]), default="bsi", show_default=True)
    @click.option("--out", required=True, type=click.Path(path_type=Path), help="PEM request file.")
    @wrap
    def request_cmd(key_path: Path, name: str, profile: str, out: Path) -> None:
        """A CSR for a party's or the GWA's software key, made where the key lives: only the
        request travels to the CA (gateway keys use `smgw token csr`)."""
        made = not key_path.exists()
        csr = software_request(key_path, name, profile)  # type: ignore[arg-type]
        out.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        click.echo(f"{out}: request for {name} ({'new key' if made else 'existing key'} {key_path})")

    @pki_group.command("revoke")
    @_dir
    @_pass
    @click.option("--serial", required=True, help="Hex serial (smgw pki list).")
    @click.option("--reason", required=True, type=click.Choice(list(REASONS)))
    @wrap
    def revoke_cmd(directory: Path, passphrase_file: Path | None, serial: str, reason: str) -> None:
        """Revoke a certificate; publish with `smgw pki crl`."""
        record = CertificateAuthority(directory, _passphrase(passphrase_file)).revoke(serial, reason)
        click.echo(f"revoked {record.serial} ({record.role} {record.name}): {reason}")

    @pki_group.command("crl")
    @_dir
    @_pass
    @click.option("--out", required=True, type=click.Path(path_type=Path))
    @click.option("--days", type=click.IntRange(1, 365), default=7, show_default=True)
    @click.option("--keep-days", type=click.FloatRange(min=0), default=None,
                  help="Leave OUT alone (and say 'unchanged') if it is this CA's current CRL and stays "
                       "valid longer than this; for idempotent provisioning runs.")
    @wrap
    def crl_cmd(directory: Path, passphrase_file: Path | None, out: Path, days: int, keep_days: float | None) -> None:
        """Write the current CRL (PEM)."""
        ca = CertificateAuthority(directory, _passphrase(passphrase_file))
        if keep_days is not None and out.exists():
            try:
                existing = x509.load_pem_x509_crl(out.read_bytes())
            except ValueError:
                existing = None
            if existing is not None and ca.crl_current(existing, keep_days):
                click.echo(f"{out}: unchanged, {len(existing)} revoked, next update {existing.next_update_utc}")
                return
        crl = ca.crl(days)
        out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        click.echo(f"{out}: {len(crl)} revoked, next update {crl.next_update_utc}")

    @pki_group.command("renew")
    @_dir
    @_pass
    @click.option("--serial", required=True)
    @click.option("--csr", type=click.Path(path_type=Path), default=None, help="New key's request (default: same key).")
    @click.option("--out", "prefix", required=True, type=click.Path(path_type=Path), help="Writes PREFIX.crt.")
    @wrap
    def renew_cmd(directory: Path, passphrase_file: Path | None, serial: str, csr: Path | None, prefix: Path) -> None:
        """Re-issue a certificate (same role and name); the old one is revoked as superseded."""
        ca = CertificateAuthority(directory, _passphrase(passphrase_file))
        key = ca.check_csr(read_csr(csr)) if csr is not None else None
        cert = ca.renew(serial, key)
        prefix.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        click.echo(f"{prefix}.crt: serial {cert.serial_number:x} replaces {serial}")

    @pki_group.command("export")
    @_dir
    @_pass
    @click.option("--serial", default=None, help="An issued certificate (default: the CA certificate).")
    @click.option("--der", is_flag=True, help="DER instead of PEM.")
    @wrap
    def export_cmd(directory: Path, passphrase_file: Path | None, serial: str | None, der: bool) -> None:
        """Write a certificate to stdout."""
        ca = CertificateAuthority(directory, _passphrase(passphrase_file))
        cert = ca.cert if serial is None else ca.certificate(serial)
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        sys.stdout.buffer.write(cert.public_bytes(encoding))

    @pki_group.command("list")
    @_dir
    @_pass
    @click.option("--json", "as_json", is_flag=True)
    @wrap
    def list_cmd(directory: Path, passphrase_file: Path | None, as_json: bool) -> None:
        """What this CA issued, and what it revoked."""
        records = CertificateAuthority(directory, _passphrase(passphrase_file)).issued
        if as_json:
            click.echo(json.dumps([asdict(r) for r in records]))
            return
        for r in records:
            state = f"revoked {r.revoked_at} ({r.reason})" if r.revoked_at else f"valid until {r.not_after}"
            click.echo(f"{r.serial}  {r.role:<12} {r.name:<30} {state}")
