"""The security module: gateway keys live in a PKCS#11 token and never leave it.

One narrow interface over python-pkcs11 (SoftHSM2 in tests and the demo, a smart card in the
field): generate a key pair inside the token (sensitive, non-extractable), read its public
key, sign a digest with it, build a CSR whose signature the token makes (the request is
assembled with asn1crypto), and store the issued certificate under the key's id. The PIN
comes from a file only its owner can read or from the service's environment, never from a
command line, and is never logged or shown in a repr. Each process logs in once and keeps
that login (see ``Token.session``); a forked child and a library initialised again start
afresh.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import hashlib
import hmac
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pkcs11
from asn1crypto import core as asn1_core
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from pki.errors import PkiError
from pki.names import check_name
from pki.profiles import CryptoProfile, curve

DEFAULT_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
_ASN1_CURVE = {"bsi": "brainpoolp256r1", "modern": "secp256r1"}


def _helper_escape(text: str) -> str:
    """pkcs11-helper's escaping: backslash, slash and anything not graphic ASCII as \\xNN."""
    return "".join(f"\\x{ord(c):02x}" if c in "\\/" or not (0x21 <= ord(c) <= 0x7E) else c for c in text)


class TokenError(PkiError):
    """The token is missing, locked, or refused an operation."""


class _Unseen(TokenError):
    """No private object where one was asked for, in a session logged in earlier: the object
    is missing, or the login behind the kept session is gone (a card reset by another
    application hides private objects without saying so). Told apart by logging in again."""


class TokenBusy(TokenError):
    """Another process was changing the token while this one read it: SoftHSM2 answers
    CKR_GENERAL_ERROR when its file fails the integrity check halfway through a rewrite, and
    an object being made or removed can be found and then be gone or not whole yet. Worth
    trying again."""


_P = ParamSpec("_P")
_R = TypeVar("_R")
#: seconds between attempts at an operation that only reads the token
_REREAD_BACKOFF = (0.02, 0.05, 0.1)


def _pause(delay: float) -> None:
    """``delay`` seconds, give or take half: processes that met the same rewrite part ways."""
    time.sleep(delay * random.uniform(0.5, 1.5))


