"""CMS EnvelopedData for EC recipients (RFC 5652 + RFC 5753): ephemeral-static ECDH,
ANSI X9.63 KDF with SHA-256, AES-256 key wrap, AES-256-CBC content encryption; or, as an
option, AuthEnvelopedData (RFC 5083) with AES-256-GCM.

The recipient side takes a ``KeyAgreement`` callable (peer public key -> shared secret), so
the same code decrypts with a software key (headend) or a token key (gateway ENC).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from pki import der
from pki.cms import CmsError, MalformedError

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
    _fields = [  # noqa: RUF012  # asn1crypto's declaration style
        ("key_info", asn1_cms.KeyEncryptionAlgorithm),
        ("entity_u_info", asn1_core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", asn1_core.OctetString, {"explicit": 2}),
    ]


def _wrap_alg() -> asn1_cms.KeyEncryptionAlgorithm:
    return asn1_cms.KeyEncryptionAlgorithm({"algorithm": "aes256_wrap"})


def _shared_info(ukm: bytes | None) -> bytes:
    """Pure in the UKM, which we never send: cached, as building it costs more than the KDF.
    Only a short one: the UKM is the sender's to choose (read before anything is verified),
    and 256 of a megabyte each must not stay in memory."""
    if ukm is not None and len(ukm) > _CACHED_UKM_BYTES:
        return _shared_info_of(ukm)
    return _shared_info_cached(ukm)


_CACHED_UKM_BYTES = 64


@lru_cache(maxsize=256)
def _shared_info_cached(ukm: bytes | None) -> bytes:
    return _shared_info_of(ukm)


def _shared_info_of(ukm: bytes | None) -> bytes:
    info = {"key_info": _wrap_alg(), "supp_pub_info": (256).to_bytes(4, "big")}
    if ukm is not None:
        info["entity_u_info"] = ukm
    return bytes(_SharedInfo(info).dump())


def _kek(shared: bytes, ukm: bytes | None, kdf: str = DH_SINGLE_PASS_SHA256) -> bytes:
    digest = _KDF_HASHES[kdf]()
    return X963KDF(algorithm=digest, length=32, sharedinfo=_shared_info(ukm)).derive(shared)


@lru_cache(maxsize=256)
def _recipient_id(cert: x509.Certificate) -> tuple[bytes, int]:
    """(issuer DER, serial) as they appear in a RecipientIdentifier."""
    asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    return bytes(asn1_cert.issuer.dump()), int(asn1_cert.serial_number)


def software_agreement(key: ec.EllipticCurvePrivateKey) -> KeyAgreement:
    return lambda peer: key.exchange(ec.ECDH(), peer)


class _GcmParameters(asn1_core.Sequence):  # type: ignore[misc]  # RFC 5084 GCMParameters
    _fields = [  # noqa: RUF012  # asn1crypto's declaration style
        ("nonce", asn1_core.OctetString),
        ("icv_len", asn1_core.Integer, {"default": 12}),
    ]


AES256_GCM = "2.16.840.1.101.3.4.1.46"
_GCM_NONCE, _GCM_TAG = 12, 16


def encrypt(content: bytes, recipient: x509.Certificate, *, aead: bool = False) -> bytes:
    """DER ContentInfo readable only with the recipient certificate's key.

    ``aead=False``: EnvelopedData with AES-256-CBC (what every CMS peer reads; integrity
    comes from the SignedData inside). ``aead=True``: AuthEnvelopedData (RFC 5083/5084)
    with AES-256-GCM, which also detects a changed ciphertext without a signature.
    """
    public = recipient.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CmsError("recipient key is not an EC key")
    ephemeral = ec.generate_private_key(public.curve)
    cek = os.urandom(32)
    wrapped = aes_key_wrap(_kek(ephemeral.exchange(ec.ECDH(), public), None), cek)
    issuer, serial = _recipient_id(recipient)
    originator = asn1_keys.PublicKeyInfo.load(ephemeral.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    kari = asn1_cms.KeyAgreeRecipientInfo({
        "version": "v3",
        "originator": asn1_cms.OriginatorIdentifierOrKey({"originator_key": originator}),
        "key_encryption_algorithm": {"algorithm": DH_SINGLE_PASS_SHA256, "parameters": _wrap_alg()},
        "recipient_encrypted_keys": [{
            "rid": {"issuer_and_serial_number": {"issuer": asn1_x509.Name.load(issuer),
                                                 "serial_number": serial}},
            "encrypted_key": wrapped,
        }],
    })
    recipients = [asn1_cms.RecipientInfo({"kari": kari})]
    if aead:
        nonce = os.urandom(_GCM_NONCE)
        sealed = AESGCM(cek).encrypt(nonce, content, None)
        params = _GcmParameters({"nonce": nonce, "icv_len": _GCM_TAG})
        auth = asn1_cms.AuthEnvelopedData({
            "version": "v0",
            "recipient_infos": recipients,
            "auth_encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": asn1_algos.EncryptionAlgorithm(
                    {"algorithm": "aes256_gcm", "parameters": asn1_core.Any.load(params.dump())}),
                "encrypted_content": sealed[:-_GCM_TAG],
            },
            "mac": sealed[-_GCM_TAG:],
        })
        return bytes(asn1_cms.ContentInfo({"content_type": "authenticated_enveloped_data",
                                           "content": auth}).dump())
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    enveloped = asn1_cms.EnvelopedData({
        "version": "v2",
        "recipient_infos": recipients,
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": asn1_algos.EncryptionAlgorithm(
                {"algorithm": "aes256_cbc", "parameters": iv}),
            "encrypted_content": ciphertext,
        },
    })
    return bytes(asn1_cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())


@dataclass(frozen=True)
class _Envelope:
    """What decryption needs from the message, read in one guarded pass (asn1crypto is lazy)."""

    content_alg: str
    iv_or_nonce: bytes
    ciphertext: bytes
    tag: bytes | None
    wrapped: bytes
    kdf: str
    ukm: bytes | None
    point: bytes


_WRAP_DER = bytes(_wrap_alg().dump())
_CONTENT_TYPES = {"1.2.840.113549.1.9.16.1.23": "authenticated_enveloped_data",
                  "1.2.840.113549.1.7.3": "enveloped_data"}
_CBC, _GCM = "2.16.840.1.101.3.4.1.42", AES256_GCM


_ID_DATA = der.oid_body("1.2.840.113549.1.7.1")
_ID_EC_PUBLIC_KEY = der.oid_body("1.2.840.10045.2.1")
_FAST_TYPES = {der.oid_body(k): v == "authenticated_enveloped_data" for k, v in _CONTENT_TYPES.items()}
_FAST_KDFS = {der.oid_body(k): k for k in _KDF_HASHES}


def _read_envelope(data: bytes, recipient: x509.Certificate) -> _Envelope:
    """The fast walk for the shape smgw and openssl produce; anything else goes through
    asn1crypto's full model, which also names what is wrong. Lengths are checked for both."""
    try:
        env = _read_fast(data, recipient)
    except der.NotTheShape:
        env = _read_full(data, recipient)
    if env.tag is not None and (len(env.iv_or_nonce) != _GCM_NONCE or len(env.tag) != _GCM_TAG):
        raise MalformedError(f"GCM nonce must be {_GCM_NONCE} bytes and the tag {_GCM_TAG}")
    if env.tag is None and (len(env.iv_or_nonce) != 16 or not env.ciphertext or len(env.ciphertext) % 16):
        raise MalformedError("content IV or ciphertext length is wrong")
    return env


