"""CMS EnvelopedData for EC recipients (RFC 5652 + RFC 5753): ephemeral-static ECDH,
ANSI X9.63 KDF with SHA-256, AES-256 key wrap, AES-256-CBC content encryption.

The recipient side takes a ``KeyAgreement`` callable (peer public key -> shared secret), so
the same code decrypts with a software key (headend) or a token key (gateway ENC).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from pki.cms import CmsError, MalformedError, load_content

DH_SINGLE_PASS_SHA256 = "1.3.132.1.11.1"  #: dhSinglePass-stdDH-sha256kdf-scheme (what we send)
#: dhSinglePass-stdDH-sha1kdf-scheme: OpenSSL's default; accepted on decrypt for interop
#: (SHA-1 as a KDF is not a collision use).
DH_SINGLE_PASS_SHA1 = "1.3.133.16.840.63.0.2"
_KDF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {DH_SINGLE_PASS_SHA256: hashes.SHA256,
                                                       DH_SINGLE_PASS_SHA1: hashes.SHA1}
KeyAgreement = Callable[[ec.EllipticCurvePublicKey], bytes]


class NotForUsError(CmsError):
    """The message is not encrypted for this recipient certificate."""


class DecryptionError(CmsError):
    """The key does not unwrap or the ciphertext was changed."""


class _SharedInfo(asn1_core.Sequence):  # type: ignore[misc]  # asn1crypto ships no types
    _fields = [
        ("key_info", asn1_cms.KeyEncryptionAlgorithm),
        ("entity_u_info", asn1_core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", asn1_core.OctetString, {"explicit": 2}),
    ]


def _wrap_alg() -> asn1_cms.KeyEncryptionAlgorithm:
    return asn1_cms.KeyEncryptionAlgorithm({"algorithm": "aes256_wrap"})


def _kek(shared: bytes, ukm: bytes | None, kdf: str = DH_SINGLE_PASS_SHA256) -> bytes:
    info = {"key_info": _wrap_alg(), "supp_pub_info": (256).to_bytes(4, "big")}
    if ukm is not None:
        info["entity_u_info"] = ukm
    digest = _KDF_HASHES[kdf]()
    return X963KDF(algorithm=digest, length=32, sharedinfo=_SharedInfo(info).dump()).derive(shared)


def software_agreement(key: ec.EllipticCurvePrivateKey) -> KeyAgreement:
    return lambda peer: key.exchange(ec.ECDH(), peer)


def encrypt(content: bytes, recipient: x509.Certificate) -> bytes:
    """DER ContentInfo(EnvelopedData) readable only with the recipient certificate's key."""
    public = recipient.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CmsError("recipient key is not an EC key")
    ephemeral = ec.generate_private_key(public.curve)
    cek, iv = os.urandom(32), os.urandom(16)
    wrapped = aes_key_wrap(_kek(ephemeral.exchange(ec.ECDH(), public), None), cek)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    asn1_cert = asn1_x509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    originator = asn1_keys.PublicKeyInfo.load(ephemeral.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    kari = asn1_cms.KeyAgreeRecipientInfo({
        "version": "v3",
        "originator": asn1_cms.OriginatorIdentifierOrKey({"originator_key": originator}),
        "key_encryption_algorithm": {"algorithm": DH_SINGLE_PASS_SHA256, "parameters": _wrap_alg()},
        "recipient_encrypted_keys": [{
            "rid": {"issuer_and_serial_number": {"issuer": asn1_cert.issuer,
                                                 "serial_number": asn1_cert.serial_number}},
            "encrypted_key": wrapped,
        }],
    })
    enveloped = asn1_cms.EnvelopedData({
        "version": "v2",
        "recipient_infos": [asn1_cms.RecipientInfo({"kari": kari})],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": asn1_algos.EncryptionAlgorithm(
                {"algorithm": "aes256_cbc", "parameters": iv}),
            "encrypted_content": ciphertext,
        },
    })
    return bytes(asn1_cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())


def decrypt(der: bytes, recipient: x509.Certificate, agree: KeyAgreement) -> bytes:
    """The plaintext, or a distinct error: malformed, not for us, or tampered."""
    public = recipient.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CmsError("recipient key is not an EC key")
    try:
        env = load_content(der, "enveloped_data")
        eci = env["encrypted_content_info"]
        alg = eci["content_encryption_algorithm"]
        if alg["algorithm"].native != "aes256_cbc":
            raise MalformedError(f"content encryption {alg['algorithm'].native} is not accepted")
        iv = bytes(alg["parameters"].native)
        ciphertext = bytes(eci["encrypted_content"].native or b"")
        found = None
        for ri in env["recipient_infos"]:
            if ri.name != "kari":
                continue
            kari = ri.chosen
            for rek in kari["recipient_encrypted_keys"]:
                rid = rek["rid"]
                if (rid.name == "issuer_and_serial_number"
                        and rid.chosen["serial_number"].native == recipient.serial_number
                        and rid.chosen["issuer"].dump() == asn1_x509.Certificate.load(
                            recipient.public_bytes(serialization.Encoding.DER)).issuer.dump()):
                    found = (kari, bytes(rek["encrypted_key"].native))
        if found is None:
            raise NotForUsError(f"message is not encrypted for certificate {recipient.serial_number:x}")
        kari, wrapped = found
        kdf = kari["key_encryption_algorithm"]["algorithm"].dotted
        if kdf not in _KDF_HASHES:
            raise MalformedError(f"key agreement {kdf} is not dhSinglePass-stdDH with SHA-256 or SHA-1 KDF")
        wrap = asn1_cms.KeyEncryptionAlgorithm.load(kari["key_encryption_algorithm"]["parameters"].dump())
        if wrap["algorithm"].native != "aes256_wrap":
            raise MalformedError(f"key wrap {wrap['algorithm'].native} is not accepted")
        originator = kari["originator"]
        if originator.name != "originator_key":
            raise MalformedError("originator must be an ephemeral public key")
        point = bytes(originator.chosen["public_key"].native)
        ukm = bytes(kari["ukm"].native) if kari["ukm"].native is not None else None
        peer = ec.EllipticCurvePublicKey.from_encoded_point(public.curve, point)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, UnsupportedAlgorithm,
            x509.InvalidVersion):
        raise MalformedError("not a readable CMS EnvelopedData (malformed or truncated DER)") from None
    if len(iv) != 16 or not ciphertext or len(ciphertext) % 16:
        raise MalformedError("content IV or ciphertext length is wrong")
    try:
        cek = aes_key_unwrap(_kek(agree(peer), ukm, kdf), wrapped)
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (InvalidUnwrap, ValueError):
        raise DecryptionError("cannot decrypt: wrong key or tampered message") from None
