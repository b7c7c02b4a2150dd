"""Roles and crypto profiles: what each certificate may be used for, and with which curve.

Every certificate carries exactly one role policy OID (under a UUID arc, ITU-T X.667, so no
registration is needed) besides key usage and extended key usage; ``role_of`` reads it back
and ``require_role`` refuses a certificate offered for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from pki.errors import RoleError

Role = Literal["gwa-wakeup", "gwa-admin", "party-tls", "party-enc", "gateway-tls", "gateway-sig", "gateway-enc",
               "gateway-api"]
CryptoProfile = Literal["bsi", "modern"]
ROLES: tuple[Role, ...] = (
    "gwa-wakeup", "gwa-admin", "party-tls", "party-enc", "gateway-tls", "gateway-sig", "gateway-enc", "gateway-api",
)

#: 2.25.<uuid as integer>: the smgw role arc (a UUID OID, no registration needed).
ROLE_ARC = "2.25.203551094856212432196236616463587414851"


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleProfile:
    role: Role
    number: int
    digital_signature: bool = False
    content_commitment: bool = False
    key_agreement: bool = False
    eku: tuple[ObjectIdentifier, ...] = ()
    san_dns: bool = False  #: TLS servers carry their name as a DNS SAN (verify-x509-name)
    days: int = 730

    @property
    def policy_oid(self) -> ObjectIdentifier:
        return ObjectIdentifier(f"{ROLE_ARC}.{self.number}")

    def key_usage(self) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=self.digital_signature, content_commitment=self.content_commitment,
            key_encipherment=False, data_encipherment=False, key_agreement=self.key_agreement,
            key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        )


PROFILES: dict[Role, RoleProfile] = {
    # an EKU of our own, so that TLS (which takes a certificate without EKU for any purpose)
    # never accepts the wake-up signer as a client of the admin API
    "gwa-wakeup": RoleProfile(role="gwa-wakeup", number=1, digital_signature=True,
                              eku=(ObjectIdentifier(f"{ROLE_ARC}.101"),)),
    # the GWA's admin identity: server of the admin tunnel, client of the gateway's admin API
    "gwa-admin": RoleProfile(role="gwa-admin", number=2, digital_signature=True,
                             eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH), san_dns=True),
    "party-tls": RoleProfile(role="party-tls", number=3, digital_signature=True,
                             eku=(ExtendedKeyUsageOID.SERVER_AUTH,), san_dns=True),
    "party-enc": RoleProfile(role="party-enc", number=4, key_agreement=True),
    "gateway-tls": RoleProfile(role="gateway-tls", number=5, digital_signature=True,
                               eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)),
    "gateway-sig": RoleProfile(role="gateway-sig", number=6, digital_signature=True, content_commitment=True),
    "gateway-enc": RoleProfile(role="gateway-enc", number=7, key_agreement=True),
    # the gateway's admin API server (HTTPS on the admin tunnel address), its key in the token
    "gateway-api": RoleProfile(role="gateway-api", number=8, digital_signature=True,
                               eku=(ExtendedKeyUsageOID.SERVER_AUTH,), san_dns=True),
}
_BY_OID = {p.policy_oid: p.role for p in PROFILES.values()}


def curve(profile: CryptoProfile) -> ec.EllipticCurve:
    """``bsi``: brainpoolP256r1 (TR-03116-3); ``modern``: NIST P-256."""
    return ec.BrainpoolP256R1() if profile == "bsi" else ec.SECP256R1()


def profile_of_key(key: ec.EllipticCurvePublicKey) -> CryptoProfile:
    if isinstance(key.curve, ec.BrainpoolP256R1):
        return "bsi"
    if isinstance(key.curve, ec.SECP256R1):
        return "modern"
    raise RoleError(f"key on curve {key.curve.name} belongs to no crypto profile")


def get_profile(role: str) -> RoleProfile:
    if role not in PROFILES:
        raise RoleError(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    return PROFILES[role]


def role_of(cert: x509.Certificate) -> Role:
    """The one role a certificate's policy names; anything else is refused."""
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        raise RoleError("certificate carries no smgw role policy") from None
    roles = {_BY_OID[p.policy_identifier] for p in policies if p.policy_identifier in _BY_OID}
    if len(roles) != 1:
        raise RoleError(f"certificate must name exactly one smgw role, names {sorted(roles) or 'none'}")
    return roles.pop()


def require_role(cert: x509.Certificate, role: Role) -> None:
    """Refuse a certificate offered for a role other than its own, or whose usages disagree."""
    actual = role_of(cert)
    if actual != role:
        raise RoleError(f"certificate of role {actual} offered as {role}")
    profile = PROFILES[role]
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise RoleError(f"certificate of role {role} carries no key usage") from None
    if usage.digital_signature != profile.digital_signature or usage.key_agreement != profile.key_agreement:
        raise RoleError(f"certificate's key usage does not match role {role}")
