"""Reading certificates, requests and CRLs from files that may be PEM or DER, and the
software keys of the GWA and party side (PEM, unencrypted).

One place for the sniffing, so every CLI verb accepts both and refuses alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.errors import CsrError, PkiError

T = TypeVar("T")


def _read(path: Path, pem: Callable[[bytes], T], der: Callable[[bytes], T], what: str,
          error: type[PkiError]) -> T:
    try:
        raw = path.read_bytes()
        return pem(raw) if raw.lstrip().startswith(b"-----") else der(raw)
    except (OSError, ValueError):
        raise error(f"{path}: not a readable {what}") from None


def read_certificate(path: Path) -> x509.Certificate:
    return _read(path, x509.load_pem_x509_certificate, x509.load_der_x509_certificate, "certificate", PkiError)


def read_csr(path: Path) -> x509.CertificateSigningRequest:
    return _read(path, x509.load_pem_x509_csr, x509.load_der_x509_csr, "certificate request", CsrError)


def read_crl(path: Path) -> x509.CertificateRevocationList:
    return _read(path, x509.load_pem_x509_crl, x509.load_der_x509_crl, "CRL", PkiError)


def read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A software EC key (GWA and party side only; a gateway's keys live in its token)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        raise PkiError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: not an EC key")
    return key
