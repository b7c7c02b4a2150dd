"""CMS EnvelopedData for EC recipients: openssl decrypts ours, we decrypt openssl's, refusals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from pki.ca import CertificateAuthority, init_ca
from pki.cms import CmsError, MalformedError
from pki.cms_envelope import (
    DecryptionError,
    NotForUsError,
    _read_envelope,
    decrypt,
    encrypt,
    software_agreement,
)
from tests.pkihelpers import PASS, openssl


def files(tmp_path: Path, ca: CertificateAuthority) -> tuple[object, object, Path, Path]:
    cert, key = ca.issue_generated("party-enc", "supplier")
    crt, k = tmp_path / "r.crt", tmp_path / "r.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert, key, crt, k


def test_openssl_decrypts_ours(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, _key, crt, k = files(tmp_path, ca)
    payload = os.urandom(2048)
    (tmp_path / "m.der").write_bytes(encrypt(payload, cert))  # type: ignore[arg-type]
    out = subprocess.run([openssl(), "cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "m.der"),
                          "-recip", str(crt), "-inkey", str(k)], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == payload


@pytest.mark.parametrize("kdf", [[], ["-keyopt", "ecdh_kdf_md:sha256"]], ids=["openssl-default-kdf", "sha256-kdf"])
def test_we_decrypt_openssls(ca: CertificateAuthority, tmp_path: Path, kdf: list[str]) -> None:
    cert, key, crt, _ = files(tmp_path, ca)
    (tmp_path / "p").write_bytes(b"from openssl, to the party")
    subprocess.run([openssl(), "cms", "-encrypt", "-binary", "-aes256", "-in", str(tmp_path / "p"),
                    "-outform", "DER", "-out", str(tmp_path / "o.der"), "-recip", str(crt), *kdf],
                   check=True, capture_output=True)
    got = decrypt((tmp_path / "o.der").read_bytes(), cert, software_agreement(key))  # type: ignore[arg-type]
    assert got == b"from openssl, to the party"


def test_refusals(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key = ca.issue_generated("party-enc", "supplier")
    other, other_key = ca.issue_generated("party-enc", "dso")
    message = encrypt(b"x" * 100, cert)
    assert decrypt(message, cert, software_agreement(key)) == b"x" * 100
    with pytest.raises(NotForUsError):
        decrypt(message, other, software_agreement(other_key))
    with pytest.raises(DecryptionError):
        decrypt(message, cert, software_agreement(other_key))  # right id, wrong key
    # CBC alone cannot notice a changed ciphertext (the SignedData inside does); a changed
    # wrapped key fails the RFC 3394 integrity check every time.
    wrapped = _read_envelope(message, cert).wrapped
    flipped = bytes([wrapped[0] ^ 0x01]) + wrapped[1:]
    with pytest.raises(DecryptionError):
        decrypt(message.replace(wrapped, flipped), cert, software_agreement(key))
    with pytest.raises(MalformedError):
        decrypt(message[:40], cert, software_agreement(key))


def test_gcm_round_trip_and_any_changed_byte_of_ciphertext_or_tag_is_refused(
        ca: CertificateAuthority) -> None:
    cert, key = ca.issue_generated("party-enc", "supplier")
    payload = os.urandom(2048)
    message = encrypt(payload, cert, aead=True)
    assert decrypt(message, cert, software_agreement(key)) == payload
    env = _read_envelope(message, cert)
    assert env.tag is not None and len(env.iv_or_nonce) == 12
    for part in (env.ciphertext, env.tag):
        for position in (0, len(part) // 2, len(part) - 1):
            changed = bytearray(part)
            changed[position] ^= 0x80
            with pytest.raises(DecryptionError):
                decrypt(message.replace(part, bytes(changed)), cert, software_agreement(key))


def test_openssl_decrypts_our_gcm(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, _key, crt, k = files(tmp_path, ca)
    payload = os.urandom(2048)
    (tmp_path / "m.der").write_bytes(encrypt(payload, cert, aead=True))  # type: ignore[arg-type]
    out = subprocess.run([openssl(), "cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "m.der"),
                          "-recip", str(crt), "-inkey", str(k)], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == payload


def test_we_decrypt_openssls_gcm(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key, crt, _ = files(tmp_path, ca)
    (tmp_path / "p").write_bytes(b"authenticated, from openssl")
    subprocess.run([openssl(), "cms", "-encrypt", "-binary", "-aes-256-gcm", "-in", str(tmp_path / "p"),
                    "-outform", "DER", "-out", str(tmp_path / "o.der"), "-recip", str(crt)],
                   check=True, capture_output=True)
    der = (tmp_path / "o.der").read_bytes()
    got = decrypt(der, cert, software_agreement(key))  # type: ignore[arg-type]
    assert got == b"authenticated, from openssl"
    tag = _read_envelope(der, cert).tag  # type: ignore[arg-type]
    assert tag is not None
    with pytest.raises(DecryptionError):
        decrypt(der.replace(tag, bytes(b ^ 0xFF for b in tag)), cert,  # type: ignore[arg-type]
                software_agreement(key))  # type: ignore[arg-type]


_CTX: dict[str, object] = {}


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_envelopes_raise_only_cms_errors(data: st.DataObject) -> None:
    if not _CTX:
        import tempfile

        d = Path(tempfile.mkdtemp())
        init_ca(d / "ca", passphrase=PASS, profile="modern")
        c = CertificateAuthority(d / "ca", PASS)
        cert, key = c.issue_generated("party-enc", "fuzz")
        _CTX.update(msg=encrypt(b"fuzz me please", cert), cert=cert, key=key)
    msg = bytearray(_CTX["msg"])  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        msg[data.draw(st.integers(0, len(msg) - 1))] = data.draw(st.integers(0, 255))
    try:
        decrypt(bytes(msg[: data.draw(st.integers(1, len(msg)))]), _CTX["cert"],  # type: ignore[arg-type]
                software_agreement(_CTX["key"]))  # type: ignore[arg-type]
    except CmsError:
        pass


def test_a_long_ukm_gives_the_same_shared_info_and_is_not_remembered() -> None:
    # the UKM is the sender's choice, read before anything is verified: only short ones are cached
    from pki import cms_envelope

    before = cms_envelope._shared_info_cached.cache_info().currsize
    long = os.urandom(100_000)
    assert cms_envelope._shared_info(long) == cms_envelope._shared_info_of(long)
    assert long in cms_envelope._shared_info(long)  # the UKM is in it (entity_u_info)
    assert cms_envelope._shared_info_cached.cache_info().currsize == before
    short = os.urandom(16)
    assert cms_envelope._shared_info(short) == cms_envelope._shared_info_of(short) != cms_envelope._shared_info(None)