def _read_fast(data: bytes, recipient: x509.Certificate) -> _Envelope:
    u, ctx = der.UNIVERSAL, der.CONTEXT
    info = der.children(der.one(data, u, der.SEQUENCE, True))
    if len(info) != 2 or der.oid(info[0]) not in _FAST_TYPES:
        raise der.NotTheShape("content type")
    aead = _FAST_TYPES[der.oid(info[0])]
    fields = der.children(der.one(der.expect(info[1], ctx, 0, True).body, u, der.SEQUENCE, True))
    if len(fields) != (4 if aead else 3):
        raise der.NotTheShape("optional fields present")
    der.integer(fields[0])
    eci = der.children(der.expect(fields[2], u, der.SEQUENCE, True))
    if len(eci) != 3 or der.oid(eci[0]) != _ID_DATA:
        raise der.NotTheShape("encrypted content info")
    alg = der.children(der.expect(eci[1], u, der.SEQUENCE, True))
    if len(alg) != 2 or der.oid(alg[0]) != der.oid_body(_GCM if aead else _CBC):
        raise der.NotTheShape("content encryption algorithm")
    tag: bytes | None = None
    if aead:
        params = der.children(der.expect(alg[1], u, der.SEQUENCE, True))
        if len(params) != 2 or der.integer(params[1]) != _GCM_TAG:
            raise der.NotTheShape("GCM parameters")
        iv, tag = der.octets(params[0]), der.octets(fields[3])
    else:
        iv = der.octets(alg[1])
    ciphertext = der.expect(eci[2], ctx, 0, False).body
    issuer_der, serial = _recipient_id(recipient)
    found: tuple[bytes, str, bytes | None, bytes] | None = None
    for ri in der.children(der.expect(fields[1], u, der.SET, True)):
        kari = der.children(der.expect(ri, ctx, 1, True))
        if len(kari) not in (4, 5):
            raise der.NotTheShape("KeyAgreeRecipientInfo")
        der.integer(kari[0])
        originator = der.one(der.expect(kari[1], ctx, 0, True).body, ctx, 1, True)
        algorithm_and_key = der.children(originator)
        if len(algorithm_and_key) != 2:
            raise der.NotTheShape("originator key")
        key_kind = der.children(der.expect(algorithm_and_key[0], u, der.SEQUENCE, True))
        if not key_kind or der.oid(key_kind[0]) != _ID_EC_PUBLIC_KEY:
            raise der.NotTheShape("originator key is not id-ecPublicKey")
        bits = der.expect(algorithm_and_key[1], u, der.BIT_STRING, False).body
        if bits[:1] != b"\x00":
            raise der.NotTheShape("originator key bit string")
        ukm = None
        if len(kari) == 5:
            ukm = der.octets(der.one(der.expect(kari[2], ctx, 1, True).body, u, der.OCTET_STRING, False))
        key_alg = der.children(der.expect(kari[-2], u, der.SEQUENCE, True))
        if len(key_alg) != 2 or der.oid(key_alg[0]) not in _FAST_KDFS or key_alg[1].der != _WRAP_DER:
            raise der.NotTheShape("key agreement algorithm")
        for rek in der.children(der.expect(kari[-1], u, der.SEQUENCE, True)):
            rid_and_key = der.children(der.expect(rek, u, der.SEQUENCE, True))
            if len(rid_and_key) != 2:
                raise der.NotTheShape("RecipientEncryptedKey")
            rid = der.children(der.expect(rid_and_key[0], u, der.SEQUENCE, True))
            if len(rid) != 2:
                raise der.NotTheShape("rid")
            wrapped = der.octets(rid_and_key[1])
            if der.integer(rid[1]) == serial and der.expect(rid[0], u, der.SEQUENCE, True).der == issuer_der:
                found = (wrapped, _FAST_KDFS[der.oid(key_alg[0])], ukm, bits[1:])
    if found is None:
        raise der.NotTheShape("not for us: the full decoder says so")
    wrapped, kdf, ukm, point = found
    return _Envelope(content_alg=_GCM if aead else _CBC, iv_or_nonce=iv, ciphertext=ciphertext, tag=tag,
                     wrapped=wrapped, kdf=kdf, ukm=ukm, point=point)


