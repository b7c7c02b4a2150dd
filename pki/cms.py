"""CMS SignedData (RFC 5652): sign with a software key or a token key, verify a signer.

Verification accepts a message only when all hold: it parses, the message digest and the
signature match, the signer certificate chains directly to the pinned root, it is within
its validity, it has the asked role, and (when a CRL is given, or required) it is not
revoked. Each refusal is its own exception type with a clear message; nothing else
escapes. Encryption (EnvelopedData, RFC 5753) follows in the next step of this issue.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from pki import der
from pki.errors import PkiError, RoleError
from pki.profiles import Role, require_role


class CmsError(PkiError):
    """Root of the CMS refusals."""


class MalformedError(CmsError):
    """Not a CMS SignedData we can read (bad DER, truncated, wrong content type)."""


class BadSignatureError(CmsError):
    """The content or the signature was changed."""


class UnknownSignerError(CmsError):
    """The signer certificate is missing or not issued by the pinned root."""


class ValidityError(CmsError):
    """The signer certificate is expired or not yet valid."""


class RevokedError(CmsError):
    """The signer certificate is on the CRL."""


class CrlError(CmsError):
    """A CRL is required but missing, or not signed by the root, or out of date."""


Signer = Callable[[bytes], bytes]  #: SHA-256 digest -> DER ECDSA signature


def software_signer(key: ec.EllipticCurvePrivateKey) -> Signer:
    return lambda digest: key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def sign(content: bytes, cert: x509.Certificate, signer: Signer, *,
         signing_time: dt.datetime | None = None) -> bytes:
    """DER ContentInfo(SignedData) with the content attached and the signer certificate included."""
    asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    when = signing_time or dt.datetime.now(dt.UTC).replace(microsecond=0)
    attrs = asn1_cms.CMSAttributes([
        asn1_cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        asn1_cms.CMSAttribute({"type": "signing_time", "values": [asn1_cms.Time({"utc_time": when})]}),
        asn1_cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(content).digest()]}),
    ])
    signature = signer(hashlib.sha256(attrs.dump()).digest())
    signer_info = asn1_cms.SignerInfo({
        "version": "v1",
        "sid": asn1_cms.SignerIdentifier({"issuer_and_serial_number": asn1_cms.IssuerAndSerialNumber({
            "issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number})}),
        "digest_algorithm": asn1_algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": attrs,
        "signature_algorithm": asn1_algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
        "signature": signature,
    })
    signed = asn1_cms.SignedData({
        "version": "v1",
        "digest_algorithms": [asn1_algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": [asn1_cert],
        "signer_infos": [signer_info],
    })
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def check_certificate(cert: x509.Certificate, *, root: x509.Certificate, role: Role | None = None,
                      crl: x509.CertificateRevocationList | None = None, require_crl: bool = False,
                      now: dt.datetime | None = None, what: str = "certificate") -> None:
    """Issued by the pinned root, valid now, of ``role``, not revoked by a CRL of the root."""
    facts = _facts(cert, root, role, crl)
    if facts is None:
        raise UnknownSignerError(f"{what} {cert.subject.rfc4514_string()} is not issued by the pinned root")
    moment = now or dt.datetime.now(dt.UTC)
    if not facts.not_before <= moment <= facts.not_after:
        raise ValidityError(f"{what} certificate valid {facts.not_before} to {facts.not_after}")
    if facts.role_problem is not None:
        raise RoleError(facts.role_problem)
    if crl is None and require_crl:
        raise CrlError(f"a CRL is required to accept this {what} and none was given")
    if crl is not None:
        if not facts.crl_signed:
            raise CrlError("CRL is not signed by the pinned root")
        if facts.crl_next_update is not None and facts.crl_next_update < moment:
            raise CrlError(f"CRL expired at {facts.crl_next_update}")
        if facts.revoked:
            raise RevokedError(f"{what} certificate {cert.serial_number:x} is revoked")


@dataclass(frozen=True, slots=True)
class _Facts:
    """What ``check_certificate`` decides from its inputs alone, not from the time: the same
    for every message a signer sends, and (crl-signature, role, revocation) a third of the
    headend's verification on its own. ``crl`` is held so that its ``id`` in the cache key
    stays its own for as long as the entry lives."""

    crl: x509.CertificateRevocationList | None
    not_before: dt.datetime
    not_after: dt.datetime
    role_problem: str | None
    crl_signed: bool
    crl_next_update: dt.datetime | None
    revoked: bool


_FACTS: dict[tuple[x509.Certificate, x509.Certificate, str | None, int], _Facts] = {}
_FACTS_MAX = 1024


def _facts(cert: x509.Certificate, root: x509.Certificate, role: Role | None,
           crl: x509.CertificateRevocationList | None) -> _Facts | None:
    """None if the root did not issue ``cert`` (nothing else of it is read then). Cached by
    the certificates (they hash and compare by their DER) and the CRL object's identity (a
    CRL does not hash; a reloaded one is a new object, so a new entry)."""
    key = (cert, root, role, id(crl))
    found = _FACTS.get(key)
    if found is not None and found.crl is crl:
        return found
    if not _issued_by(cert, root):  # (not kept here: _issued_by keeps that verdict)
        return None
    role_problem = None
    if role is not None:
        try:
            require_role(cert, role)
        except RoleError as exc:
            role_problem = str(exc)
        except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
            role_problem = "the certificate's extensions cannot be read"
    crl_signed, revoked = False, False
    if crl is not None:
        crl_signed = _crl_signed_by(crl.public_bytes(serialization.Encoding.DER), _der(root))
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    facts = _Facts(crl=crl, not_before=cert.not_valid_before_utc,
                   not_after=cert.not_valid_after_utc, role_problem=role_problem, crl_signed=crl_signed,
                   crl_next_update=None if crl is None else crl.next_update_utc, revoked=revoked)
    if len(_FACTS) >= _FACTS_MAX:
        _FACTS.clear()
    _FACTS[key] = facts
    return facts


@lru_cache(maxsize=1024)
def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    """Pure in its two inputs (certificates hash and compare by their DER), so cached:
    a headend sees the same few signers all day."""
    try:
        cert.verify_directly_issued_by(root)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, x509.InvalidVersion):
        return False


@lru_cache(maxsize=64)
def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@lru_cache(maxsize=64)
def _crl_signed_by(crl_der: bytes, root_der: bytes) -> bool:
    crl = x509.load_der_x509_crl(crl_der)
    root = x509.load_der_x509_certificate(root_der)
    key = root.public_key()
    return crl.issuer == root.subject and isinstance(key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(key)


def _load_cert(der: bytes) -> x509.Certificate:
    """cryptography parses fields lazily too: touch every one we later rely on, here."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.subject.rfc4514_string(), cert.issuer, cert.serial_number, cert.public_key(),
             cert.not_valid_before_utc, cert.not_valid_after_utc, list(cert.extensions))
    except Exception as exc:  # noqa: BLE001 - pure parsing; the library raises many kinds
        raise MalformedError(f"a certificate in the message is malformed ({type(exc).__name__})") from None
    return cert


