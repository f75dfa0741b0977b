"""Accounts, sessions, API keys and the sign-in rate limits, on a real SQLite file and real argon2 hashes."""

from __future__ import annotations

import sqlite3

import pytest

from server.accounts import MAX_SESSION_DAYS, Accounts, LoginError, normalise_passcode
from server.principal import HOST, Principal, check_name
from server.ratelimit import LoginLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def accounts(tmp_path, clock):
    accounts = Accounts(tmp_path / "melange.db", session_hours=2, clock=clock)
    yield accounts
    accounts.close()


def test_the_admin_password_is_made_once_and_stored_only_as_an_argon2_hash(accounts, tmp_path):
    made = accounts.ensure_admin(None)
    assert made and len(made) >= 12
    assert accounts.ensure_admin(None) is None, "printed once: the next start keeps it"
    assert accounts.authenticate("admin", made) == HOST
    assert accounts.authenticate("Admin", made) == HOST, "the host's name is not case-sensitive"
    with sqlite3.connect(tmp_path / "melange.db") as db:
        (stored,) = db.execute("SELECT password_hash FROM accounts WHERE name = 'admin'").fetchone()
    assert stored.startswith("$argon2id$") and made not in stored


def test_a_given_admin_password_replaces_the_old_one_and_ends_its_sessions(accounts):
    accounts.ensure_admin("first-password")
    token = accounts.start_session(accounts.authenticate("admin", "first-password"))
    assert accounts.session(token) == HOST
    accounts.ensure_admin("second-password")
    assert accounts.session(token) is None
    with pytest.raises(LoginError):
        accounts.authenticate("admin", "first-password")
    assert accounts.authenticate("admin", "second-password") == HOST
    with pytest.raises(ValueError, match="8 characters"):
        accounts.ensure_admin("short")


def test_guests_sign_in_with_their_name_and_the_passcode_until_it_rotates(accounts):
    code = accounts.passcode
    alice = accounts.authenticate("Alice", code)
    assert alice == Principal("guest", "Alice") and not alice.is_host
    assert accounts.authenticate("alice", f"  {code[:4]} {code[4:].upper()} ").name == "Alice", "the first spelling stays"
    assert normalise_passcode("AB-cd ef") == "abcdef"
    accounts.rotate_passcode()
    with pytest.raises(LoginError, match="Wrong"):
        accounts.authenticate("Alice", code)
    assert [g.name for g in accounts.guests()] == ["Alice"]


@pytest.mark.parametrize("name", ["", "   ", "host", "root", "../etc", "a" * 40, "<script>", "guest:bob"])
def test_reserved_and_malformed_names_cannot_sign_in_as_guests(accounts, name):
    with pytest.raises(LoginError):
        accounts.authenticate(name, accounts.passcode)


def test_a_named_account_takes_its_own_password_only(accounts):
    accounts.create_guest("Bob", "bobs-password")
    assert accounts.authenticate("bob", "bobs-password") == Principal("guest", "Bob")
    with pytest.raises(LoginError):
        accounts.authenticate("Bob", accounts.passcode)
    with pytest.raises(ValueError, match="reserved"):
        accounts.create_guest("admin", "whatever-long")


def test_sessions_slide_with_use_and_expire_when_idle_or_too_old(accounts, clock):
    token = accounts.start_session(Principal("guest", "Carol"))
    accounts.authenticate("Carol", accounts.passcode)  # the guest exists
    clock.now += 3600
    assert accounts.session(token) == Principal("guest", "Carol"), "used within its 2 hours"
    clock.now += 3600 + 60
    assert accounts.session(token) is not None, "the last use moved the expiry on"
    clock.now += 2 * 3600 + 1
    assert accounts.session(token) is None, "idle past 2 hours"

    token = accounts.start_session(Principal("guest", "Carol"))
    for _ in range(MAX_SESSION_DAYS * 24):
        clock.now += 3600
        accounts.session(token)
    assert accounts.session(token) is None, "at most a week however it is used"


def test_made_up_tampered_and_ended_tokens_are_nobody(accounts):
    token = accounts.start_session(HOST)
    assert accounts.session(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert accounts.session("") is None and accounts.session(None) is None and accounts.session("x" * 10_000) is None
    accounts.end_session(token)
    assert accounts.session(token) is None


def test_removing_a_guest_ends_their_sessions_and_keys(accounts):
    dave = accounts.authenticate("Dave", accounts.passcode)
    token, key = accounts.start_session(dave), accounts.new_api_key(dave)
    assert accounts.session(token) == dave and accounts.api_key(key) == dave
    accounts.remove_guest("Dave")
    assert accounts.session(token) is None and accounts.api_key(key) is None


def test_api_keys_are_shown_once_and_stored_as_hashes(accounts, tmp_path):
    key = accounts.new_api_key(HOST)
    assert key.startswith("mel-") and accounts.api_key(key) == HOST
    assert accounts.api_keys(HOST) == [key[:10] + "…"]
    with sqlite3.connect(tmp_path / "melange.db") as db:
        assert key not in str(db.execute("SELECT * FROM api_keys").fetchall())
    assert accounts.api_key("mel-" + "x" * 43) is None and accounts.api_key("Bearer") is None
    accounts.revoke_api_keys(HOST)
    assert accounts.api_key(key) is None


def test_failed_sign_ins_are_limited_per_address_and_per_name():
    limiter = LoginLimiter(per_address="4/minute", per_name="2/minute")
    assert limiter.check("10.0.0.5", "eve") is None
    limiter.failed("10.0.0.5", "eve")
    limiter.failed("10.0.0.6", "eve")
    refusal = limiter.check("10.0.0.7", "Eve")
    assert refusal is not None and "for 'Eve'" in refusal.message and refusal.retry_after >= 1
    assert limiter.check("10.0.0.7", "frank") is None, "another name from another address is fine"
    for name in ("g1", "g2", "g3"):
        limiter.failed("10.0.0.5", name)
    refusal = limiter.check("10.0.0.5", "someone-new")
    assert refusal is not None and "from this device" in refusal.message


def test_names_are_checked_and_tidied():
    assert check_name("  Ada   Lovelace ") == "Ada Lovelace"
    for bad in ("", "-dash", "a/b", "é" * 3):
        with pytest.raises(ValueError):
            check_name(bad)
    assert Principal("guest", "Ada Lovelace").folder == "guests/ada_lovelace"
    assert Principal.decode(Principal("guest", "Ada").encode()) == Principal("guest", "Ada")
    assert Principal.decode(None) == HOST and HOST.folder == "" and HOST.owner == "local"
