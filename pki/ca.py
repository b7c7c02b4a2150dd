"""The GWA's certificate authority: init, issue per role, revoke, CRL, list.

The CA directory holds ``ca.crt``, ``ca.key`` (PKCS#8, encrypted with the passphrase, mode
0600), ``index.json`` (what was issued and revoked; written atomically) and ``crl.pem``.
The CA decides a certificate's subject and role; a CSR contributes only its public key,
and only after its self-signature and curve are checked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki.errors import CaError, CsrError
from pki.names import check_name
from pki.profiles import CryptoProfile, Role, curve, get_profile, profile_of_key

MIN_PASSPHRASE = 12
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedRecord:
    serial: str  #: hex
    role: str
    name: str
    not_after: str
    revoked_at: str | None = None
    reason: str | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise CaError(f"CA passphrase must have at least {MIN_PASSPHRASE} characters")


def _serial() -> int:
    return secrets.randbits(127) | (1 << 126)  # positive, 16 bytes, never zero


def init_ca(directory: Path, *, passphrase: bytes, profile: CryptoProfile = "bsi",
            name: str = "smgw-gwa-root", days: int = 3650) -> x509.Certificate:
    """Create the root CA (the GWA's); refuses to overwrite an existing one."""
    _check_passphrase(passphrase)
    check_name(name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (directory / "ca.key").exists() or (directory / "ca.crt").exists():
        raise CaError(f"{directory}: a CA exists already")
    key = ec.generate_private_key(curve(profile))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smgw GWA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(_serial()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / "ca.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase)))
    _write_atomic(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write_atomic(directory / "index.json", json.dumps({"profile": profile, "issued": []}).encode(), 0o600)
    return cert


class CertificateAuthority:
    """A loaded CA directory; every change is written back before the call returns."""

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        self.directory = directory
        try:
            self.cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), passphrase)
            index = json.loads((directory / "index.json").read_text())
        except FileNotFoundError as exc:
            raise CaError(f"{directory}: not a CA directory ({exc.filename} missing)") from None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CaError(f"{directory}: CA key cannot be opened (wrong passphrase or damaged file)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{directory}: CA key is not an EC key")
        self.key = key
        self.profile: CryptoProfile = index["profile"]
        self.issued = [IssuedRecord(**r) for r in index["issued"]]

    def _save(self) -> None:
        doc = {"profile": self.profile, "issued": [asdict(r) for r in self.issued]}
        _write_atomic(self.directory / "index.json", json.dumps(doc, indent=1).encode(), 0o600)

    def check_csr(self, csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
        """The CSR's key, if its self-signature holds and it is on this CA's curve."""
        if not csr.is_signature_valid:
            raise CsrError("CSR signature does not verify")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CsrError("CSR key is not an EC key")
        if profile_of_key(key) != self.profile:
            raise CsrError(f"CSR key is on {key.curve.name}; this CA issues the {self.profile} profile")
        return key

    def issue(self, role: Role, name: str, public_key: ec.EllipticCurvePublicKey,
              days: int | None = None) -> x509.Certificate:
        profile = get_profile(role)
        check_name(name)
        if profile_of_key(public_key) != self.profile:
            raise CsrError(f"key is on {public_key.curve.name}; this CA issues the {self.profile} profile")
        now = _now()
        not_after = min(now + dt.timedelta(days=days or profile.days), self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]))
            .issuer_name(self.cert.subject).public_key(public_key).serial_number(_serial())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(profile.key_usage(), critical=True)
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(profile.policy_oid, None)]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        if profile.eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(profile.eku)), critical=False)
        if profile.san_dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued_dir = self.directory / "issued"
        issued_dir.mkdir(mode=0o700, exist_ok=True)
        _write_atomic(issued_dir / f"{cert.serial_number:x}.crt", cert.public_bytes(serialization.Encoding.PEM))
        self.issued.append(IssuedRecord(serial=f"{cert.serial_number:x}", role=role, name=name,
                                        not_after=not_after.isoformat()))
        self._save()
        return cert

    def issue_generated(self, role: Role, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A software key: for the GWA and party side and for tests, never for a gateway."""
        key = ec.generate_private_key(curve(self.profile))
        return self.issue(role, name, key.public_key()), key

    def record(self, serial: str) -> IssuedRecord:
        wanted = serial.lower().removeprefix("0x")
        for record in self.issued:
            if record.serial == wanted:
                return record
        raise CaError(f"serial {serial} was not issued by this CA")

    def certificate(self, serial: str) -> x509.Certificate:
        """A certificate this CA issued, as stored when it was issued."""
        record = self.record(serial)
        try:
            return x509.load_pem_x509_certificate((self.directory / "issued" / f"{record.serial}.crt").read_bytes())
        except (OSError, ValueError):
            raise CaError(f"{self.directory}: issued certificate {record.serial} is missing or damaged") from None

    def renew(self, serial: str, public_key: ec.EllipticCurvePublicKey | None = None) -> x509.Certificate:
        """A new certificate for the same role and name (same key, or the key of a new CSR);
        the old one is revoked as superseded so only one stays valid."""
        record = self.record(serial)
        if record.revoked_at is not None:
            raise CaError(f"serial {serial} is revoked; issue a new certificate instead")
        old_key = self.certificate(serial).public_key()
        key = public_key if public_key is not None else old_key
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CaError(f"serial {serial} does not hold an EC key")
        cert = self.issue(record.role, record.name, key)  # type: ignore[arg-type]
        self.revoke(serial, "superseded")
        return cert

    def revoke(self, serial: str, reason: str) -> IssuedRecord:
        if reason not in REASONS:
            raise CaError(f"unknown revocation reason {reason!r}; one of: {', '.join(REASONS)}")
        wanted = serial.lower().removeprefix("0x")
        for i, record in enumerate(self.issued):
            if record.serial == wanted:
                if record.revoked_at is not None:
                    raise CaError(f"serial {serial} is revoked already")
                self.issued[i] = IssuedRecord(**{**asdict(record), "revoked_at": _now().isoformat(),
                                                 "reason": reason})
                self._save()
                return self.issued[i]
        raise CaError(f"serial {serial} was not issued by this CA")

    def revoked_serials(self) -> set[int]:
        return {int(r.serial, 16) for r in self.issued if r.revoked_at is not None and r.reason is not None}

    def crl_current(self, crl: x509.CertificateRevocationList, keep_days: float) -> bool:
        """True when ``crl`` is this CA's, lists exactly today's revocations and stays valid for
        more than ``keep_days``: then a provisioning run need not replace it (and reports no change)."""
        next_update = crl.next_update_utc
        if next_update is None or crl.issuer != self.cert.subject:
            return False
        if not crl.is_signature_valid(self.key.public_key()):
            return False
        if {entry.serial_number for entry in crl} != self.revoked_serials():
            return False
        return next_update - _now() > dt.timedelta(days=keep_days)

    def crl(self, days: int = 7) -> x509.CertificateRevocationList:
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now).next_update(now + dt.timedelta(days=days))
                   .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False))
        for record in self.issued:
            if record.revoked_at is None or record.reason is None:
                continue
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(record.serial, 16))
                .revocation_date(dt.datetime.fromisoformat(record.revoked_at))
                .add_extension(x509.CRLReason(REASONS[record.reason]), critical=False).build())
        crl = builder.sign(self.key, hashes.SHA256())
        _write_atomic(self.directory / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
        return crl


def software_request(key_path: Path, name: str, profile: CryptoProfile) -> x509.CertificateSigningRequest:
    """A CSR for the software key at ``key_path``, making the key (0600, PKCS#8) if it is
    missing: the party's and the GWA's keys are born where they are used, like the gateway's
    in its token, and only the request goes to the CA. A key on another curve is refused."""
    check_name(name)
    if key_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CsrError(f"{key_path}: not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or profile_of_key(key.public_key()) != profile:
            raise CsrError(f"{key_path}: not an EC key of the {profile} profile")
    else:
        key = ec.generate_private_key(curve(profile))
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
