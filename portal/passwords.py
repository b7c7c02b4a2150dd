"""Password hashes: scrypt from OpenSSL through hashlib, never our own construction.

n=2**14, r=8, p=1 (16 MiB, about 50 ms here): costly enough for an offline attacker, cheap
enough for a Raspberry Pi serving one household. The parameters travel in the hash text so
they can grow without invalidating old hashes.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import secrets

N, R, P = 2**14, 8, 1
MIN_LENGTH = 10
MAX_LENGTH = 256


def _give_back() -> None:
    """Return scrypt's 16 MiB to the system at once (glibc keeps freed memory in its pools;
    the portal's budget is 40 MB and it may run inside another process without our mallopt)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    try:
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    finally:
        _give_back()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode(), salt, N, R, P)
    return "$".join(["scrypt", str(N), str(R), str(P), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        if not (2**10 <= int(n) <= 2**20 and 1 <= int(r) <= 32 and 1 <= int(p) <= 16):
            return False  # a stored hash never asks for more than we would spend
        got = _scrypt(password.encode()[:MAX_LENGTH * 4], base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def password_problem(password: str) -> str | None:
    """Why a new password is refused (a message key), or None."""
    if len(password) < MIN_LENGTH:
        return "password_too_short"
    if len(password) > MAX_LENGTH:
        return "password_too_long"
    return None
