"""Background indexing: one worker thread rescans a collection's folder and brings the index up to date.

A rescan is incremental: a file whose size and modification time are unchanged is not opened; one whose
content hash is unchanged is only re-dated; new and changed files are parsed and embedded; files gone from
the folder leave the index. Every file ends with a state and, when it was not indexed, a reason. Passages of
several small files are embedded together (a forward pass per file would waste most of it on tiny batches),
on as many threads as the embedder can run side by side (``Embedder.parallel``: 2 on 2 cores with ONNX
Runtime) while this thread goes on reading the next files; the threads inherit this one's lowered priority,
so chat still comes first. A collection whose vectors another embedder made (``Embedder.identity``) is
re-embedded from its stored passages before the rescan. Progress is kept per collection for the page to poll;
nothing here blocks the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.priority import lower_this_thread
from engines.docs import parse as docs_parse
from engines.base import EngineError, IndexProgress, ParsedDocument
from engines.docs.index import DocsIndex
from engines.docs.embedder import Embedder

log = logging.getLogger("melange.documents")

MAX_FILES = 20_000  # per collection: a folder of 10,000 files is indexed; a whole disk is refused
FLUSH_PASSAGES = 64  # embed once this many passages are waiting (several small files in one pass)
GONE = "The file was deleted or moved while it was being indexed."


@dataclass(frozen=True)
class FoundFile:
    path: str
    name: str  # relative to the collection's root
    size: int
    mtime: float


@dataclass
class _Pending:
    found: FoundFile
    sha256: str
    document: ParsedDocument


@dataclass
class _Run:
    collection: str
    progress: IndexProgress = field(default_factory=IndexProgress)
    pending: list[_Pending] = field(default_factory=list)
    embedding: deque[tuple[list[_Pending], Future]] = field(default_factory=deque)  # in flight, oldest first
    pool: ThreadPoolExecutor | None = None  # started at the first embedding, when the embedder runs in parallel
    parallel: int = 0  # embedding calls at once; 0 until the first
    identity_recorded: bool = False
    started: float = field(default_factory=time.monotonic)


def scan(root: Path, limit: int = MAX_FILES) -> tuple[list[FoundFile], bool]:
    """Regular files under ``root`` by name, skipping hidden ones and links (a link could lead anywhere);
    and whether the limit cut the list."""
    found: list[FoundFile] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append(FoundFile(entry.path, os.path.relpath(entry.path, root), stat.st_size, stat.st_mtime))
                if len(found) > limit:
                    return sorted(found, key=lambda f: f.name)[:limit], True
        stack.extend(reversed(subfolders))
    return sorted(found, key=lambda f: f.name), False


def file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Indexer:
    def __init__(
        self,
        index: DocsIndex,
        embedder: Embedder,
        max_file_bytes: int = docs_parse.MAX_FILE_BYTES,
        max_files: int = MAX_FILES,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._queue: deque[str] = deque()
        self._again: set[str] = set()  # asked for again while running: rescan once more after
        self._cancelled: set[str] = set()
        self._progress: dict[str, IndexProgress] = {}
        self._running: str | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---------------------------------------------------------------- the page's side

    def submit(self, collection_id: str) -> None:
        """Rescan this collection in the background (once, however often it is asked while it waits)."""
        with self._cond:
            self._cancelled.discard(collection_id)
            if self._running == collection_id:
                self._again.add(collection_id)
            elif collection_id not in self._queue:
                self._queue.append(collection_id)
                self._progress[collection_id] = IndexProgress(running=True, stage="queued")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="melange-indexer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def progress(self, collection_id: str) -> IndexProgress:
        with self._cond:
            return self._progress.get(collection_id, IndexProgress())

    def busy(self, collection_id: str) -> bool:
        with self._cond:
            return collection_id in self._queue or self._running == collection_id or collection_id in self._again

    def cancel(self, collection_id: str) -> None:
        """Stop indexing this collection after the file in hand (its collection is being deleted)."""
        with self._cond:
            self._cancelled.add(collection_id)
            if collection_id in self._queue:
                self._queue.remove(collection_id)
            self._again.discard(collection_id)
            self._progress.pop(collection_id, None)
            self._cond.notify_all()

    def wait(self, collection_id: str, timeout: float | None = None) -> bool:
        """Block until this collection is neither queued nor running (tests, benchmarks); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.busy(collection_id):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def reembed_stale(self) -> threading.Thread:
        """In the background, queue a rescan of every collection whose vectors another embedder made (after an
        upgrade, or when ONNX Runtime came or went); the model is loaded only if the index holds passages."""

        def check() -> None:
            lower_this_thread()
            if not self.index.any_passages():
                return
            try:
                stale = self.index.stale(self.embedder.identity)
            except EngineError as e:
                log.warning("could not check the stored vectors: %s", e)
                return
            for collection_id in stale:
                log.info("collection %s was embedded by another embedder: re-embedding it", collection_id)
                self.submit(collection_id)

        thread = threading.Thread(target=check, name="melange-embedder-check", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()

    # ---------------------------------------------------------------- the worker

    def _work(self) -> None:
        lower_this_thread()  # the page's threads (chat, search) and live captions come first
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                collection_id = self._queue.popleft()
                self._running = collection_id
            try:
                self.run(collection_id)
            except Exception:  # never let one collection stop the worker
                log.exception("indexing %s failed", collection_id)
            with self._cond:
                self._running = None
                if collection_id in self._again:
                    self._again.discard(collection_id)
                    self._queue.append(collection_id)
                self._cond.notify_all()

    def _set(self, run: _Run, **changes) -> None:
        run.progress = dataclasses.replace(run.progress, seconds=time.monotonic() - run.started, **changes)
        with self._cond:
            if run.collection not in self._cancelled:
                self._progress[run.collection] = run.progress
            self._cond.notify_all()

    def _stopped(self, run: _Run) -> bool:
        with self._cond:
            return run.collection in self._cancelled or self._closed

    def run(self, collection_id: str) -> IndexProgress:
        """Bring one collection up to date, here and now (the worker calls this; so can a benchmark)."""
        run = _Run(collection_id)
        try:
            collection = self.index.collection(collection_id)
        except KeyError:
            return run.progress
        self._set(run, running=True, stage="scanning")
        root = Path(collection.root)
        if not root.is_dir():
            self._set(run, running=False, stage="", message=f"The folder {root} is not there any more.")
            return run.progress
        try:
            if not self._reembed_if_stale(run):
                return run.progress
            found, cut = scan(root, self.max_files)
            message = f"The folder has more than {self.max_files:,} files: the first {self.max_files:,} by name are indexed." if cut else ""
            known = self.index.known_files(collection_id)
            gone = [path for path in known if path not in {f.path for f in found}]
            if gone:
                self.index.remove_files(collection_id, gone)
            self._set(run, stage="indexing", total=len(found), done=0, removed=len(gone), message=message)
            for item in found:
                if self._stopped(run):
                    return run.progress
                self._set(run, current=item.name)
                self._one(run, item, known.get(item.path))
            self._flush(run, drain=True)
        except KeyError:  # the collection was deleted under us
            return run.progress
        except EngineError as e:
            self._set(run, running=False, stage="", current="", message=str(e))
            return run.progress
        finally:
            if run.pool is not None:
                run.pool.shutdown(wait=True, cancel_futures=True)
        self._set(run, running=False, stage="", current="")
        return run.progress

    def _reembed_if_stale(self, run: _Run) -> bool:
        """Vectors another embedder made (another backend, other weights, an index older than identities) are
        made again from the stored passages, before the rescan; False when the run was stopped meanwhile."""
        if not self.index.counts(run.collection)["passages"]:
            return True
        identity = self.embedder.identity  # loads the model: this collection is searched with it anyway
        if self.index.embedder_of(run.collection) == identity:
            return True
        rows = self.index.passage_texts(run.collection)
        self._set(run, stage="re-embedding", total=len(rows), done=0)
        started = time.monotonic()
        vectors = np.empty((len(rows), self.embedder.dimensions), dtype=np.float32)
        futures: deque[tuple[int, Future]] = deque()
        step = FLUSH_PASSAGES
        for start in range(0, len(rows), step):
            if self._stopped(run):
                return False
            futures.append((start, self._start_embedding(run, [text for _, text in rows[start : start + step]])))
            while futures and (len(futures) > run.parallel or start + step >= len(rows)):
                first, future = futures.popleft()
                part = future.result()
                vectors[first : first + len(part)] = part
                self._set(run, done=first + len(part))
        self.index.replace_vectors(run.collection, [pid for pid, _ in rows], vectors, identity)
        log.info("re-embedded %d passages of %s for %s in %.1f s", len(rows), run.collection, identity, time.monotonic() - started)
        self._set(run, done=0)
        return True

    def _start_embedding(self, run: _Run, texts: list[str]) -> Future:
        """``embed(texts)`` on one of the run's embedding threads, or here and now when it runs one at a time."""
        if not run.parallel:
            run.parallel = max(1, int(getattr(self.embedder, "parallel", 1)))
            if run.parallel > 1:  # threads started from this one share its priority
                run.pool = ThreadPoolExecutor(max_workers=run.parallel, thread_name_prefix="melange-embed")
        if run.pool is not None:
            return run.pool.submit(self.embedder.embed, texts)
        done: Future = Future()
        done.set_result(self.embedder.embed(texts))
        return done

    def _one(self, run: _Run, item: FoundFile, known) -> None:
        p = run.progress
        if known is not None and known.size == item.size and known.mtime == item.mtime:
            self._set(run, done=p.done + 1, unchanged=p.unchanged + 1)
            return
        record = {"collection_id": run.collection, "path": item.path, "name": item.name, "size": item.size, "mtime": item.mtime}
        if not docs_parse.supported(item.path) or item.size > self.max_file_bytes or item.size == 0:
            skipped = not docs_parse.supported(item.path)
            try:  # the parser says why, without reading the file
                docs_parse.parse(item.path, self.max_file_bytes)
            except docs_parse.DocumentError as e:
                self.index.record_file(sha256="", state="skipped" if skipped else "failed", message=str(e), **record)
            except OSError:
                self.index.record_file(sha256="", state="failed", message=GONE, **record)
                skipped = False
            if skipped:
                self._set(run, done=p.done + 1, skipped=p.skipped + 1)
            else:
                self._set(run, done=p.done + 1, failed=p.failed + 1)
            return
        try:
            sha = file_hash(item.path)
            if known is not None and known.sha256 == sha and known.state == "indexed":
                self.index.touch_file(run.collection, item.path, item.mtime)
                self._set(run, done=p.done + 1, unchanged=p.unchanged + 1)
                return
            document = docs_parse.parse(item.path, self.max_file_bytes)
        except docs_parse.DocumentError as e:
            self.index.record_file(sha256="", state="failed", message=str(e), **record)
            self._set(run, done=p.done + 1, failed=p.failed + 1)
            return
        except FileNotFoundError:
            self.index.record_file(sha256="", state="failed", message=GONE, **record)
            self._set(run, done=p.done + 1, failed=p.failed + 1)
            return
        except Exception as e:  # a parser's own bug on a strange file: that file fails, the rest go on
            log.warning("could not read %s", item.path, exc_info=True)
            message = f"Could not read it ({type(e).__name__}: {e})." if not isinstance(e, PermissionError) else "Permission denied."
            self.index.record_file(sha256="", state="failed", message=message, **record)
            self._set(run, done=p.done + 1, failed=p.failed + 1)
            return
        run.pending.append(_Pending(item, sha, document))
        if sum(len(x.document.passages) for x in run.pending) >= FLUSH_PASSAGES:
            self._flush(run)

    def _flush(self, run: _Run, drain: bool = False) -> None:
        """Start embedding the waiting files' passages; record the files whose embedding is done (all of them
        with ``drain``, otherwise as many as leave ``parallel`` calls in flight while the next files are read)."""
        if run.pending:
            pending, run.pending = run.pending, []
            run.embedding.append((pending, self._start_embedding(run, [p.text for x in pending for p in x.document.passages])))
        while run.embedding and (drain or len(run.embedding) > run.parallel or run.embedding[0][1].done()):
            pending, future = run.embedding.popleft()
            self._record(run, pending, future.result())

    def _record(self, run: _Run, pending: list[_Pending], vectors: np.ndarray) -> None:
        if not run.identity_recorded:
            self.index.set_embedder(run.collection, self.embedder.identity)
            run.identity_recorded = True
        texts = [p.text for x in pending for p in x.document.passages]
        offset = 0
        for x in pending:
            n = len(x.document.passages)
            f = x.found
            self.index.record_file(
                run.collection, f.path, f.name, f.size, f.mtime, x.sha256, "indexed", x.document.note,
                x.document.kind, x.document.pages, x.document.passages, vectors[offset : offset + n],
            )  # fmt: skip
            offset += n
        p = run.progress
        self._set(
            run,
            done=p.done + len(pending),
            indexed=p.indexed + len(pending),
            pages=p.pages + sum(x.document.pages for x in pending),
            passages=p.passages + len(texts),
        )
