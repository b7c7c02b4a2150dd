"""Errors of the PKI: one root, one subclass per kind of refusal."""

from __future__ import annotations


class PkiError(Exception):
    """Root of everything the PKI refuses deliberately."""

    exit_code = 1


class InvalidNameError(PkiError):
    """A CN or SAN outside the strict name pattern."""


class RoleError(PkiError):
    """A certificate used outside its role, or an unknown role."""


class CaError(PkiError):
    """The CA directory is missing, damaged, locked with another passphrase, or asked the impossible."""


class CsrError(PkiError):
    """A certificate request that is malformed, badly signed or of the wrong key type."""
