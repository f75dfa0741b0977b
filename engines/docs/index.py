"""The documents index: collections, their files and passages in one SQLite file (WAL) under the data folder.

Passages are searchable two ways: FTS5 (BM25, Porter stemming) and their all-MiniLM-L6-v2 vectors, kept as
float32 blobs beside the text and searched as one numpy matrix per collection (a dot product over 50,000
passages takes milliseconds; the matrix is rebuilt only after the collection changes). Each file row keeps
size, mtime and SHA-256, so a rescan re-reads only what changed. The index also remembers which collections
each conversation asks, and the sources each answer was given. A collection records which embedder made its
vectors (``Embedder.identity``; '' for an index older than that): the indexer re-embeds one made by another.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import Collection, DocumentFile, Passage

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    root TEXT NOT NULL,
    from_folder INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    embedder TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS collections_by_owner ON collections(owner, name);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    pages INTEGER NOT NULL DEFAULT 0,
    passages INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    UNIQUE (collection_id, path)
);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    start REAL,
    "end" REAL,
    section TEXT NOT NULL DEFAULT '',
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_by_file ON passages(file_id);
CREATE INDEX IF NOT EXISTS passages_by_collection ON passages(collection_id);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
    text, content='passages', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS passages_ai AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS passages_ad AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS conversation_collections (
    conversation TEXT NOT NULL,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    PRIMARY KEY (conversation, collection_id)
);
CREATE TABLE IF NOT EXISTS answer_sources (
    message_id INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL,
    sources TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime: float
    sha256: str
    state: str


@dataclass(frozen=True)
class StoredPassage:
    id: int
    collection: str
    file: str
    text: str
    page: int | None
    start: float | None
    end: float | None
    section: str


def new_id() -> str:
    return secrets.token_urlsafe(12)


class DocsIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the indexer and the page's threads, serialised by a lock, as in
        # conversations.py: every statement is short (a file's passages are written in one transaction).
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._versions: dict[int, int] = {}  # bumped on every change to a collection's passages
        self._matrices: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # id -> (version, ids, vectors)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(collections)")}
            if "embedder" not in columns:  # an index made before vectors recorded their embedder
                self._db.execute("ALTER TABLE collections ADD COLUMN embedder TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _changed(self, collection_row: int) -> None:
        self._versions[collection_row] = self._versions.get(collection_row, 0) + 1

    # ---------------------------------------------------------------- collections

    @staticmethod
    def _collection(r: sqlite3.Row) -> Collection:
        return Collection(r["uid"], r["name"], r["owner"], r["root"], bool(r["from_folder"]), r["created"])

    def create_collection(self, name: str, owner: str, root: str, from_folder: bool = False) -> Collection:
        uid = new_id()
        self._run(
            "INSERT INTO collections (uid, owner, name, root, from_folder, created) VALUES (?, ?, ?, ?, ?, ?)",
            (uid, owner, name, root, int(from_folder), time.time()),
        )
        return self.collection(uid)

    def set_root(self, collection_id: str, root: str) -> None:
        self._run("UPDATE collections SET root = ? WHERE uid = ?", (root, collection_id))

    def collection(self, collection_id: str, owner: str | None = None) -> Collection:
        """KeyError when there is none, or when ``owner`` is given and it is someone else's."""
        row = self._run("SELECT * FROM collections WHERE uid = ?", (str(collection_id),)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise KeyError(collection_id)
        return self._collection(row)

    def collections(self, owner: str | None) -> list[Collection]:
        """One owner's collections by name; ``owner=None``: everyone's."""
        if owner is None:
            rows = self._run("SELECT * FROM collections ORDER BY owner != 'local', owner, name COLLATE NOCASE").fetchall()
        else:
            rows = self._run("SELECT * FROM collections WHERE owner = ? ORDER BY name COLLATE NOCASE", (owner,)).fetchall()
        return [self._collection(r) for r in rows]

    def delete_collection(self, collection_id: str) -> None:
        row = self._row(collection_id)
        self._run("DELETE FROM collections WHERE id = ?", (row,))
        self._matrices.pop(row, None)
        self._changed(row)

    def _row(self, collection_id: str) -> int:
        row = self._run("SELECT id FROM collections WHERE uid = ?", (str(collection_id),)).fetchone()
        if row is None:
            raise KeyError(collection_id)
        return row["id"]

    # ---------------------------------------------------------------- files

    def files(self, collection_id: str) -> list[DocumentFile]:
        rows = self._run(
            "SELECT * FROM files WHERE collection_id = ? ORDER BY state = 'indexed', name", (self._row(collection_id),)
        ).fetchall()
        return [
            DocumentFile(r["path"], r["name"], r["size"], r["state"], r["message"], r["kind"], r["pages"], r["passages"])
            for r in rows
        ]

    def counts(self, collection_id: str) -> dict[str, int]:
        rows = self._run(
            "SELECT state, COUNT(*) AS n, SUM(passages) AS p FROM files WHERE collection_id = ? GROUP BY state",
            (self._row(collection_id),),
        ).fetchall()
        counts = {r["state"]: r["n"] for r in rows}
        counts["passages"] = sum(r["p"] or 0 for r in rows)
        return counts

    def known_files(self, collection_id: str) -> dict[str, KnownFile]:
        rows = self._run(
            "SELECT id, path, size, mtime, sha256, state FROM files WHERE collection_id = ?", (self._row(collection_id),)
        ).fetchall()
        return {r["path"]: KnownFile(r["id"], r["size"], r["mtime"], r["sha256"], r["state"]) for r in rows}

    def record_file(
        self,
        collection_id: str,
        path: str,
        name: str,
        size: int,
        mtime: float,
        sha256: str,
        state: str,
        message: str = "",
        kind: str = "",
        pages: int = 0,
        passages: list[Passage] | None = None,
        vectors: np.ndarray | None = None,
    ) -> None:
        """Put a file's row and passages in place of whatever the index held for that path, in one transaction."""
        passages = passages or []
        if vectors is not None and len(vectors) != len(passages):
            raise ValueError("one vector per passage")
        row = self._row(collection_id)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM files WHERE collection_id = ? AND path = ?", (row, path))
                cur = self._db.execute(
                    "INSERT INTO files (collection_id, path, name, size, mtime, sha256, state, message, kind, pages, passages, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (row, path, name, size, mtime, sha256, state, message, kind, pages, len(passages), time.time()),
                )
                file_id = cur.lastrowid
                if passages:
                    blobs = np.ascontiguousarray(vectors, dtype=np.float32)
                    self._db.executemany(
                        'INSERT INTO passages (file_id, collection_id, ord, text, page, start, "end", section, vector) '
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (file_id, row, i, p.text, p.page, p.start, p.end, p.section, blobs[i].tobytes())
                            for i, p in enumerate(passages)
                        ],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._changed(row)

    def touch_file(self, collection_id: str, path: str, mtime: float) -> None:
        """Same content under a new modification time (a copy, a `touch`): nothing to re-read."""
        self._run("UPDATE files SET mtime = ? WHERE collection_id = ? AND path = ?", (mtime, self._row(collection_id), path))

    def remove_files(self, collection_id: str, paths: list[str]) -> None:
        row = self._row(collection_id)
        with self._lock:
            self._db.executemany("DELETE FROM files WHERE collection_id = ? AND path = ?", [(row, p) for p in paths])
            self._changed(row)

    # ---------------------------------------------------------------- which embedder made the vectors

    def embedder_of(self, collection_id: str) -> str:
        return self._run("SELECT embedder FROM collections WHERE id = ?", (self._row(collection_id),)).fetchone()["embedder"]

    def set_embedder(self, collection_id: str, identity: str) -> None:
        self._run("UPDATE collections SET embedder = ? WHERE id = ?", (identity, self._row(collection_id)))

    def any_passages(self) -> bool:
        return self._run("SELECT EXISTS (SELECT 1 FROM passages) AS found").fetchone()["found"] == 1

    def stale(self, identity: str) -> list[str]:
        """Collections with passages whose vectors another embedder made."""
        rows = self._run(
            "SELECT c.uid FROM collections c WHERE c.embedder != ? "
            "AND EXISTS (SELECT 1 FROM passages p WHERE p.collection_id = c.id) ORDER BY c.id",
            (identity,),
        ).fetchall()
        return [r["uid"] for r in rows]

    def passage_texts(self, collection_id: str) -> list[tuple[int, str]]:
        rows = self._run("SELECT id, text FROM passages WHERE collection_id = ? ORDER BY id", (self._row(collection_id),)).fetchall()
        return [(r["id"], r["text"]) for r in rows]

    def replace_vectors(self, collection_id: str, ids: list[int], vectors: np.ndarray, identity: str) -> None:
        """New vectors for these passages and the embedder that made them, in one transaction."""
        if len(ids) != len(vectors):
            raise ValueError("one vector per passage")
        row = self._row(collection_id)
        blobs = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "UPDATE passages SET vector = ? WHERE id = ? AND collection_id = ?",
                    [(blobs[i].tobytes(), pid, row) for i, pid in enumerate(ids)],
                )
                self._db.execute("UPDATE collections SET embedder = ? WHERE id = ?", (identity, row))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._changed(row)

    # ---------------------------------------------------------------- search

    def lexical(self, collection_ids: list[str], match: str, limit: int) -> list[int]:
        """Passage ids best first by BM25, for an FTS5 MATCH expression."""
        rows = [self._row(c) for c in collection_ids]
        if not rows or not match:
            return []
        marks = ",".join("?" * len(rows))
        result = self._run(
            f"SELECT p.id FROM passages_fts f JOIN passages p ON p.id = f.rowid "
            f"WHERE passages_fts MATCH ? AND p.collection_id IN ({marks}) ORDER BY bm25(passages_fts) LIMIT ?",
            (match, *rows, limit),
        ).fetchall()
        return [r["id"] for r in result]

    def vectors(self, collection_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, their vectors as one float32 matrix) for these collections."""
        ids, matrices = [], []
        for collection_id in collection_ids:
            row = self._row(collection_id)
            version = self._versions.get(row, 0)
            cached = self._matrices.get(row)
            if cached is None or cached[0] != version:
                found = self._run("SELECT id, vector FROM passages WHERE collection_id = ? ORDER BY id", (row,)).fetchall()
                vector_ids = np.array([r["id"] for r in found], dtype=np.int64)
                matrix = (
                    np.frombuffer(b"".join(r["vector"] for r in found), dtype=np.float32).reshape(len(found), -1)
                    if found
                    else np.zeros((0, 0), dtype=np.float32)
                )
                cached = self._matrices[row] = (version, vector_ids, matrix)
            if len(cached[1]):
                ids.append(cached[1])
                matrices.append(cached[2])
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(ids), np.concatenate(matrices)

    def passages(self, ids: list[int]) -> dict[int, StoredPassage]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._run(
            f'SELECT p.id, p.text, p.page, p.start, p."end", p.section, f.name, c.uid FROM passages p '
            f"JOIN files f ON f.id = p.file_id JOIN collections c ON c.id = p.collection_id WHERE p.id IN ({marks})",
            tuple(ids),
        ).fetchall()
        return {
            r["id"]: StoredPassage(r["id"], r["uid"], r["name"], r["text"], r["page"], r["start"], r["end"], r["section"])
            for r in rows
        }

    # ---------------------------------------------------------------- conversations and answers

    def attach(self, conversation: str, collection_ids: list[str]) -> None:
        """The collections this conversation asks, in place of the ones it asked before."""
        rows = [self._row(c) for c in collection_ids]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM conversation_collections WHERE conversation = ?", (conversation,))
            self._db.executemany(
                "INSERT OR IGNORE INTO conversation_collections (conversation, collection_id) VALUES (?, ?)",
                [(conversation, r) for r in rows],
            )
            self._db.execute("COMMIT")

    def attached(self, conversation: str) -> list[str]:
        rows = self._run(
            "SELECT c.uid FROM conversation_collections a JOIN collections c ON c.id = a.collection_id "
            "WHERE a.conversation = ? ORDER BY c.name COLLATE NOCASE",
            (conversation,),
        ).fetchall()
        return [r["uid"] for r in rows]

    def forget_conversation(self, conversation: str) -> None:
        """A deleted conversation's choice of collections and its answers' sources."""
        with self._lock:
            self._db.execute("DELETE FROM conversation_collections WHERE conversation = ?", (conversation,))
            self._db.execute("DELETE FROM answer_sources WHERE conversation = ?", (conversation,))

    def save_sources(self, message_id: int, conversation: str, sources: list[dict]) -> None:
        """The passages an answer was given; none: forget any an earlier message with this id had (SQLite may
        hand a regenerated reply the id of the one it replaced)."""
        if not sources:
            self._run("DELETE FROM answer_sources WHERE message_id = ?", (message_id,))
            return
        self._run(
            "INSERT OR REPLACE INTO answer_sources (message_id, conversation, sources) VALUES (?, ?, ?)",
            (message_id, conversation, json.dumps(sources, ensure_ascii=False)),
        )

    def sources(self, conversation: str, message_ids: list[int]) -> dict[int, list[dict]]:
        if not message_ids:
            return {}
        marks = ",".join("?" * len(message_ids))
        rows = self._run(
            f"SELECT message_id, sources FROM answer_sources WHERE conversation = ? AND message_id IN ({marks})",
            (conversation, *message_ids),
        ).fetchall()
        return {r["message_id"]: json.loads(r["sources"]) for r in rows}
