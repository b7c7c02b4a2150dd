"""The portal's own database: accounts, sessions, login failures, device tokens.

Separate from the gateway's store, which the portal only reads. Secrets are kept as
hashes: passwords with scrypt, session ids and device tokens (random, 256 bits) with
SHA-256, one-time codes as the SHA-256 that ``portal.json`` carries. One connection behind
a lock: every operation is a few rows.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from portal import ratelimit
from portal.passwords import hash_password, verify_password
from portal.settings import ConsumerSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    consumer TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,        -- the one-time code that set it: used up
    set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS session (
    id_sha256 TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failure (
    key TEXT PRIMARY KEY,             -- account:<name> or source:<address>
    failures INTEGER NOT NULL,
    last_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_token (
    id INTEGER PRIMARY KEY,
    consumer TEXT NOT NULL,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used_at REAL
);
"""

TOKEN_PREFIX = "smgwd_"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    consumer: str
    csrf: str
    id_sha256: str


@dataclass(frozen=True, slots=True)
class DeviceToken:
    id: int
    name: str
    created_at: float
    last_used_at: float | None


class Accounts:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / "portal.db"
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
        self.path.chmod(0o600)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA secure_delete=ON")
        self._con.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # -- passwords -------------------------------------------------------------------------

    def has_password(self, consumer: str) -> bool:
        with self._lock:
            return self._con.execute("SELECT 1 FROM account WHERE consumer = ?", (consumer,)).fetchone() is not None

    def check_password(self, consumer: str, password: str) -> bool:
        with self._lock:
            row = self._con.execute("SELECT password_hash FROM account WHERE consumer = ?", (consumer,)).fetchone()
        if row is None:
            verify_password(password, _DUMMY_HASH)  # the same time whether or not the account exists
            return False
        return verify_password(password, row[0])

    def code_usable(self, consumer: ConsumerSettings, code: str) -> bool:
        """The configured one-time code, not yet used to set a password."""
        if not hmac.compare_digest(_sha(code), consumer.setup_code_sha256):
            return False
        with self._lock:
            row = self._con.execute("SELECT code_sha256 FROM account WHERE consumer = ?", (consumer.name,)).fetchone()
        return row is None or row[0] != consumer.setup_code_sha256

    def set_password(self, consumer: str, password: str, code_sha256: str | None = None) -> None:
        """A new password; every session of the consumer ends (a stolen one too)."""
        hashed = hash_password(password)
        with self._lock:
            old = self._con.execute("SELECT code_sha256 FROM account WHERE consumer = ?", (consumer,)).fetchone()
            code = code_sha256 if code_sha256 is not None else (old[0] if old else "")
            self._con.execute("BEGIN IMMEDIATE")
            self._con.execute("INSERT INTO account VALUES (?, ?, ?, ?) ON CONFLICT (consumer) DO UPDATE SET "
                              "password_hash = excluded.password_hash, code_sha256 = excluded.code_sha256, "
                              "set_at = excluded.set_at", (consumer, hashed, code, time.time()))
            self._con.execute("DELETE FROM session WHERE consumer = ?", (consumer,))
            self._con.execute("COMMIT")

    # -- login failures --------------------------------------------------------------------

    def wait_left(self, keys: list[str], now: float | None = None) -> float:
        now = time.time() if now is None else now
        with self._lock:
            rows = [self._con.execute("SELECT failures, last_at FROM failure WHERE key = ?", (k,)).fetchone()
                    for k in keys]
        return max((ratelimit.wait_left(r[0], r[1], now) for r in rows if r is not None), default=0.0)

    def record_failure(self, keys: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for key in keys:
                row = self._con.execute("SELECT failures, last_at FROM failure WHERE key = ?", (key,)).fetchone()
                failures = 1 + (ratelimit.failures_now(row[0], row[1], now) if row else 0)
                self._con.execute("INSERT OR REPLACE INTO failure VALUES (?, ?, ?)", (key, failures, now))

    def clear_failures(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._con.execute("DELETE FROM failure WHERE key = ?", (key,))

    # -- sessions --------------------------------------------------------------------------

    def new_session(self, consumer: str, hours: float) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(consumer, secrets.token_urlsafe(32), _sha(token))
        now = time.time()
        with self._lock:
            self._con.execute("DELETE FROM session WHERE expires_at < ?", (now,))
            self._con.execute("INSERT INTO session VALUES (?, ?, ?, ?, ?)",
                              (session.id_sha256, consumer, session.csrf, now, now + hours * 3600))
        return token, session

    def session(self, token: str) -> Session | None:
        if not token or len(token) > 100:
            return None
        with self._lock:
            row = self._con.execute("SELECT consumer, csrf, id_sha256 FROM session WHERE id_sha256 = ? "
                                    "AND expires_at > ?", (_sha(token), time.time())).fetchone()
        return Session(*row) if row else None

    def end_session(self, session: Session) -> None:
        with self._lock:
            self._con.execute("DELETE FROM session WHERE id_sha256 = ?", (session.id_sha256,))

    # -- device tokens ---------------------------------------------------------------------

    def new_device_token(self, consumer: str, name: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            count = self._con.execute("SELECT count(*) FROM device_token WHERE consumer = ?", (consumer,)).fetchone()[0]
            if count >= 20:
                raise ValueError("too_many_tokens")
            self._con.execute("INSERT INTO device_token (consumer, name, token_sha256, created_at) VALUES (?, ?, ?, ?)",
                              (consumer, name, _sha(token), time.time()))
        return token

    def device_tokens(self, consumer: str) -> list[DeviceToken]:
        with self._lock:
            rows = self._con.execute("SELECT id, name, created_at, last_used_at FROM device_token "
                                     "WHERE consumer = ? ORDER BY id", (consumer,)).fetchall()
        return [DeviceToken(*row) for row in rows]

    def revoke_device_token(self, consumer: str, token_id: int) -> bool:
        with self._lock:
            return self._con.execute("DELETE FROM device_token WHERE id = ? AND consumer = ?",
                                     (token_id, consumer)).rowcount == 1

    def device_consumer(self, token: str) -> str | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        with self._lock:
            row = self._con.execute("SELECT id, consumer FROM device_token WHERE token_sha256 = ?",
                                    (_sha(token),)).fetchone()
            if row is None:
                return None
            self._con.execute("UPDATE device_token SET last_used_at = ? WHERE id = ?", (time.time(), row[0]))
        return str(row[1])


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # same cost, never matches