def load_content(der: bytes, content_type: str) -> asn1_cms.ContentInfo:
    """The ContentInfo's content, if it is of ``content_type``; call inside a parse guard."""
    info = asn1_cms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != content_type:
        raise MalformedError(f"CMS content type is {info['content_type'].native}, not {content_type}")
    return info["content"]


@dataclass(frozen=True)
class _Parsed:
    """Everything ``verify`` reads from the message, taken out in one guarded pass.

    asn1crypto parses lazily, so a malformed field would otherwise raise wherever it is
    first touched; reading only these fields (not ``.native`` of the whole SignerInfo)
    is also what makes verification fast enough for the headend.
    """

    content: bytes
    sid_kind: str
    serial: int | None
    digest_algorithm: str
    attributes: dict[str, list[object]]
    attributes_set_der: bytes
    signature: bytes
    certs: tuple[x509.Certificate, ...]


MAX_CERTIFICATES_BYTES = 8192  #: a signer's certificate takes under 1 kB


def _load_certs(set_der: bytes) -> tuple[x509.Certificate, ...]:
    """The message's CertificateSet. Bounded: the caches here keep what a sender put in a
    message (1024 entries each), which must not be 1024 certificates of a megabyte."""
    if len(set_der) > MAX_CERTIFICATES_BYTES:
        raise MalformedError(f"the message's certificates take {len(set_der)} bytes, "
                             f"more than {MAX_CERTIFICATES_BYTES}")
    return _load_certs_cached(set_der)


