"""CMS SignedData: our signatures verify in openssl and openssl's in ours; every refusal."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from pki.ca import CertificateAuthority, init_ca
from pki.cms import (
    BadSignatureError,
    CmsError,
    CrlError,
    MalformedError,
    RevokedError,
    UnknownSignerError,
    ValidityError,
    check_certificate,
    sign,
    software_signer,
    verify,
)
from pki.errors import RoleError
from tests.pkihelpers import PASS, openssl


def test_round_trip_and_openssl_verifies_ours(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key = ca.issue_generated("gateway-sig", "gw-0001")
    message = sign(b'{"delivery": 1}', cert, software_signer(key))
    content, signer = verify(message, root=ca.cert, role="gateway-sig")
    assert content == b'{"delivery": 1}' and signer == cert
    (tmp_path / "m.der").write_bytes(message)
    out = subprocess.run([openssl(), "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "m.der"),
                          "-CAfile", str(tmp_path / "ca" / "ca.crt"), "-purpose", "any"],
                         capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b'{"delivery": 1}'


def test_we_verify_what_openssl_signs(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key = ca.issue_generated("gateway-sig", "gw-0002")
    (tmp_path / "s.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "s.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp_path / "in.txt").write_bytes(b"hello from openssl")
    subprocess.run([openssl(), "cms", "-sign", "-binary", "-nodetach", "-md", "sha256", "-signer", str(tmp_path / "s.crt"),
                    "-inkey", str(tmp_path / "s.key"), "-in", str(tmp_path / "in.txt"), "-outform", "DER",
                    "-out", str(tmp_path / "o.der")], check=True, capture_output=True)
    content, _ = verify((tmp_path / "o.der").read_bytes(), root=ca.cert, role="gateway-sig")
    assert content == b"hello from openssl"


def test_refusals_each_have_their_type(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key = ca.issue_generated("gateway-sig", "gw-0003")
    good = sign(b"payload-AAAA", cert, software_signer(key))
    with pytest.raises(BadSignatureError):
        verify(good.replace(b"payload-AAAA", b"payload-BBBB"), root=ca.cert)
    with pytest.raises(MalformedError):
        verify(good[: len(good) // 2], root=ca.cert)
    with pytest.raises(MalformedError):
        verify(b"\x30\x03\x02\x01\x00", root=ca.cert)
    with pytest.raises(RoleError):
        verify(good, root=ca.cert, role="gwa-wakeup")
    init_ca(tmp_path / "other", passphrase=PASS, profile=ca.profile)
    other = CertificateAuthority(tmp_path / "other", PASS)
    with pytest.raises(UnknownSignerError):
        verify(good, root=other.cert)
    with pytest.raises(ValidityError):
        verify(good, root=ca.cert, now=dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(CrlError, match="required"):
        verify(good, root=ca.cert, require_crl=True)
    verify(good, root=ca.cert, crl=ca.crl(), require_crl=True)
    ca.revoke(f"{cert.serial_number:x}", "key-compromise")
    with pytest.raises(RevokedError):
        verify(good, root=ca.cert, crl=ca.crl())
    with pytest.raises(CrlError, match="pinned root"):
        verify(good, root=ca.cert, crl=other.crl())
    _party, pkey = ca.issue_generated("party-enc", "supplier")
    with pytest.raises(BadSignatureError):
        # a signature made with another key under the same certificate
        verify(sign(b"x", cert, software_signer(pkey)), root=ca.cert)


def test_what_is_remembered_of_a_signer_never_outlives_its_crl_or_the_clock(ca: CertificateAuthority) -> None:
    # the headend checks the same signer all day: its verdict is kept per CRL object, the
    # validity times are judged anew each time
    cert, key = ca.issue_generated("gateway-sig", "gw-0004")
    good = sign(b"payload", cert, software_signer(key))
    before = ca.crl()
    for _ in range(2):
        verify(good, root=ca.cert, crl=before, require_crl=True)
    with pytest.raises(ValidityError):
        verify(good, root=ca.cert, crl=before, now=cert.not_valid_after_utc + dt.timedelta(seconds=1))
    with pytest.raises(CrlError, match="expired"):
        verify(good, root=ca.cert, crl=before, now=before.next_update_utc + dt.timedelta(seconds=1))
    ca.revoke(f"{cert.serial_number:x}", "key-compromise")
    with pytest.raises(RevokedError):
        verify(good, root=ca.cert, crl=ca.crl(), require_crl=True)  # a new CRL object: decided again
    verify(good, root=ca.cert, crl=before, require_crl=True)  # the old one still says not revoked
    for _ in range(2):  # a role problem is remembered as a problem, not as a pass
        with pytest.raises(RoleError):
            verify(good, root=ca.cert, role="party-enc", crl=before)


def test_a_certificate_not_of_the_root_is_refused_before_its_extensions_are_read(ca: CertificateAuthority) -> None:
    # an unreadable extension (here: one twice) in a certificate the root never signed is an
    # UnknownSignerError, as always, not the parser's own exception escaping the caller
    cert, _key = ca.issue_generated("gateway-sig", "gw-0005")
    parsed = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    extensions = parsed["tbs_certificate"]["extensions"]
    extensions.append(extensions[0].copy())
    forged = x509.load_der_x509_certificate(parsed.dump(force=True))
    with pytest.raises(x509.DuplicateExtension):
        _ = forged.extensions
    with pytest.raises(UnknownSignerError):
        check_certificate(forged, root=ca.cert, role="gateway-sig", crl=ca.crl())


def test_a_message_carrying_more_than_a_few_certificates_is_refused(ca: CertificateAuthority) -> None:
    # the certificates are kept in caches keyed by what the sender wrote: bounded in size
    cert, key = ca.issue_generated("gateway-sig", "gw-0006")
    message = sign(b"payload", cert, software_signer(key))
    info = asn1_cms.ContentInfo.load(message)
    certificates = info["content"]["certificates"]
    for _ in range(20):  # the signer's own certificate, again and again (the signature still holds)
        certificates.append(certificates[0].copy())
    padded = info.dump(force=True)
    assert len(padded) > 8192
    with pytest.raises(MalformedError, match="certificates take"):
        verify(padded, root=ca.cert, role="gateway-sig")
    assert verify(message, root=ca.cert, role="gateway-sig")[0] == b"payload"


_GOOD: dict[str, bytes] = {}


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_messages_raise_only_cms_errors(data: st.DataObject) -> None:
    if not _GOOD:
        import tempfile

        d = Path(tempfile.mkdtemp())
        init_ca(d / "ca", passphrase=PASS, profile="modern")
        c = CertificateAuthority(d / "ca", PASS)
        cert, key = c.issue_generated("gateway-sig", "gw-fuzz")
        _GOOD["msg"] = sign(b"fuzz me", cert, software_signer(key))
        _GOOD["root"] = c.cert.public_bytes(serialization.Encoding.DER)
    from cryptography import x509

    msg = bytearray(_GOOD["msg"])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(msg) - 1))
        msg[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(msg)))
    try:
        verify(bytes(msg[:cut]), root=x509.load_der_x509_certificate(_GOOD["root"]))
    except (CmsError, RoleError):
        pass
