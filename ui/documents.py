"""Documents: collections of files to ask questions about, in a tab of their own and inside Chat.

``Documents`` is what the panels share: whose collections are whose (a guest sees only their own, the host
everyone's), adding uploads (copied into the person's own folder under ``DATA_DIR/documents``) or, for the
host only, a folder on this machine read where it is, the background indexer's progress, and for Chat the
retrieval that grounds a reply and the sources shown under it. ``build`` lays out the Documents tab.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from engines.docs import parse as docs_parse, retrieval
from engines.base import ChatMessage, ChatParams, Collection, Hit, RetrievalParams, Transcript
from engines.docs.index import DocsIndex
from engines.docs.indexer import Indexer
from server.principal import HOST, Principal
from ui.access import Access, principal_of, require_host

NOT_FOUND = "Not found"
MAX_NAME = 60
MAX_ROWS = 300  # files listed in the table; problems first (a folder of 10,000 files would swamp the page)
TRANSCRIPTS = "Transcripts"  # the collection "Add to documents" on the Transcribe panel fills
NOTHING_FOUND = (
    "I found nothing about this in {names}, so I will not guess. Try other words, choose other documents "
    "above, or clear the documents to chat without them."
)


STILL_INDEXING = (
    "Nothing indexed so far matches this, but {names} is still being indexed: ask again when the Documents tab "
    "says it is done."
)


def clean_name(name: str | None) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise gr.Error("Give the collection a name.", title="Check your input")
    if len(name) > MAX_NAME:
        raise gr.Error(f"A collection's name is at most {MAX_NAME} characters.", title="Check your input")
    return name


def safe_file_name(name: str) -> str:
    """A file name that stays inside the folder it is written to."""
    name = Path(name).name.strip().lstrip(".")
    name = re.sub(r"[\x00-\x1f/\\]", "_", name)
    return name[:180] or "document"


@dataclass(frozen=True)
class Grounding:
    """What Chat sends the model instead of the plain conversation, or the reply to give without it."""

    messages: list[ChatMessage]
    hits: list[Hit]
    reply: str | None = None  # set when nothing relevant was found: said instead of generating


def source_dict(number: int, hit: Hit) -> dict:
    return {"n": number, "label": retrieval.label(hit), "text": hit.text, "file": hit.file, "page": hit.page,
            "start": hit.start, "end": hit.end, "similarity": round(hit.similarity, 3)}  # fmt: skip


def sources_html(sources: list[dict]) -> str:
    """Under a reply: one line per source, each opening to the passage it was given. No blank line inside, so
    Markdown leaves the block alone; the passage is escaped, so a document cannot put HTML in the page."""
    items = "".join(
        f'<details class="source"><summary>[{s["n"]}] {html.escape(s["label"])}</summary>'
        f'<div class="passage">{html.escape(s["text"])}</div></details>'
        for s in sources
    )
    return f'\n\n<div class="melange-sources"><b>Sources</b>{items}</div>'


class Documents:
    def __init__(
        self,
        index: DocsIndex,
        indexer: Indexer,
        embedder,
        uploads_root: Path,
        access: Access | None = None,
        params: RetrievalParams = RetrievalParams(),
    ) -> None:
        self.index = index
        self.indexer = indexer
        self.embedder = embedder
        self.uploads_root = uploads_root
        self.access = access or Access()
        self.params = params

    # ---------------------------------------------------------------- who sees what

    def visible(self, principal: Principal) -> list[Collection]:
        return self.index.collections(None if principal.is_host else principal.owner)

    def collection(self, collection_id: str | None, principal: Principal) -> Collection:
        """The collection if this person may see it; someone else's answers exactly like a missing one."""
        if not collection_id:
            raise gr.Error("Choose a collection first.", title="Check your input")
        try:
            return self.index.collection(collection_id, None if principal.is_host else principal.owner)
        except KeyError:
            raise gr.Error(f"There is no collection {collection_id}.", title=NOT_FOUND) from None

    def choices(self, principal: Principal) -> list[tuple[str, str]]:
        mine = principal.owner
        return [
            (c.name if c.owner == mine else f"{c.name} · {c.owner.removeprefix('guest:')}", c.id)
            for c in self.visible(principal)
        ]

    # ---------------------------------------------------------------- adding

    def _folder(self, principal: Principal) -> Path:
        return self.uploads_root / principal.folder if principal.folder else self.uploads_root

    def create(self, name: str | None, principal: Principal = HOST) -> Collection:
        name = clean_name(name)
        if any(c.name.casefold() == name.casefold() for c in self.index.collections(principal.owner)):
            raise gr.Error(f"You have a collection named {name!r} already.", title="Check your input")
        collection = self.index.create_collection(name, principal.owner, root="")
        root = self._folder(principal) / collection.id
        root.mkdir(parents=True, exist_ok=True)
        self.index.set_root(collection.id, str(root))
        return self.index.collection(collection.id)

    def _named(self, name: str, principal: Principal) -> Collection:
        found = next((c for c in self.index.collections(principal.owner) if c.name.casefold() == name.casefold()), None)
        return found or self.create(name, principal)

    def add_uploads(self, collection_id: str | None, paths: list[str] | None, principal: Principal = HOST) -> tuple[Collection, str]:
        """Copy the caller's uploads into the collection's folder and index them in the background. Files that
        are not documents or are too large are not copied; the message names each with its reason."""
        paths = [p for p in (paths or []) if p]
        if not paths:
            raise gr.Error("Choose some files or a folder to add.", title="Check your input")
        paths = [self.access.checked_file(principal, p, "document") for p in paths]
        collection = self.collection(collection_id, principal) if collection_id else self._named("My documents", principal)
        if collection.from_folder:
            raise gr.Error(f"{collection.name!r} is a folder on this machine: add files to that folder instead.", title="Check your input")
        root = Path(collection.root)
        root.mkdir(parents=True, exist_ok=True)
        refused, taken = [], set()
        for path in paths:
            name = safe_file_name(Path(path).name)
            size = os.path.getsize(path)
            if not docs_parse.supported(name):
                refused.append(f"{name}: not a document type")
                continue
            if size > self.indexer.max_file_bytes:
                refused.append(f"{name}: {size / 2**20:,.0f} MB, over the {self.indexer.max_file_bytes / 2**20:,.0f} MB limit")
                continue
            if name in taken:  # a folder upload flattens sub-folders: two files of one name both stay
                stem, suffix = Path(name).stem, Path(name).suffix
                name = next(f"{stem} ({i}){suffix}" for i in range(2, 10_000) if f"{stem} ({i}){suffix}" not in taken)
            taken.add(name)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".upload-", delete=False) as tmp:
                with open(path, "rb") as source:
                    shutil.copyfileobj(source, tmp)
            os.replace(tmp.name, root / name)  # a re-upload of the same name replaces it, re-indexed if changed
        if taken:
            self.indexer.submit(collection.id)
        message = f"Added {len(taken)} file(s) to {collection.name!r}."
        if refused:
            message += " Not added: " + "; ".join(refused[:20]) + (f"; and {len(refused) - 20} more" if len(refused) > 20 else "") + "."
        return collection, message

    def add_folder(self, folder: str | None, principal: Principal = HOST) -> Collection:
        """Host only: index a folder on this machine where it is (a guest never makes the server read a path)."""
        require_host(principal, "index a folder on this machine")
        folder = (folder or "").strip()
        if not folder:
            raise gr.Error("Type the path of a folder on this machine.", title="Check your input")
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise gr.Error(f"{folder!r} is not a folder on this machine.", title="Check your input")
        path = path.resolve()
        for c in self.index.collections(principal.owner):
            if c.from_folder and c.root == str(path):
                self.indexer.submit(c.id)
                return c
        name = path.name or str(path)
        if any(c.name.casefold() == name.casefold() for c in self.index.collections(principal.owner)):
            name = f"{name} ({path})"[:MAX_NAME]
        collection = self.index.create_collection(name, principal.owner, str(path), from_folder=True)
        self.indexer.submit(collection.id)
        return collection

    def add_transcript(self, transcript: Transcript | None, names: dict[str, str] | None, source: str | None, principal: Principal = HOST) -> Collection:
        """The Transcribe panel's "Add to documents": its JSON export, with segment times, in the person's
        "Transcripts" collection."""
        from engines.speech import subtitles

        if transcript is None or not transcript.segments:
            raise gr.Error("Transcribe something first.", title="Nothing to add")
        collection = self._named(TRANSCRIPTS, principal)
        root = Path(collection.root)
        root.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^\w-]+", "-", Path(source).stem if source else "transcript").strip("-")[:60] or "transcript"
        target = root / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        with tempfile.NamedTemporaryFile("w", dir=root, prefix=".upload-", delete=False, encoding="utf-8") as tmp:
            tmp.write(subtitles.to_json(transcript, names))
        os.replace(tmp.name, target)
        self.indexer.submit(collection.id)
        return collection

    def rescan(self, collection_id: str | None, principal: Principal = HOST) -> None:
        self.indexer.submit(self.collection(collection_id, principal).id)

    def delete(self, collection_id: str | None, principal: Principal = HOST) -> None:
        """The collection, its index and the uploaded copies; a host folder is never touched."""
        collection = self.collection(collection_id, principal)
        self.indexer.cancel(collection.id)
        self.index.delete_collection(collection.id)
        if not collection.from_folder and collection.root and Path(collection.root).parent.is_relative_to(self.uploads_root):
            shutil.rmtree(collection.root, ignore_errors=True)

    # ---------------------------------------------------------------- status

    def status(self, collection_id: str | None, principal: Principal = HOST) -> tuple[str, list[list], bool]:
        """(progress as HTML, the files table, whether indexing is still going on)."""
        if not collection_id:
            return "", [], False
        collection = self.collection(collection_id, principal)
        p = self.indexer.progress(collection.id)
        counts = self.index.counts(collection.id)
        where = f"folder {collection.root}" if collection.from_folder else "uploaded files"
        summary = f"{counts.get('indexed', 0):,} file(s) indexed ({counts['passages']:,} passages)"
        for state in ("failed", "skipped"):
            if counts.get(state):
                summary += f", {counts[state]:,} {state}"
        summary += f" · {html.escape(where)}"
        if p.running:
            if p.stage == "indexing" and p.total:
                bar = f'<progress value="{p.done}" max="{p.total}" style="width:100%"></progress>'
                line = f"Indexing {p.done:,} of {p.total:,} files · {html.escape(p.current)}"
            elif p.stage == "re-embedding" and p.total:
                bar = f'<progress value="{p.done}" max="{p.total}" style="width:100%"></progress>'
                line = f"Updating the stored passages for the current embedding model: {p.done:,} of {p.total:,}"
            else:
                bar = '<progress style="width:100%"></progress>'
                line = "Waiting for another collection to finish…" if p.stage == "queued" else "Looking through the files…"
            body = f"{bar}<div>{line}</div>"
        else:
            last = ""
            if p.total or p.removed:
                last = (f"Last run: {p.indexed:,} (re)indexed, {p.unchanged:,} unchanged, {p.removed:,} removed, "
                        f"{p.failed:,} failed in {p.seconds:.1f} s. ")  # fmt: skip
            body = f"<div>{last}</div>"
        note = f'<div class="docs-note" style="color:#c00">{html.escape(p.message)}</div>' if p.message else ""
        rows = [
            [f.name, f.kind, f.pages or "", f.passages, f.state, f.message]
            for f in self.index.files(collection.id)[:MAX_ROWS]
        ]
        return f'<div id="docs-progress-body">{body}<div>{summary}</div>{note}</div>', rows, p.running

    # ---------------------------------------------------------------- chat

    def attach(self, conversation_id: str, collection_ids: list[str] | None, principal: Principal = HOST) -> None:
        ids = [self.collection(c, principal).id for c in (collection_ids or [])]
        self.index.attach(conversation_id, ids)

    def attached(self, conversation_id: str | None) -> list[str]:
        return self.index.attached(conversation_id) if conversation_id else []

    def ground(self, conversation_id: str, prompt: list[ChatMessage], params: ChatParams, n_ctx: int) -> Grounding | None:
        """None when the conversation asks no documents; else the prompt with the passages found put before the
        question, or, when none is about it, the reply that says so."""
        ids = self.attached(conversation_id)
        if not ids or not prompt or prompt[-1].role != "user":
            return None
        question = prompt[-1].content
        hits = retrieval.search(self.index, self.embedder, ids, question, self.params)
        names = ", ".join(f"“{self.index.collection(c).name}”" for c in ids)
        if not hits:
            busy = [f"“{self.index.collection(c).name}”" for c in ids if self.indexer.busy(c)]
            if busy:  # not "nothing found": the answer may be in what is not indexed yet
                return Grounding(prompt, [], STILL_INDEXING.format(names=", ".join(busy)))
            return Grounding(prompt, [], NOTHING_FOUND.format(names=names))
        system = "".join(m.content for m in prompt if m.role == "system")
        budget = retrieval.sources_budget(n_ctx, params.max_tokens, system + retrieval.grounded_question("", question))
        context, used = retrieval.pack(hits, budget)
        if not used:
            return Grounding(prompt, [], f"The passages found in {names} do not fit this model's context: use a model with a longer context, or fewer new tokens.")
        messages = [*prompt[:-1], ChatMessage("user", retrieval.grounded_question(context, question))]
        return Grounding(messages, used)

    def forget(self, conversation_id: str) -> None:
        self.index.forget_conversation(conversation_id)

    def save_sources(self, message_id: int, conversation_id: str, hits: list[Hit]) -> None:
        self.index.save_sources(message_id, conversation_id, [source_dict(i, h) for i, h in enumerate(hits, start=1)])

    def sources(self, conversation_id: str | None, message_ids: list[int]) -> dict[int, list[dict]]:
        return self.index.sources(conversation_id, message_ids) if conversation_id else {}


