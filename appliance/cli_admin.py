"""``smgw admin wakeup|breakup`` (GWA side) and ``smgw gatewatcher run`` (gateway side)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import click

from appliance import config as config_mod
from appliance.cli_common import config_option, print_json_line, stop_on_signals
from appliance.errors import SmgwError
from pki.cms import software_signer
from pki.encoding import read_certificate, read_crl, read_private_key


def _endpoint(value: str) -> tuple[IPv4Address, int]:
    host, _, port = value.rpartition(":")
    try:
        address, number = IPv4Address(host), int(port)
    except ValueError:
        raise SmgwError(f"--to {value!r}: expected IPv4ADDRESS:PORT") from None
    if not 1 <= number <= 65535:
        raise SmgwError(f"--to {value!r}: port out of range")
    return address, number


def register(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    wrap = clean_errors

    @main.group("admin")
    def admin_group() -> None:
        """The Gateway Administrator's tools."""

    for action in ("wakeup", "breakup"):
        def make(action: str) -> None:
            @admin_group.command(action, help=f"Sign a {action} and send it to the gateway's wake-up port.")
            @click.option("--gateway", "gateway_id", required=True, help="The gateway's id (its certificates' CN).")
            @click.option("--to", "to", required=True, help="The gateway's WAN address and wake-up port, ADDR:PORT.")
            @click.option("--cert", type=click.Path(path_type=Path, exists=True), required=True,
                          help="The GWA wake-up certificate (role gwa-wakeup).")
            @click.option("--key", type=click.Path(path_type=Path, exists=True), required=True,
                          help="Its private key (PEM, the GWA's side).")
            @click.option("--sequence", type=click.IntRange(0, 2**63 - 1), default=None,
                          help="Default: milliseconds since the epoch.")
            @wrap
            def command(gateway_id: str, to: str, cert: Path, key: Path, sequence: int | None) -> None:
                from headend.gwa import send

                address, port = _endpoint(to)
                private = read_private_key(key)
                size = send(action, gateway_id=gateway_id, address=address, port=port,  # type: ignore[arg-type]
                            cert=read_certificate(cert), signer=software_signer(private), sequence=sequence)
                click.echo(f"{action} for {gateway_id} sent to {address}:{port} ({size} bytes)")
        make(action)

    def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed([
            click.option("--gateway", "gateway_id", required=True, help="The gateway's id (its certificates' CN)."),
            click.option("--to", "to", required=True,
                         help="The gateway's address inside the admin tunnel and its API port, ADDR:PORT."),
            click.option("--cert", type=click.Path(path_type=Path, exists=True), required=True,
                         help="The GWA's admin certificate (role gwa-admin)."),
            click.option("--key", type=click.Path(path_type=Path, exists=True), required=True,
                         help="Its private key (PEM, the GWA's side)."),
            click.option("--root", type=click.Path(path_type=Path, exists=True), required=True,
                         help="The pinned root (the GWA's CA certificate)."),
            click.option("--crl", type=click.Path(path_type=Path, exists=True), default=None,
                         help="The CRL: a revoked gateway certificate is refused."),
        ]):
            command = option(command)
        return command

    def call(method: str, path: str, gateway_id: str, to: str, cert: Path, key: Path, root: Path,
             crl: Path | None, body: bytes | None = None) -> Any:
        from headend.gwa_admin import context, request

        address, port = _endpoint(to)
        status, doc = request(method, path, gateway_id=gateway_id, address=address, port=port,
                              ctx=context(root, cert, key, crl), body=body)
        if status >= 400:
            raise SmgwError(f"{method} {path}: {status} {doc.get('error', doc) if isinstance(doc, dict) else doc}")
        return doc

    for name, path, what in (("status", "/v1/status", "status"), ("selftest", "/v1/selftest", "self-test results")):
        def make_read(name: str, path: str, what: str) -> None:
            @admin_group.command(name, help=f"The gateway's {what} over its admin API (JSON).")
            @api_options
            @wrap
            def read_cmd(gateway_id: str, to: str, cert: Path, key: Path, root: Path, crl: Path | None) -> None:
                click.echo(json.dumps(call("GET", path, gateway_id, to, cert, key, root, crl), indent=1))
        make_read(name, path, what)

    @admin_group.command("log")
    @api_options
    @click.option("--log", "log_name", type=click.Choice(["system", "calibration", "consumer"]), default="system")
    @click.option("--since", default="", help="ISO 8601 time (UTC if no zone).")
    @click.option("--limit", type=click.IntRange(1, 5000), default=1000)
    @wrap
    def log_cmd(gateway_id: str, to: str, cert: Path, key: Path, root: Path, crl: Path | None, log_name: str,
                since: str, limit: int) -> None:
        """Rows of one of the gateway's audit logs over its admin API (one JSON line each)."""
        from urllib.parse import urlencode

        query = urlencode({"log": log_name, "since": since, "limit": limit})
        doc = call("GET", f"/v1/log?{query}", gateway_id, to, cert, key, root, crl)
        for row in doc["rows"]:
            click.echo(json.dumps(row))

    @admin_group.group("profile")
    def profile_group() -> None:
        """Access profiles on a gateway: installed and removed by documents the GWA signs."""

    def signed(action: str, gateway_id: str, cert: Path, key: Path, **fields: Any) -> bytes:
        from headend.gwa import default_sequence
        from pki.admin_doc import encode, new_doc

        doc = new_doc(gateway_id, action, default_sequence(), **fields)  # type: ignore[arg-type]
        return encode(doc, read_certificate(cert), software_signer(read_private_key(key)))

    @profile_group.command("list")
    @api_options
    @wrap
    def profile_list_cmd(gateway_id: str, to: str, cert: Path, key: Path, root: Path, crl: Path | None) -> None:
        """The gateway's access profiles: its config file's and the installed ones (JSON)."""
        click.echo(json.dumps(call("GET", "/v1/profiles", gateway_id, to, cert, key, root, crl), indent=1))

    @profile_group.command("put")
    @api_options
    @click.option("--file", "profile_file", type=click.Path(path_type=Path, exists=True), required=True,
                  help="The profile as JSON or TOML (the fields of a [[profiles]] entry).")
    @wrap
    def profile_put_cmd(gateway_id: str, to: str, cert: Path, key: Path, root: Path, crl: Path | None,
                        profile_file: Path) -> None:
        """Sign a profile with the GWA's admin key and install it on the gateway."""
        import tomllib

        text = profile_file.read_text()
        try:
            profile = tomllib.loads(text) if profile_file.suffix == ".toml" else json.loads(text)
        except ValueError as exc:
            raise SmgwError(f"{profile_file}: not a profile document ({exc})") from None
        if not isinstance(profile, dict) or not isinstance(profile.get("name"), str):
            raise SmgwError(f"{profile_file}: a profile needs a name")
        body = signed("profile.put", gateway_id, cert, key, profile=profile)
        doc = call("PUT", f"/v1/profiles/{profile['name']}", gateway_id, to, cert, key, root, crl, body)
        click.echo(json.dumps(doc))

    @profile_group.command("rm")
    @api_options
    @click.option("--name", required=True, help="The installed profile's name.")
    @wrap
    def profile_rm_cmd(gateway_id: str, to: str, cert: Path, key: Path, root: Path, crl: Path | None,
                       name: str) -> None:
        """Sign a removal with the GWA's admin key and remove an installed profile."""
        body = signed("profile.rm", gateway_id, cert, key, name=name)
        click.echo(json.dumps(call("DELETE", f"/v1/profiles/{name}", gateway_id, to, cert, key, root, crl, body)))

    @admin_group.group("cert")
    def cert_group() -> None:
        """The gateway's certificates: renewed over the admin API, the key never leaving its token."""

    @cert_group.command("renew")
    @api_options
    @click.option("--token-key", "label", required=True,
                  help="The gateway's token key to certify anew (e.g. gateway-tls-dso, gateway-api, gateway-sig).")
    @click.option("--ca-dir", type=click.Path(path_type=Path, exists=True), required=True, help="The CA directory.")
    @click.option("--passphrase-file", type=click.Path(path_type=Path), default=None,
                  help="File holding the CA passphrase (mode 0600); default $SMGW_CA_PASSPHRASE.")
    @wrap
    def cert_renew_cmd(gateway_id: str, to: str, cert: Path, key: Path, root: Path, crl: Path | None, label: str,
                       ca_dir: Path, passphrase_file: Path | None) -> None:
        """CSR from the gateway's token out, a certificate from the CA in."""
        from urllib.parse import urlencode

        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding
        from cryptography.x509.oid import NameOID

        from appliance.cli_pki import _passphrase
        from pki.ca import CertificateAuthority

        asked = call("GET", f"/v1/cert/csr?{urlencode({'key': label})}", gateway_id, to, cert, key, root, crl)
        role = asked.get("role")
        if role not in ("gateway-tls", "gateway-api", "gateway-sig", "gateway-enc"):
            raise SmgwError(f"the gateway asks for role {role!r}: only gateway roles are issued to a gateway")
        csr = x509.load_pem_x509_csr(str(asked["csr"]).encode())
        names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [gateway_id]:
            raise SmgwError(f"the CSR names {names}, not {gateway_id}")
        ca = CertificateAuthority(ca_dir, _passphrase(passphrase_file))
        issued = ca.issue(role, gateway_id, ca.check_csr(csr))
        done = call("PUT", f"/v1/cert?{urlencode({'key': label})}", gateway_id, to, cert, key, root, crl,
                    issued.public_bytes(Encoding.PEM))
        click.echo(json.dumps(done))

    @main.group("gatewatcher")
    def gatewatcher_group() -> None:
        """The gateway's WakeUp/BreakUp listener."""

    @gatewatcher_group.command("run")
    @config_option
    @click.option("--seconds", type=click.FloatRange(min=0.1), default=None)
    @wrap
    def run_cmd(config_path: Path, seconds: float | None) -> None:
        """Listen on the wake-up port in the foreground; one JSON line per decision."""
        from appliance.config_snapshot import load_in_child
        from appliance.gatewatcher_service import run_gatewatcher

        stop = threading.Event()
        stop_on_signals(stop)
        run_gatewatcher(load_in_child(config_path), stop, seconds=seconds, emit=print_json_line)


