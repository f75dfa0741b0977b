"""Accounts, sessions and API keys in the app's SQLite; passwords hashed with argon2 (argon2-cffi).

Three ways in, one ``Principal`` out:
- the host signs in as ``admin`` with the admin password;
- a guest signs in with their name and the guest passcode (new each start; the host can rotate it), or with
  a named account and its own password, made by the host;
- a script sends ``Authorization: Bearer <key>``, a key its user made on the page.

Session cookies and API keys are long random tokens; only their SHA-256 is stored, so a copy of the
database lets nobody in. A session lasts ``session_hours`` from its last use, at most ``MAX_SESSION_DAYS``.
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

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server.principal import HOST, Principal, check_name

ADMIN = "admin"
RESERVED = {"admin", "host", "local", "root"}
MAX_SESSION_DAYS = 7
TOUCH_EVERY = 60.0  # seconds between writes of a session's last use
PASSCODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off a projector
KEY_PREFIX = "mel-"

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('host', 'guest')),
    password_hash TEXT,  -- NULL: a guest who came in with the passcode
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(username);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    prefix TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class LoginError(ValueError):
    """Wrong name, password or passcode; the message is safe to show."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_passcode() -> str:
    """Eight characters a colleague can type on a phone; about 40 bits, and logins are rate-limited."""
    return "".join(secrets.choice(PASSCODE_ALPHABET) for _ in range(8))


def normalise_passcode(text: str) -> str:
    return "".join((text or "").split()).replace("-", "").lower()


@dataclass(frozen=True)
class Guest:
    name: str
    has_password: bool  # a named account the host made; else a passcode guest
    created: float
    sessions: int  # signed in now, on this many browsers


