"""The portal's own TLS certificate: self-signed on first start when none is installed.

A household reaches the portal by the gateway's HAN address; no public CA can vouch for
that. The first start makes a P-256 key (0600, the portal user's, never a gateway key) and
a certificate for the listen address, and logs its SHA-256 fingerprint, which the operator
prints on the household's letter beside the one-time code. An installed certificate is
used as it is.

The pair is made by a short-lived forked child: cryptography, loaded into the portal for
that one moment, would stay mapped for as long as it runs (10 MB of a gateway's memory, for
months after a first boot). A fork, not a new interpreter: the portal's user may not be
allowed to execute one (and nothing runs in the portal yet that a fork could upset).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from appliance.files import write_atomic

log = logging.getLogger("smgw.portal")


def ensure_certificate(cert: Path, key: Path, address: str, gateway_id: str) -> str:
    """Make the pair if neither exists; return the certificate's SHA-256 fingerprint."""
    if not cert.exists() and not key.exists():
        _make_in_child(cert, key, address, gateway_id)
        log.info("made a self-signed portal certificate %s", cert)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return hashlib.sha256(der).digest().hex(":")


def _make_in_child(cert: Path, key: Path, address: str, gateway_id: str) -> None:
    """``_make`` in a forked child; its error, if any, comes back through a pipe."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # the child: make the pair, report, and leave without running the parent's cleanup
        status = 1
        try:
            os.close(read_end)
            _make(cert, key, address, gateway_id)
            status = 0
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent as text
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[:1000])
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            error = pipe.read().decode(errors="replace")
    finally:
        _, status = os.waitpid(pid, 0)  # never a zombie, whatever the read did
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(f"cannot make the portal certificate {cert}: {error or f'the child ended with {code}'}")


def _make(cert: Path, key: Path, address: str, gateway_id: str) -> None:
    """In the child only (see the module's docstring)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{gateway_id} portal")])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName("smgw.local")]
    try:
        alt.append(x509.IPAddress(ipaddress.ip_address(address)))
    except ValueError:
        pass
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
                   .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(private, hashes.SHA256()))
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # key first, certificate last, each written aside and renamed: a start that dies on the way
    # leaves a key without its certificate (which stops every later start) only in the moment
    # between the two renames, not for the whole generation
    write_atomic(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode(), 0o600)
    write_atomic(cert, certificate.public_bytes(serialization.Encoding.PEM).decode(), 0o644)
