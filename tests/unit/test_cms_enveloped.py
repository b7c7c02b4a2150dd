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
from pki.cms_envelope import DecryptionError, NotForUsError, decrypt, encrypt, software_agreement
from tests.pkihelpers import PASS, openssl


def files(tmp_path: Path, ca: CertificateAuthority) -> tuple[object, object, Path, Path]:
    cert, key = ca.issue_generated("party-enc", "supplier")
    crt, k = tmp_path / "r.crt", tmp_path / "r.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert, key, crt, k


def test_openssl_decrypts_ours(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key, crt, k = files(tmp_path, ca)
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
    tampered = bytearray(message)
    tampered[-5] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt(bytes(tampered), cert, software_agreement(key))
    with pytest.raises(MalformedError):
        decrypt(message[:40], cert, software_agreement(key))


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