@lru_cache(maxsize=1024)
def _load_certs_cached(set_der: bytes) -> tuple[x509.Certificate, ...]:
    """Keyed by the set's DER: a headend sees the same few signers all day."""
    return tuple(_load_cert(c.chosen.dump()) for c in asn1_cms.CertificateSet.load(set_der, strict=True, implicit=0))


_ID_DATA, _ID_SIGNED_DATA = der.oid_body("1.2.840.113549.1.7.1"), der.oid_body("1.2.840.113549.1.7.2")
_ID_CONTENT_TYPE = der.oid_body("1.2.840.113549.1.9.3")
_ID_MESSAGE_DIGEST = der.oid_body("1.2.840.113549.1.9.4")
_ID_SHA256 = der.oid_body("2.16.840.1.101.3.4.2.1")


def _parse(data: bytes) -> _Parsed:
    """The fast walk for the shape smgw and openssl produce; anything else goes through
    asn1crypto's full model, which also names what is wrong."""
    try:
        return _parse_fast(data)
    except der.NotTheShape:
        return _parse_full(data)


def _parse_fast(data: bytes) -> _Parsed:
    u, ctx = der.UNIVERSAL, der.CONTEXT
    info = der.children(der.one(data, u, der.SEQUENCE, True))
    if len(info) != 2 or der.oid(info[0]) != _ID_SIGNED_DATA:
        raise der.NotTheShape("not signed_data")
    wrapper = der.expect(info[1], ctx, 0, True)
    fields = der.children(der.one(wrapper.body, u, der.SEQUENCE, True))
    if len(fields) < 4:
        raise der.NotTheShape("SignedData too short")
    der.integer(fields[0])
    der.expect(fields[1], u, der.SET, True)
    encap = der.children(der.expect(fields[2], u, der.SEQUENCE, True))
    if len(encap) != 2 or der.oid(encap[0]) != _ID_DATA:
        raise der.NotTheShape("encapsulated content is not attached id-data")
    content = der.octets(der.one(der.expect(encap[1], ctx, 0, True).body, u, der.OCTET_STRING, False))
    rest = fields[3:]
    certs: tuple[x509.Certificate, ...] = ()
    if rest[0].cls == ctx and rest[0].tag == 0:
        try:
            certs = _load_certs(der.expect(rest[0], ctx, 0, True).der)
        except (CmsError, ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
                UnsupportedAlgorithm, x509.InvalidVersion):
            raise der.NotTheShape("certificates: the full decoder names the fault") from None
        rest = rest[1:]
    if rest and rest[0].cls == ctx and rest[0].tag == 1:
        rest = rest[1:]
    if len(rest) != 1:
        raise der.NotTheShape("signerInfos")
    infos = der.children(der.expect(rest[0], u, der.SET, True))
    if len(infos) != 1:
        raise der.NotTheShape("not exactly one signer")
    signer = der.children(der.expect(infos[0], u, der.SEQUENCE, True))
    if len(signer) not in (6, 7):
        raise der.NotTheShape("SignerInfo without signed attributes")
    der.integer(signer[0])
    sid = der.children(der.expect(signer[1], u, der.SEQUENCE, True))
    if len(sid) != 2:
        raise der.NotTheShape("sid is not issuerAndSerialNumber")
    der.expect(sid[0], u, der.SEQUENCE, True)
    serial = der.integer(sid[1])
    digest_alg = der.children(der.expect(signer[2], u, der.SEQUENCE, True))
    if not digest_alg or der.oid(digest_alg[0]) != _ID_SHA256:
        raise der.NotTheShape("digest algorithm is not sha256")
    signed_attrs = der.expect(signer[3], ctx, 0, True)
    attributes: dict[str, list[object]] = {}
    for attr in der.children(signed_attrs):
        kind_and_values = der.children(der.expect(attr, u, der.SEQUENCE, True))
        if len(kind_and_values) != 2:
            raise der.NotTheShape("attribute")
        kind = der.oid(kind_and_values[0])
        values = der.children(der.expect(kind_and_values[1], u, der.SET, True))
        if kind == _ID_CONTENT_TYPE:
            if any(der.oid(v) != _ID_DATA for v in values):
                raise der.NotTheShape("content type attribute is not id-data")
            attributes["content_type"] = ["data"] * len(values)
        elif kind == _ID_MESSAGE_DIGEST:
            attributes["message_digest"] = [der.octets(v) for v in values]
    der.expect(signer[4], u, der.SEQUENCE, True)
    signature = der.octets(signer[5])
    if len(signer) == 7:
        der.expect(signer[6], ctx, 1, True)
    return _Parsed(content=content, sid_kind="issuer_and_serial_number", serial=serial, digest_algorithm="sha256",
                   attributes=attributes, attributes_set_der=b"\x31" + signed_attrs.der[1:],
                   signature=signature, certs=certs)


