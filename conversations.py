"""Chat conversations in SQLite (WAL mode) under the data folder: they survive restarts and crashes.

Every message is written when it exists, the user's before generation starts, so nothing typed is lost.
``owner`` is there for per-visitor sessions in LAN mode; on localhost everything belongs to "local".
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    content: str
    stats: dict | None = None


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    settings: dict = field(default_factory=dict)  # model, preset and sampling parameters in use


def title_from(text: str, limit: int = 48) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class ConversationStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by Gradio's worker threads, serialised by a lock: simple and fast enough
        # for one person's typing; WAL keeps readers off the writer's back.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def create(self, title: str, settings: dict | None = None, owner: str = "local") -> Conversation:
        now = time.time()
        cur = self._run(
            "INSERT INTO conversations (owner, title, created, updated, settings) VALUES (?, ?, ?, ?, ?)",
            (owner, title_from(title) or "New conversation", now, now, json.dumps(settings or {})),
        )
        return self.get(cur.lastrowid)

    def get(self, conversation_id: int) -> Conversation:
        row = self._run("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise KeyError(conversation_id)
        return Conversation(row["id"], row["title"], row["created"], row["updated"], json.loads(row["settings"]))

    def exists(self, conversation_id: int) -> bool:
        return self._run("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is not None

    def list(self, owner: str = "local") -> list[Conversation]:
        rows = self._run(
            "SELECT * FROM conversations WHERE owner = ? ORDER BY updated DESC, id DESC", (owner,)
        ).fetchall()
        return [Conversation(r["id"], r["title"], r["created"], r["updated"], json.loads(r["settings"])) for r in rows]

    def rename(self, conversation_id: int, title: str) -> None:
        self._run("UPDATE conversations SET title = ? WHERE id = ?", (title_from(title), conversation_id))

    def delete(self, conversation_id: int) -> None:
        self._run("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def update_settings(self, conversation_id: int, settings: dict) -> None:
        self._run("UPDATE conversations SET settings = ? WHERE id = ?", (json.dumps(settings), conversation_id))

    def add_message(self, conversation_id: int, role: str, content: str, stats: dict | None = None) -> int:
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, stats, created) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, json.dumps(stats) if stats else None, now),
            )
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            return cur.lastrowid

    def update_message(self, message_id: int, content: str, stats: dict | None = None) -> None:
        self._run(
            "UPDATE messages SET content = ?, stats = ? WHERE id = ?",
            (content, json.dumps(stats) if stats else None, message_id),
        )

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Drop a message and everything after it (regenerate, edit and resend)."""
        self._run("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id))

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = self._run(
            "SELECT id, role, content, stats FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
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