class Accounts:
    def __init__(self, path: Path, session_hours: float = 12.0, clock=time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.session_seconds = session_hours * 3600
        self._clock = clock
        self._hasher = PasswordHasher()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._passcode = new_passcode()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- the host

    def has_admin(self) -> bool:
        return self._run("SELECT 1 FROM accounts WHERE name = ?", (ADMIN,)).fetchone() is not None

    def set_admin_password(self, password: str) -> None:
        if len(password) < 8:
            raise ValueError("The admin password must have at least 8 characters.")
        row = self._run("SELECT password_hash FROM accounts WHERE name = ?", (ADMIN,)).fetchone()
        if row and self._matches(row[0], password):
            return  # unchanged: keep the hash (and every session made with it)
        self._run(
            "INSERT INTO accounts (name, role, password_hash, created) VALUES (?, 'host', ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
            (ADMIN, self._hasher.hash(password), self._clock()),
        )
        self._run("DELETE FROM sessions WHERE username = ?", (HOST.encode(),))  # a new password ends old sessions

    def ensure_admin(self, password: str | None) -> str | None:
        """Set the admin password when one is given; else make one on the very first start.
        Returns a newly made password (to print once), or None."""
        if password:
            self.set_admin_password(password)
            return None
        if self.has_admin():
            return None
        made = secrets.token_urlsafe(12)
        self.set_admin_password(made)
        return made

    # ---------------------------------------------------------------- guests

    @property
    def passcode(self) -> str:
        return self._passcode

    def rotate_passcode(self) -> str:
        self._passcode = new_passcode()
        return self._passcode

    def create_guest(self, name: str, password: str) -> str:
        name = check_name(name)
        if name.casefold() in RESERVED:
            raise ValueError(f"{name!r} is reserved; choose another name.")
        if len(password) < 8:
            raise ValueError("A guest's password must have at least 8 characters.")
        try:
            self._run(
                "INSERT INTO accounts (name, role, password_hash, created) VALUES (?, 'guest', ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash WHERE password_hash IS NULL",
                (name, self._hasher.hash(password), self._clock()),
            )
        except sqlite3.IntegrityError as e:
            raise ValueError(f"Could not create {name!r}: {e}") from e
        row = self._run("SELECT name FROM accounts WHERE name = ?", (name,)).fetchone()
        return row[0]

    def remove_guest(self, name: str) -> None:
        """The account goes and its sessions and keys end; what the guest made stays with the host."""
        if name.casefold() in RESERVED:
            raise ValueError("The host cannot be removed.")
        principal = Principal("guest", name)
        self._run("DELETE FROM accounts WHERE name = ? AND role = 'guest'", (name,))
        self.end_sessions(principal)
        self._run("DELETE FROM api_keys WHERE username = ? COLLATE NOCASE", (principal.encode(),))

    def guests(self) -> list[Guest]:
        now = self._clock()
        rows = self._run(
            "SELECT a.name, a.password_hash IS NOT NULL, a.created, "
            "(SELECT COUNT(*) FROM sessions s WHERE s.username = 'guest:' || a.name COLLATE NOCASE AND s.expires > ?) "
            "FROM accounts a WHERE a.role = 'guest' ORDER BY a.name COLLATE NOCASE",
            (now,),
        ).fetchall()
        return [Guest(r[0], bool(r[1]), r[2], r[3]) for r in rows]

    # ---------------------------------------------------------------- signing in

    def _matches(self, password_hash: str | None, password: str) -> bool:
        if not password_hash:
            return False
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def authenticate(self, name: str, password: str) -> Principal:
        """Who this name and password (or passcode) are; raises LoginError."""
        name = " ".join((name or "").split())
        wrong = LoginError("Wrong name, password or passcode.")
        if name.casefold() == ADMIN:
            row = self._run("SELECT password_hash FROM accounts WHERE name = ?", (ADMIN,)).fetchone()
            if row and self._matches(row[0], password):
                return HOST
            raise wrong
        try:
            name = check_name(name)
        except ValueError as e:
            raise LoginError(str(e)) from None
        if name.casefold() in RESERVED:
            raise wrong
        row = self._run("SELECT name, password_hash FROM accounts WHERE name = ? AND role = 'guest'", (name,)).fetchone()
        if row and row[1]:  # a named account: its own password only
            if self._matches(row[1], password):
                return Principal("guest", row[0])
            raise wrong
        if hmac.compare_digest(normalise_passcode(password), self._passcode):
            if row is None:
                self._run(
                    "INSERT OR IGNORE INTO accounts (name, role, password_hash, created) VALUES (?, 'guest', NULL, ?)",
                    (name, self._clock()),
                )
                row = (name, None)
            return Principal("guest", row[0])
        raise wrong

    # ---------------------------------------------------------------- sessions

    def start_session(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self._run(
            "INSERT INTO sessions (token_hash, username, created, expires, last_seen) VALUES (?, ?, ?, ?, ?)",
            (_digest(token), principal.encode(), now, now + self.session_seconds, now),
        )
        return token

    def session(self, token: str | None) -> Principal | None:
        """The principal of a live session; None for a missing, expired or made-up token."""
        if not token or len(token) > 200:
            return None
        key = _digest(token)
        row = self._run("SELECT username, created, expires, last_seen FROM sessions WHERE token_hash = ?", (key,)).fetchone()
        if row is None:
            return None
        username, created, expires, last_seen = row
        now = self._clock()
        if now >= expires:
            self._run("DELETE FROM sessions WHERE token_hash = ?", (key,))
            return None
        if now - last_seen > TOUCH_EVERY:  # sliding expiry, written at most once a minute
            new_expiry = min(now + self.session_seconds, created + MAX_SESSION_DAYS * 86400)
            self._run("UPDATE sessions SET last_seen = ?, expires = ? WHERE token_hash = ?", (now, new_expiry, key))
        principal = Principal.decode(username)
        if not principal.is_host and not self._guest_exists(principal.name):
            return None  # removed by the host
        return principal

    def _guest_exists(self, name: str) -> bool:
        return self._run("SELECT 1 FROM accounts WHERE name = ? AND role = 'guest'", (name,)).fetchone() is not None

    def end_session(self, token: str | None) -> None:
        if token:
            self._run("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))

    def end_sessions(self, principal: Principal) -> None:
        self._run("DELETE FROM sessions WHERE username = ? COLLATE NOCASE", (principal.encode(),))

    def prune(self) -> None:
        self._run("DELETE FROM sessions WHERE expires <= ?", (self._clock(),))

    # ---------------------------------------------------------------- API keys

    def new_api_key(self, principal: Principal) -> str:
        """A key for scripts (``Authorization: Bearer …``); shown once, stored only as a hash."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self._run(
            "INSERT INTO api_keys (key_hash, username, prefix, created) VALUES (?, ?, ?, ?)",
            (_digest(key), principal.encode(), key[:10], self._clock()),
        )
        return key

    def api_keys(self, principal: Principal) -> list[str]:
        rows = self._run("SELECT prefix FROM api_keys WHERE username = ? ORDER BY created", (principal.encode(),)).fetchall()
        return [r[0] + "…" for r in rows]

    def revoke_api_keys(self, principal: Principal) -> None:
        self._run("DELETE FROM api_keys WHERE username = ?", (principal.encode(),))

    def api_key(self, key: str | None) -> Principal | None:
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        row = self._run("SELECT username FROM api_keys WHERE key_hash = ?", (_digest(key),)).fetchone()
        if row is None:
            return None
        principal = Principal.decode(row[0])
        if not principal.is_host and not self._guest_exists(principal.name):
            return None
        return principal