# ---------------------------------------------------------------- the tab


def build(documents: Documents, blocks: gr.Blocks, tab: gr.Tab | None = None) -> None:
    """The Documents tab; ``tab``: its list refreshes when the tab is opened (Transcribe may have added one)."""
    selected = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            collections = gr.Radio([], label="Collections", elem_id="docs-collections", type="value")
            new_name = gr.Textbox(label="New collection", placeholder="Name", max_lines=1, elem_id="docs-new-name")
            create = gr.Button("Create", size="sm", elem_id="docs-create")
            with gr.Row():
                rescan = gr.Button("Rescan", size="sm", elem_id="docs-rescan")
                delete = gr.Button("Delete collection", size="sm", variant="stop", elem_id="docs-delete")
        with gr.Column(scale=3):
            gr.Markdown(
                "Add PDF, DOCX, Markdown, TXT and HTML files, or transcripts (Transcribe → *Add to documents*). "
                "They are indexed in the background; then choose the collection under **Documents** in Chat and ask "
                "about it. Answers list their sources. Everything stays on this machine."
            )
            with gr.Row():
                files = gr.File(label="Add files", file_count="multiple", elem_id="docs-files")
                folder = gr.File(label="Add a folder", file_count="directory", elem_id="docs-folder")
            with gr.Row(visible=False) as host_row:
                host_path = gr.Textbox(label="A folder on this machine (host only)", placeholder="/home/me/Documents/papers",
                                       scale=4, elem_id="docs-host-path")  # fmt: skip
                index_folder = gr.Button("Index this folder", scale=1, elem_id="docs-host-add")
            progress = gr.HTML(elem_id="docs-progress")
            table = gr.Dataframe(
                headers=["File", "Type", "Pages", "Passages", "Status", "Note"], datatype=["str", "str", "str", "number", "str", "str"],
                interactive=False, wrap=True, elem_id="docs-files-table", label="Files (problems first)",
            )  # fmt: skip
    timer = gr.Timer(1.0, active=False)

    def listing(principal: Principal, value: str | None):
        return gr.update(choices=documents.choices(principal), value=value)

    def shown(principal: Principal, collection_id: str | None):
        body, rows, running = documents.status(collection_id, principal)
        return body, rows, gr.Timer(active=running)

    def on_load(request: gr.Request):
        principal = principal_of(request)
        return listing(principal, None), gr.update(visible=principal.is_host)

    def on_select(request: gr.Request, collection_id):
        return collection_id, *shown(principal_of(request), collection_id)

    def on_create(request: gr.Request, name):
        principal = principal_of(request)
        collection = documents.create(name, principal)
        return listing(principal, collection.id), collection.id, "", *shown(principal, collection.id)

    def on_upload(request: gr.Request, collection_id, paths):
        principal = principal_of(request)
        paths = paths if isinstance(paths, list) else [paths]
        collection, message = documents.add_uploads(collection_id, paths, principal)
        gr.Info(message)
        return listing(principal, collection.id), collection.id, None, *shown(principal, collection.id)

    def on_host_folder(request: gr.Request, path):
        principal = principal_of(request)
        collection = documents.add_folder(path, principal)
        return listing(principal, collection.id), collection.id, *shown(principal, collection.id)

    def on_rescan(request: gr.Request, collection_id):
        principal = principal_of(request)
        documents.rescan(collection_id, principal)
        return shown(principal, collection_id)

    def on_delete(request: gr.Request, collection_id):
        principal = principal_of(request)
        documents.delete(collection_id, principal)
        return listing(principal, None), None, "", [], gr.Timer(active=False)

    def on_tick(request: gr.Request, collection_id):
        return shown(principal_of(request), collection_id)

    page_only = {"api_visibility": "private"}
    status_outputs = [progress, table, timer]
    blocks.load(on_load, None, [collections, host_row], **page_only)
    if tab is not None:

        def on_open(request: gr.Request, collection_id):
            return listing(principal_of(request), collection_id), *shown(principal_of(request), collection_id)

        tab.select(on_open, selected, [collections, *status_outputs], **page_only)
    collections.input(on_select, collections, [selected, *status_outputs], **page_only)
    create.click(on_create, new_name, [collections, selected, new_name, *status_outputs], **page_only)
    new_name.submit(on_create, new_name, [collections, selected, new_name, *status_outputs], **page_only)
    files.upload(on_upload, [selected, files], [collections, selected, files, *status_outputs], **page_only)
    folder.upload(on_upload, [selected, folder], [collections, selected, folder, *status_outputs], **page_only)
    index_folder.click(on_host_folder, host_path, [collections, selected, *status_outputs], **page_only)
    rescan.click(on_rescan, selected, status_outputs, **page_only)
    delete.click(on_delete, selected, [collections, selected, *status_outputs], **page_only)
    timer.tick(on_tick, selected, status_outputs, show_progress="hidden", **page_only)