def register_headend(main: click.Group, clean_errors: Callable[[Any], Any]) -> None:
    @main.group("headend")
    def headend_group() -> None:
        """A market party's data-center side."""

    @headend_group.command("run")
    @config_option
    @click.option("--seconds", type=click.FloatRange(min=0.1), default=None)
    @click.option("--listen", default=None, help="Address to bind (default: the tunnel server's own address).")
    @clean_errors
    def headend_run_cmd(config_path: Path, seconds: float | None, listen: str | None) -> None:
        """Serve the ingest inside the tunnel: verify, decrypt, store, acknowledge; and the read
        API on the headend host's side (``ingest.read_address``), never inside the tunnel."""
        import socketserver

        from appliance.render_server import status_file
        from headend.balance import Seat
        from headend.config import HeadendConfig
        from headend.ingest import (
            IngestContext,
            ReadSocket,
            serve_reads,
            serve_reads_unix,
            status_file_peers,
        )
        from headend.ingest_server import IngestServer, raise_open_files, serve
        from headend.store import HeadendStore
        from headend.workers import run_in_process, run_workers
        from pki.cms_envelope import software_agreement

        cfg = config_mod.load_any(config_path)
        if not isinstance(cfg, HeadendConfig):
            raise SmgwError(f"{config_path}: not a headend config (no [headend] table)")
        key = read_private_key(cfg.ingest.enc_key)
        root, crl = read_certificate(cfg.pki.root), read_crl(cfg.pki.crl)
        enc_cert = read_certificate(cfg.ingest.enc_cert)
        address = listen or str(cfg.tunnel.network.ip)
        HeadendStore(cfg.ingest.database).close()  # schema made once, and a bad URL fails here, not in a worker
        raise_open_files()  # each gateway of the fleet keeps a connection open
        # one listening Unix socket for all workers, made before they are forked (see ReadSocket)
        read_socket = ReadSocket.listen(cfg.ingest.read_socket) if cfg.ingest.read_api and cfg.ingest.read_socket else None

        def serve_one(stop: threading.Event, ready: Callable[[], None], seat: Seat | None) -> None:
            """One ingest: its own store connection and server (after a fork, nothing is shared
            but the ``seat`` that evens out the workers' connections)."""
            store = HeadendStore(cfg.ingest.database)
            ctx = IngestContext(party=cfg.headend.name, root=root, crl=crl, enc_cert=enc_cert,
                                agree=software_agreement(key), peer_cn=status_file_peers(status_file(cfg)),
                                store=store)
            servers: list[socketserver.BaseServer | IngestServer] = [
                serve(ctx, address, cfg.ingest.port, per_address=cfg.ingest.connections_per_gateway, seat=seat)]
            if read_socket is not None:
                servers.append(serve_reads_unix(store, read_socket))
            elif cfg.ingest.read_api:
                servers.append(serve_reads(store, str(cfg.ingest.read_address), cfg.ingest.read_port))
            for server in servers:
                threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
            ready()
            stop.wait()
            for server in servers:
                server.shutdown()
            store.close()

        def listening() -> None:
            reads: dict[str, str] = {}
            if read_socket is not None:
                reads = {"read_api": f"unix:{read_socket.path}"}
            elif cfg.ingest.read_api:
                reads = {"read_api": f"{cfg.ingest.read_address}:{cfg.ingest.read_port}"}
            click.echo(json.dumps({"event": "listening", "address": address, "port": cfg.ingest.port,
                                   "workers": cfg.ingest.workers, **reads}))
            sys.stdout.flush()

        stop = threading.Event()
        stop_on_signals(stop)
        try:
            if cfg.ingest.workers == 1:
                run_in_process(serve_one, stop, seconds, listening)
            else:
                run_workers(cfg.ingest.workers, serve_one, stop, seconds=seconds, on_ready=listening)
        finally:
            if read_socket is not None:
                read_socket.close()
        store = HeadendStore(cfg.ingest.database)
        click.echo(json.dumps({"event": "stopped", "deliveries": store.count()}))
        store.close()
