"""Chat conversations in SQLite (WAL mode) under the data folder: they survive restarts and crashes.

Every message is written when it exists, the user's before generation starts, so nothing typed is lost.
Each conversation has an ``owner`` (the host's is "local"; a LAN guest's "guest:<name>") and is known to
the page and the API by a random ``id`` that cannot be guessed; the integer row id stays inside.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT 'local',
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    stats TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations(owner, updated DESC);
"""
# Added after the first release: a random public id. Existing rows get one when the store opens.
MIGRATIONS = (
    ("uid", "ALTER TABLE conversations ADD COLUMN uid TEXT"),
)


def new_id() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    content: str
    stats: dict | None = None


@dataclass(frozen=True)
class Conversation:
    id: str  # random and unguessable: what the page and the API use
    title: str
    created: float
    updated: float
    settings: dict = field(default_factory=dict)  # model, preset and sampling parameters in use
    owner: str = "local"


def title_from(text: str, limit: int = 48) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class ConversationStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by Gradio's worker threads, serialised by a lock: simple and fast enough
        # for a room of people typing; WAL keeps readers off the writer's back.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(conversations)")}
            for column, sql in MIGRATIONS:
                if column not in columns:
                    self._db.execute(sql)
            for row in self._db.execute("SELECT id FROM conversations WHERE uid IS NULL").fetchall():
                self._db.execute("UPDATE conversations SET uid = ? WHERE id = ?", (new_id(), row["id"]))
            self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS conversations_by_uid ON conversations(uid)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _row(self, conversation_id: str) -> int:
        row = self._run("SELECT id FROM conversations WHERE uid = ?", (str(conversation_id),)).fetchone()
        if row is None:
            raise KeyError(conversation_id)
        return row["id"]

    @staticmethod
    def _conversation(r: sqlite3.Row) -> Conversation:
        return Conversation(r["uid"], r["title"], r["created"], r["updated"], json.loads(r["settings"]), r["owner"])

    def create(self, title: str, settings: dict | None = None, owner: str = "local") -> Conversation:
        now = time.time()
        uid = new_id()
        self._run(
            "INSERT INTO conversations (uid, owner, title, created, updated, settings) VALUES (?, ?, ?, ?, ?, ?)",
            (uid, owner, title_from(title) or "New conversation", now, now, json.dumps(settings or {})),
        )
        return self.get(uid)

    def get(self, conversation_id: str, owner: str | None = None) -> Conversation:
        """The conversation; KeyError when there is none, or when ``owner`` is given and it is someone else's."""
        row = self._run("SELECT * FROM conversations WHERE uid = ?", (str(conversation_id),)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise KeyError(conversation_id)
        return self._conversation(row)

    def exists(self, conversation_id: str, owner: str | None = None) -> bool:
        try:
            self.get(conversation_id, owner)
        except KeyError:
            return False
        return True

    def list(self, owner: str | None = "local") -> list[Conversation]:
        """One owner's conversations, most recent first; ``owner=None``: everyone's."""
        if owner is None:
            rows = self._run("SELECT * FROM conversations ORDER BY updated DESC, id DESC").fetchall()
        else:
            rows = self._run("SELECT * FROM conversations WHERE owner = ? ORDER BY updated DESC, id DESC", (owner,)).fetchall()
        return [self._conversation(r) for r in rows]

    def rename(self, conversation_id: str, title: str) -> None:
        self._run("UPDATE conversations SET title = ? WHERE uid = ?", (title_from(title), str(conversation_id)))

    def delete(self, conversation_id: str) -> None:
        self._run("DELETE FROM conversations WHERE uid = ?", (str(conversation_id),))

    def update_settings(self, conversation_id: str, settings: dict) -> None:
        self._run("UPDATE conversations SET settings = ? WHERE uid = ?", (json.dumps(settings), str(conversation_id)))

    def add_message(self, conversation_id: str, role: str, content: str, stats: dict | None = None) -> int:
        now = time.time()
        row = self._row(conversation_id)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, stats, created) VALUES (?, ?, ?, ?, ?)",
                (row, role, content, json.dumps(stats) if stats else None, now),
            )
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, row))
            return cur.lastrowid

    def update_message(self, message_id: int, content: str, stats: dict | None = None) -> None:
        self._run(
            "UPDATE messages SET content = ?, stats = ? WHERE id = ?",
            (content, json.dumps(stats) if stats else None, message_id),
        )

    def delete_messages_from(self, conversation_id: str, message_id: int) -> None:
        """Drop a message and everything after it (regenerate, edit and resend)."""
        self._run("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (self._row(conversation_id), message_id))

    def messages(self, conversation_id: str) -> list[StoredMessage]:
        rows = self._run(
            "SELECT m.id, m.role, m.content, m.stats FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.uid = ? ORDER BY m.id",
            (str(conversation_id),),
        ).fetchall()
        return [
            StoredMessage(r["id"], r["role"], r["content"], json.loads(r["stats"]) if r["stats"] else None)
            for r in rows
        ]


EXPORT_FORMAT = "melange-conversation/1"


def to_json(conversation: Conversation, messages: list[StoredMessage]) -> dict:
    """A self-describing export: the messages with their stats, and the model, preset and sampling used."""
    return {
        "format": EXPORT_FORMAT,
        "title": conversation.title,
        "created": conversation.created,
        "settings": conversation.settings,
        "messages": [
            {"role": m.role, "content": m.content, **({"stats": m.stats} if m.stats else {})} for m in messages
        ],
    }


def to_markdown(conversation: Conversation, messages: list[StoredMessage]) -> str:
    settings = conversation.settings
    lines = [f"# {conversation.title}", ""]
    if settings:
        lines += [f"- {key}: {value}" for key, value in settings.items()] + [""]
    names = {"system": "System", "user": "You", "assistant": "Assistant"}
    for m in messages:
        lines += [f"**{names[m.role]}:**", "", m.content, ""]
    return "\n".join(lines)


def import_json(store: ConversationStore, data: dict, owner: str = "local") -> Conversation:
    """Load an export back as a new conversation (the round trip of ``to_json``)."""
    if data.get("format") != EXPORT_FORMAT:
        raise ValueError(f"Not a Melange conversation export (format {data.get('format')!r}).")
    conversation = store.create(data["title"], data.get("settings"), owner)
    for m in data["messages"]:
        store.add_message(conversation.id, m["role"], m["content"], m.get("stats"))
    return store.get(conversation.id)