def _read_full(data: bytes, recipient: x509.Certificate) -> _Envelope:
    try:
        info = asn1_cms.ContentInfo.load(data, strict=True)
        kind = _CONTENT_TYPES.get(info["content_type"].dotted)
        if kind is None:
            raise MalformedError(f"CMS content type is {info['content_type'].native}, "
                                 "not enveloped_data or authenticated_enveloped_data")
        env = info["content"]
        aead = kind == "authenticated_enveloped_data"
        eci = env["auth_encrypted_content_info" if aead else "encrypted_content_info"]
        alg = eci["content_encryption_algorithm"]
        content_alg = alg["algorithm"].dotted
        if content_alg != (_GCM if aead else _CBC):
            raise MalformedError(f"content encryption {alg['algorithm'].native} is not accepted in {kind}")
        if aead:
            params = _GcmParameters.load(alg["parameters"].dump(), strict=True)
            if params["icv_len"].native != _GCM_TAG:
                raise MalformedError(f"GCM tag length {params['icv_len'].native} is not {_GCM_TAG}")
            iv, tag = bytes(params["nonce"].native), bytes(env["mac"].native)
        else:
            iv, tag = bytes(alg["parameters"].native), None
        ciphertext = bytes(eci["encrypted_content"].native or b"")
        issuer_der, serial = _recipient_id(recipient)
        found = None
        for ri in env["recipient_infos"]:
            if ri.name != "kari":
                continue
            kari = ri.chosen
            for rek in kari["recipient_encrypted_keys"]:
                rid = rek["rid"]
                if (rid.name == "issuer_and_serial_number"
                        and rid.chosen["serial_number"].native == serial
                        and rid.chosen["issuer"].dump() == issuer_der):
                    found = (kari, bytes(rek["encrypted_key"].native))
        if found is None:
            raise NotForUsError(f"message is not encrypted for certificate {recipient.serial_number:x}")
        kari, wrapped = found
        key_alg = kari["key_encryption_algorithm"]
        kdf = key_alg["algorithm"].dotted
        if kdf not in _KDF_HASHES:
            raise MalformedError(f"key agreement {kdf} is not dhSinglePass-stdDH with SHA-256 or SHA-1 KDF")
        if key_alg["parameters"].dump() != _WRAP_DER:
            raise MalformedError("key wrap is not aes256_wrap")
        originator = kari["originator"]
        if originator.name != "originator_key":
            raise MalformedError("originator must be an ephemeral public key")
        point = bytes(originator.chosen["public_key"].native)
        ukm_field = kari["ukm"]
        ukm = bytes(ukm_field.native) if ukm_field.native is not None else None
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, UnsupportedAlgorithm,
            x509.InvalidVersion):
        raise MalformedError("not a readable CMS EnvelopedData (malformed or truncated DER)") from None
    return _Envelope(content_alg=content_alg, iv_or_nonce=iv, ciphertext=ciphertext, tag=tag,
                     wrapped=wrapped, kdf=kdf, ukm=ukm, point=point)


def decrypt(der: bytes, recipient: x509.Certificate, agree: KeyAgreement) -> bytes:
    """The plaintext of an EnvelopedData (AES-CBC) or AuthEnvelopedData (AES-GCM), or a
    distinct error: malformed, not for us, or tampered."""
    public = recipient.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CmsError("recipient key is not an EC key")
    env = _read_envelope(der, recipient)
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(public.curve, env.point)
    except ValueError:
        raise MalformedError("originator key is not a point on the recipient's curve") from None
    try:
        cek = aes_key_unwrap(_kek(agree(peer), env.ukm, env.kdf), env.wrapped)
        if env.tag is not None:
            return AESGCM(cek).decrypt(env.iv_or_nonce, env.ciphertext + env.tag, None)
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(env.iv_or_nonce)).decryptor()
        padded = decryptor.update(env.ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (InvalidUnwrap, InvalidTag, ValueError):
        raise DecryptionError("cannot decrypt: wrong key or tampered message") from None