def _parse_full(data: bytes) -> _Parsed:
    try:
        signed = load_content(data, "signed_data")
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "data" or encap["content"].native is None:
            raise MalformedError("SignedData must carry its content (id-data, attached)")
        content = bytes(encap["content"].native)
        infos = list(signed["signer_infos"])
        if len(infos) != 1:
            raise MalformedError(f"SignedData has {len(infos)} signers, expected one")
        info = infos[0]
        cert_set = signed["certificates"]
        certs = _load_certs(cert_set.dump()) if cert_set else ()
        sid = info["sid"]
        serial = sid.chosen["serial_number"].native if sid.name == "issuer_and_serial_number" else None
        signed_attrs = info["signed_attrs"]
        # the signature covers the attributes as a SET OF (tag 0x31), not as the [0] they
        # travel in; dumped before its children are parsed, which would make dump() walk them
        set_der = b"\x31" + signed_attrs.dump()[1:]
        attributes: dict[str, list[object]] = {}
        for attr in signed_attrs:
            name = attr["type"].native
            if name in _CHECKED_ATTRIBUTES:
                attributes[name] = list(attr["values"].native)
        return _Parsed(content=content, sid_kind=sid.name, serial=serial,
                       digest_algorithm=str(info["digest_algorithm"]["algorithm"].native),
                       attributes=attributes, attributes_set_der=set_der,
                       signature=bytes(info["signature"].native), certs=certs)
    except CmsError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, UnsupportedAlgorithm,
            x509.InvalidVersion):
        raise MalformedError("not a readable CMS SignedData (malformed or truncated DER)") from None


_CHECKED_ATTRIBUTES = frozenset({"content_type", "message_digest"})


def _attribute(parsed: _Parsed, name: str) -> object:
    values = parsed.attributes.get(name)
    if values is None:
        raise MalformedError(f"signed attribute {name} missing")
    if len(values) != 1:
        raise MalformedError(f"signed attribute {name} must have one value")
    return values[0]


def verify(der: bytes, *, root: x509.Certificate, role: Role | None = None,
           crl: x509.CertificateRevocationList | None = None, require_crl: bool = False,
           now: dt.datetime | None = None) -> tuple[bytes, x509.Certificate]:
    """Return (content, signer certificate) of a SignedData that passes every check."""
    parsed = _parse(der)
    content, serial = parsed.content, parsed.serial
    if serial is None:
        raise UnknownSignerError("signer identified by key id; smgw signers use issuer and serial")
    matches = [c for c in parsed.certs if c.serial_number == serial]
    if not matches:
        raise UnknownSignerError(f"signer certificate (serial {serial:x}) not in the message")
    cert = matches[0]
    check_certificate(cert, root=root, role=role, crl=crl, require_crl=require_crl, now=now, what="signer")
    if _attribute(parsed, "content_type") != "data":
        raise MalformedError("signed content type attribute is not data")
    if _attribute(parsed, "message_digest") != hashlib.sha256(content).digest():
        raise BadSignatureError("content does not match the signed message digest")
    if parsed.digest_algorithm != "sha256":
        raise MalformedError("only SHA-256 digests are accepted")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise UnknownSignerError("signer key is not an EC key")
    try:
        public.verify(parsed.signature, parsed.attributes_set_der, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadSignatureError("signature does not verify with the signer certificate") from None
    return content, cert