def _reread(operation: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a read-only operation again while the token was busy: nothing changed, so
    trying again is safe, and without it a CLI call meeting a key being made fails."""
    @functools.wraps(operation)
    def again(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for delay in _REREAD_BACKOFF:
            try:
                return operation(*args, **kwargs)
            except TokenBusy:
                _pause(delay)
        return operation(*args, **kwargs)
    return again


def read_pin(pin_file: Path | None = None, env: str = "SMGW_TOKEN_PIN") -> str:
    """The user PIN from a 0600 file or from the service environment."""
    if pin_file is not None:
        try:
            if pin_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise TokenError(f"{pin_file}: readable by others (chmod 600 it)")
            return pin_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"{pin_file}: cannot read the PIN ({exc})") from None
    pin = os.environ.get(env, "")
    if not pin:
        raise TokenError(f"no token PIN: set {env} in the service environment or give a PIN file")
    return pin


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenKey:
    label: str
    key_id: bytes
    profile: CryptoProfile
    not_after: dt.datetime | None = None  #: the certificate's end (None: not certified yet)

    @property
    def has_certificate(self) -> bool:
        return self.not_after is not None


_SESSION_LOCK = threading.RLock()
#: seconds between attempts at logging in; None marks the last attempt (about 0.3 s in all)
_OPEN_BACKOFF: tuple[float | None, ...] = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, None)
#: answers after which this process's view of the token cannot heal without C_Initialize
_STALE_VIEW = (pkcs11.NoSuchToken, pkcs11.UserPinNotInitialized)
#: answers after which the kept session is gone (card pulled, session closed under us)
_SESSION_LOST = (pkcs11.SessionHandleInvalid, pkcs11.SessionClosed, pkcs11.DeviceRemoved,
                 pkcs11.TokenNotPresent, pkcs11.UserNotLoggedIn, pkcs11.DeviceError)
#: what an operation lets through to ``Token.session`` rather than naming it itself
_PASS_ON = (*_SESSION_LOST, pkcs11.GeneralError, pkcs11.ObjectHandleInvalid)


@dataclass(slots=True)
class _Login:
    """This process's logged-in session on one token, kept between operations."""

    pin: bytes = field(repr=False)
    session: Any


#: ``(module, token label)`` → the kept login. Only touched under _SESSION_LOCK, as is
#: _depth, the number of sessions lent out by ``Token.session`` and not yet given back.
_LOGINS: dict[tuple[str, str], _Login] = {}
_depth = 0
_kept = False  #: the session last lent out was logged in before that call, not by it
_forked = False  #: a forked child: the library's state is the parent's until initialised again


def _pin_bytes(pin: str) -> bytes:
    return pin.encode("utf-8", "surrogatepass")  # compare_digest takes no non-ASCII str


def _close(login: _Login) -> None:
    try:
        login.session.close()
    except pkcs11.PKCS11Error:
        pass  # already gone with the card or the library


def _close_all() -> None:
    with _SESSION_LOCK:
        for login in _LOGINS.values():
            _close(login)
        _LOGINS.clear()


def _after_fork_in_child() -> None:
    """The parent's logins, lock and library state are not the child's: SoftHSM2 would say
    "already logged in" to every PIN, right or wrong, and a lock taken by another parent
    thread at the fork would never be let go."""
    global _SESSION_LOCK, _depth, _forked
    _LOGINS.clear()  # not closed: the sessions are the parent's
    _SESSION_LOCK = threading.RLock()
    _depth = 0
    _forked = True


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


def reinitialize(module: Path) -> None:
    """C_Finalize and C_Initialize, so this process sees tokens made or healed since.

    Every kept login of the module is closed first: after C_Initialize, SoftHSM2 numbers
    sessions and objects from 1 again, and a kept handle could name another token's session.
    Refused while a session of this thread is lent out (an ``hmac_session`` block) for the
    same reason."""
    global _forked
    with _SESSION_LOCK:
        if _depth:
            raise TokenError("cannot initialise the PKCS#11 library again while a session is in use")
        for key in [k for k in _LOGINS if k[0] == str(module)]:
            _close(_LOGINS.pop(key))
        try:
            pkcs11.lib(str(module)).reinitialize()
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise TokenError(f"PKCS#11 module {module}: {type(exc).__name__} {exc}".rstrip()) from None
        _forked = False


@dataclass(frozen=True, slots=True)
class Token:
    """Where the token is; ``pin`` is kept out of repr and str."""

    label: str
    pin: str = field(repr=False)
    module: Path = DEFAULT_MODULE

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A logged-in session, one user at a time per process.

        The login is kept for the process's life rather than made per operation. With
        SoftHSM2 every login rewrites the token's file, and any process reading the token
        meanwhile fails its integrity check with CKR_GENERAL_ERROR (two processes logging in
        in a loop see it on a third of their calls; SoftHSMv2 #757); processes that stay
        logged in only read, and see none. PKCS#11 login belongs to the application, not
        the session, so one session serves every thread in turn (``gateway run
        --in-process`` has three threads using the token).
        """
        global _depth
        with _SESSION_LOCK:
            try:
                session = self._login()
                _depth += 1
                try:
                    yield session
                except _SESSION_LOST:
                    self._forget()
                    raise
                except _Unseen as exc:
                    self._forget()
                    raise TokenBusy(f"token {self.label!r}: {exc}; logging in again") from None
                finally:
                    _depth -= 1
            except (pkcs11.GeneralError, pkcs11.ObjectHandleInvalid) as exc:
                raise TokenBusy(f"token {self.label!r}: {type(exc).__name__} (the token failed; with SoftHSM2 "
                                "most likely another process writing it)") from None
            except (pkcs11.PKCS11Error, RuntimeError, OSError, ValueError) as exc:  # ValueError: a PIN
                raise TokenError(f"token {self.label!r}: {type(exc).__name__} {exc}".rstrip()) from None

    def _login(self) -> Any:
        global _kept
        login = _LOGINS.get((str(self.module), self.label))
        _kept = login is not None and hmac.compare_digest(login.pin, _pin_bytes(self.pin))
        if login is not None and _kept:
            return login.session
        self._forget()  # another PIN logs in afresh: a kept login must not stand in for a wrong one
        session = self._open()
        _LOGINS[(str(self.module), self.label)] = _Login(_pin_bytes(self.pin), session)
        return session

    def _forget(self) -> None:
        login = _LOGINS.pop((str(self.module), self.label), None)
        if login is not None:
            _close(login)

    def _open(self) -> Any:
        """Log in, riding out another process rewriting SoftHSM2's files.

        CKR_GENERAL_ERROR from C_GetTokenInfo or C_Login means the token's file was read
        while being written. A process whose C_Initialize fell on such a moment keeps a
        broken view of the token (NoSuchToken, or a user PIN "not initialised") until the
        library is initialised again (twice at most here, and never inside another session
        of this thread). Nothing was done yet, so each is retried; a wrong PIN fails at
        once, a missing token after the retries (about 0.3 s).
        """
        if _forked:
            reinitialize(self.module)
        lib = pkcs11.lib(str(self.module))
        fresh_views = 2
        for delay in _OPEN_BACKOFF:
            try:
                return lib.get_token(token_label=self.label).open(rw=True, user_pin=self.pin)
            except pkcs11.GeneralError:
                if delay is None:
                    raise
            except _STALE_VIEW:
                if delay is None or _depth or not fresh_views:
                    raise
                reinitialize(self.module)
                fresh_views -= 1
            _pause(delay)
        raise AssertionError("unreachable: the last backoff step re-raises")

    # ------------------------------------------------------------- keys
    def generate_key(self, label: str, profile: CryptoProfile) -> TokenKey:
        """An EC key pair made inside the token: private half sensitive, never extractable."""
        check_name(label)
        key_id = hashlib.sha256(label.encode()).digest()[:8]
        with self.session() as s:
            if list(s.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
                raise TokenError(f"token {self.label!r} already holds a key {label!r}")
            params = s.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_ASN1_CURVE[profile])}, local=True)
            params.generate_keypair(
                store=True, label=label, id=key_id,
                private_template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True,
                                  Attribute.SIGN: True, Attribute.DERIVE: True, Attribute.PRIVATE: True},
                public_template={Attribute.VERIFY: True},
            )
        return TokenKey(label=label, key_id=key_id, profile=profile)

    @_reread
    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        with self.session() as s:
            pub = self._one(s, label, ObjectClass.PUBLIC_KEY)
            point = asn1_core.OctetString.load(pub[Attribute.EC_POINT]).native
            params = asn1_keys.ECDomainParameters.load(pub[Attribute.EC_PARAMS]).chosen.native
        profile: CryptoProfile = "bsi" if params == "brainpoolp256r1" else "modern"
        return ec.EllipticCurvePublicKey.from_encoded_point(curve(profile), point)

    @_reread
    def sign_digest(self, label: str, digest: bytes) -> bytes:
        """DER ECDSA signature over a SHA-256 digest (SoftHSM2 wants plain CKM_ECDSA)."""
        with self.session() as s:
            raw = self._one(s, label, ObjectClass.PRIVATE_KEY).sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    @_reread
    def agree(self, label: str, peer: ec.EllipticCurvePublicKey) -> bytes:
        """ECDH shared secret Z with the token key (CKM_ECDH1_DERIVE, null KDF).

        The private key stays inside; Z leaves as a session object's value because the CMS
        KDF (X9.63 with the CMS SharedInfo) runs in software. The derived object is not stored.
        """
        point = peer.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        size = (peer.curve.key_size + 7) // 8
        with self.session() as s:
            secret = self._one(s, label, ObjectClass.PRIVATE_KEY).derive_key(
                KeyType.GENERIC_SECRET, size * 8, mechanism_param=(pkcs11.KDF.NULL, None, point),
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.TOKEN: False})
            try:
                value = bytes(secret[Attribute.VALUE])
            finally:
                secret.destroy()  # the session is kept: its objects would outlive this call
        return value

    def make_csr(self, label: str, name: str) -> x509.CertificateSigningRequest:
        """A PKCS#10 request for the token key ``label``, signed inside the token."""
        check_name(name)
        public = self.public_key(label)
        spki = asn1_keys.PublicKeyInfo.load(public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        info = asn1_csr.CertificationRequestInfo({
            "version": "v1",
            "subject": asn1_csr.Name.build({"common_name": name}),
            "subject_pk_info": spki,
            "attributes": [],
        })
        signature = self.sign_digest(label, hashlib.sha256(info.dump()).digest())
        request = asn1_csr.CertificationRequest({
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        })
        return x509.load_der_x509_csr(request.dump())

    def import_certificate(self, label: str, cert: x509.Certificate) -> None:
        """Store the issued certificate next to its key (same id), after checking they match."""
        if cert.public_key() != self.public_key(label):
            raise TokenError(f"certificate does not belong to token key {label!r}")
        der = cert.public_bytes(serialization.Encoding.DER)
        with self.session() as s:
            key_id = self._one(s, label, ObjectClass.PRIVATE_KEY)[Attribute.ID]
            for old in s.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.CERTIFICATE}):
                old.destroy()
            s.create_object({
                Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                Attribute.LABEL: label, Attribute.ID: key_id, Attribute.TOKEN: True, Attribute.VALUE: der,
                Attribute.SUBJECT: cert.subject.public_bytes(),
            })

    @_reread
    def certificate(self, label: str) -> x509.Certificate | None:
        with self.session() as s:
            for obj in s.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.CERTIFICATE}):
                return x509.load_der_x509_certificate(obj[Attribute.VALUE])
        return None

    @_reread
    def keys(self) -> list[TokenKey]:
        with self.session() as s:
            certs = {o[Attribute.LABEL]: x509.load_der_x509_certificate(o[Attribute.VALUE]).not_valid_after_utc
                     for o in s.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})}
            out = []
            for key in s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
                try:
                    params = asn1_keys.ECDomainParameters.load(key[Attribute.EC_PARAMS]).chosen.native
                except ValueError:  # a key another process is making, not whole yet
                    raise TokenBusy(f"token {self.label!r}: a private key without curve parameters "
                                    "(being made by another process, or damaged)") from None
                out.append(TokenKey(label=key[Attribute.LABEL], key_id=key[Attribute.ID],
                                    profile="bsi" if params == "brainpoolp256r1" else "modern",
                                    not_after=certs.get(key[Attribute.LABEL])))
            if not out and _kept:
                raise _Unseen("no private key seen")
        return sorted(out, key=lambda k: k.label)

    # ------------------------------------------------------------- secrets
    def generate_secret(self, label: str) -> None:
        """A 256-bit HMAC key made inside the token (sensitive, not extractable): the
        per-party pseudonym key, so no one outside the token can link pseudonyms to meters."""
        check_name(label)
        with self.session() as s:
            if list(s.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.SECRET_KEY})):
                raise TokenError(f"token {self.label!r} already holds a secret {label!r}")
            s.generate_key(KeyType.GENERIC_SECRET, 256, label=label, id=hashlib.sha256(label.encode()).digest()[:8],
                           store=True, template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                                 Attribute.SIGN: True, Attribute.VERIFY: True,
                                                 Attribute.PRIVATE: True})

    @_reread
    def hmac_sha256(self, label: str, data: bytes) -> bytes:
        with self.hmac_session(label) as mac:
            return mac(data)

    @contextmanager
    def hmac_session(self, label: str, *, create: bool = False) -> Iterator[Callable[[bytes], bytes]]:
        """HMAC-SHA256 with ``label`` as a function, valid while the block runs: one login for
        many MACs (checking an audit log of 100,000 rows would take minutes with a login each).
        ``create`` makes the key first if the token has none (the first audit row ever)."""
        if create:
            with self.session() as s:
                missing = not list(s.get_objects({Attribute.LABEL: label, Attribute.CLASS: ObjectClass.SECRET_KEY}))
                if missing and _kept:  # or hidden by a lost login: a second key of that label would follow
                    raise _Unseen(f"no SECRET_KEY {label!r} seen")
            if missing:
                self.generate_secret(label)
        with self.session() as s:
            key = self._one(s, label, ObjectClass.SECRET_KEY)

            def mac(data: bytes) -> bytes:
                try:
                    return bytes(key.sign(data, mechanism=Mechanism.SHA256_HMAC))
                except _PASS_ON:
                    raise  # session() forgets the kept login, or calls it busy
                except pkcs11.PKCS11Error as exc:
                    raise TokenError(f"token refused HMAC with {label!r}: {type(exc).__name__}") from None

            yield mac

    @_reread
    def openvpn_ids(self) -> dict[str, str]:
        """``{key label: pkcs11-id}`` for every certified key, in pkcs11-helper's serialized
        form (what ``openvpn --show-pkcs11-ids`` prints), so configs need no subprocess."""
        with self.session() as s:
            token = s.token
            prefix = "/".join(_helper_escape(str(v).rstrip(" ")) for v in (
                token.manufacturer_id, token.model,
                token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else token.serial,
                token.label))
            return {c[Attribute.LABEL]: f"{prefix}/{bytes(c[Attribute.ID]).hex().upper()}"
                    for c in s.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})}

    @staticmethod
    def _one(session: Any, label: str, cls: ObjectClass) -> Any:
        found = list(session.get_objects({Attribute.LABEL: label, Attribute.CLASS: cls}))
        if not found and _kept and cls in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
            raise _Unseen(f"no {cls.name} {label!r} seen")
        if len(found) != 1:
            raise TokenError(f"token holds {len(found)} objects {label!r} of class {cls.name}")
        return found[0]
