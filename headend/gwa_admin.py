"""The GWA's client of a gateway's admin API: HTTPS over the admin tunnel, mutually
authenticated.

The GWA presents its ``gwa-admin`` certificate; it accepts the gateway only with a
certificate chained to the pinned root, naming the gateway's id, of role ``gateway-api``
(and, given a CRL, not revoked). The address is the gateway's address inside the admin
tunnel, an IP address, never a name to resolve.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509

from pki.errors import PkiError
from pki.profiles import require_role


class AdminApiError(PkiError):
    """The gateway could not be reached, was not who it must be, or refused the request."""


class _Connection(http.client.HTTPSConnection):
    def __init__(self, address: str, port: int, context: ssl.SSLContext, gateway_id: str, timeout: float) -> None:
        super().__init__(address, port, context=context, timeout=timeout)
        self._gateway_id = gateway_id
        self._context = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self._gateway_id)


def context(root: Path, cert: Path, key: Path, crl: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(root))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if crl is not None:
        ctx.load_verify_locations(str(crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if "brainpool" in x509.load_pem_x509_certificate(cert.read_bytes()).public_key().curve.name:  # type: ignore[union-attr]
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 cannot carry brainpool signatures
        ctx.set_ecdh_curve("brainpoolP256r1")
    return ctx


def request(method: str, path: str, *, gateway_id: str, address: IPv4Address, port: int, ctx: ssl.SSLContext,
            body: bytes | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request; the gateway's certificate must be of role gateway-api."""
    conn = _Connection(str(address), port, ctx, gateway_id, timeout)
    try:
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            raise AdminApiError(f"{address}:{port} is not gateway {gateway_id}: {exc.verify_message}") from None
        except (OSError, ssl.SSLError) as exc:
            raise AdminApiError(f"cannot reach the admin API at {address}:{port}: {exc}") from None
        der = conn.sock.getpeercert(binary_form=True)
        if not der:
            raise AdminApiError(f"{address}:{port} showed no certificate")
        require_role(x509.load_der_x509_certificate(der), "gateway-api")
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read(8 * 1024 * 1024)
        try:
            return response.status, json.loads(data)
        except ValueError:
            raise AdminApiError(f"{method} {path}: answer is not JSON (status {response.status})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise AdminApiError(f"admin API at {address}:{port}: {exc}") from None
    finally:
        conn.close()
