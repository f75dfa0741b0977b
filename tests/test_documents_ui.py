"""The Documents handlers and Chat's use of them, on the fake chat engine and the bag-of-words embedder
(the real model's retrieval is tested in test_docs_index): uploads, who sees which collection, grounding,
sources under answers, "nothing found", and a transcript added from the Transcribe panel."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pytest

from conversations import ConversationStore
from engines.base import ChatMessage, RetrievalParams, Segment, Transcript, TranscriptInfo
from engines.docs.index import DocsIndex
from engines.docs.indexer import Indexer
from engines.fake import FakeChatEngine, FakeEmbedder
from server.principal import HOST, Principal
from server.uploads import Uploads
from ui.access import Access
from ui.chat import ChatPanel
from ui.documents import NOTHING_FOUND, STILL_INDEXING, Documents
from ui.presets import load_presets

ANA = Principal("guest", "Ana")
BEN = Principal("guest", "Ben")
CONTROLS = ("", 0.0, 0.9, 40, 1.1, 256, 1, None)


class RecordingChatEngine(FakeChatEngine):
    """Echoes like the fake, and keeps every prompt it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[list[ChatMessage]] = []

    def stream(self, messages, params):
        self.prompts.append(list(messages))
        yield from super().stream(messages, params)


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    uploads = Uploads()
    access = Access(data, uploads)
    index = DocsIndex(data / "documents.db")
    embedder = FakeEmbedder()
    indexer = Indexer(index, embedder, max_file_bytes=50_000)
    # Bag-of-words cosines run lower than the model's on long passages: a lower bar for the stand-in.
    documents = Documents(index, indexer, embedder, data / "documents", access, RetrievalParams(min_similarity=0.1))
    store = ConversationStore(data / "melange.db")
    engine = RecordingChatEngine()
    chat = ChatPanel(engine, store, tmp_path / "models", load_presets().chat, tmp_path / "presets", access, documents=documents)
    yield documents, chat, engine, uploads, tmp_path
    indexer.close()
    index.close()
    store.close()


def upload(uploads: Uploads, tmp_path: Path, principal: Principal, name: str, content: str | bytes) -> str:
    """A file as Gradio's upload route leaves it, recorded under its uploader as the guard does."""
    (tmp_path / "gradio").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=tmp_path / "gradio")) / name  # Gradio keeps each upload in a folder of its own
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    uploads.record(principal.owner, [str(path)])
    return str(path)


def add(documents, uploads, tmp_path, principal, files: dict[str, str | bytes], collection_id=None):
    paths = [upload(uploads, tmp_path, principal, name, content) for name, content in files.items()]
    collection, message = documents.add_uploads(collection_id, paths, principal)
    assert documents.indexer.wait(collection.id, timeout=60)
    return collection, message


def send(chat, conversation_id, text, principal=HOST, documents=None):
    return list(chat.send(conversation_id, text, *CONTROLS, principal=principal, documents=documents))


def test_uploads_are_copied_and_indexed_and_refused_files_are_named(setup):
    documents, _, _, uploads, tmp_path = setup
    collection, message = add(documents, uploads, tmp_path, ANA, {
        "otters.md": "# Otters\n\nOtters hold hands while they sleep.",
        "photo.png": b"\x89PNG\r\n\x1a\n" + b"0" * 100,
        "big.txt": "word " * 20_000,
    })  # fmt: skip
    assert collection.name == "My documents" and collection.owner == "guest:ana"
    assert "Added 1 file(s)" in message
    assert "photo.png: not a document type" in message and "big.txt: 0 MB, over the 0 MB limit" in message
    root = Path(collection.root)
    assert root.is_relative_to(tmp_path / "data" / "documents" / "guests" / "ana")
    assert sorted(p.name for p in root.iterdir()) == ["otters.md"], "refused files are not copied"
    body, rows, running = documents.status(collection.id, ANA)
    assert not running and rows == [["otters.md", "markdown", "", 1, "indexed", ""]]
    assert "1 file(s) indexed (1 passages)" in body


def test_a_re_upload_replaces_the_file_and_is_re_indexed(setup):
    documents, _, _, uploads, tmp_path = setup
    collection, _ = add(documents, uploads, tmp_path, HOST, {"plan.txt": "The picnic is on Saturday."})
    add(documents, uploads, tmp_path, HOST, {"plan.txt": "The picnic moved to Sunday."}, collection.id)
    files = documents.index.files(collection.id)
    assert len(files) == 1 and files[0].state == "indexed"
    hits = documents.index.lexical([collection.id], '"picnic"', 5)
    assert [p.text for p in documents.index.passages(hits).values()] == ["The picnic moved to Sunday."]


def test_someone_elses_upload_is_not_found(setup):
    documents, _, _, uploads, tmp_path = setup
    anas = upload(uploads, tmp_path, ANA, "diary.txt", "Dear diary.")
    with pytest.raises(gr.Error, match="not found among your uploads"):
        documents.add_uploads(None, [anas], BEN)
    with pytest.raises(gr.Error, match="not found among your uploads"):
        documents.add_uploads(None, ["/etc/passwd"], HOST)
    assert documents.visible(BEN) == [] and documents.visible(HOST) == []


def test_a_guests_collections_are_invisible_to_another_guest(setup):
    documents, chat, engine, uploads, tmp_path = setup
    anas, _ = add(documents, uploads, tmp_path, ANA, {"salary.txt": "Ana's salary is 4,100 euros a month."})
    bens = documents.create("Bikes", BEN)
    assert [c.id for c in documents.visible(ANA)] == [anas.id]
    assert [c.id for c in documents.visible(BEN)] == [bens.id]
    assert dict((v, k) for k, v in documents.choices(HOST)) == {anas.id: "My documents · ana", bens.id: "Bikes · ben"}
    for attempt in (
        lambda: documents.collection(anas.id, BEN),
        lambda: documents.status(anas.id, BEN),
        lambda: documents.rescan(anas.id, BEN),
        lambda: documents.delete(anas.id, BEN),
        lambda: documents.add_uploads(anas.id, [upload(uploads, tmp_path, BEN, "x.txt", "x")], BEN),
    ):
        with pytest.raises(gr.Error, match=f"There is no collection {anas.id}"):
            attempt()
    with pytest.raises(gr.Error, match="There is no collection"):
        send(chat, None, "What is Ana's salary?", BEN, documents=[anas.id])
    assert chat.store.list(None) == [] and engine.prompts == [], "refused before anything was stored or generated"
    bens_chat = send(chat, None, "hello", BEN)[0][1]
    with pytest.raises(gr.Error, match="There is no collection"):
        documents.attach(bens_chat, [anas.id], BEN)
    assert documents.attached(bens_chat) == []
    assert documents.collection(anas.id, HOST).owner == "guest:ana", "the host sees everyone's"


def test_only_the_host_may_index_a_folder_on_this_machine(setup):
    documents, _, _, _, tmp_path = setup
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "a.md").write_text("# Paper\n\nGraphene conducts heat well.")
    with pytest.raises(gr.Error, match="Only the host can index a folder"):
        documents.add_folder(str(folder), ANA)
    with pytest.raises(gr.Error, match="is not a folder"):
        documents.add_folder(str(tmp_path / "nope"), HOST)
    collection = documents.add_folder(str(folder), HOST)
    assert collection.from_folder and collection.root == str(folder.resolve())
    assert documents.indexer.wait(collection.id, timeout=60)
    assert documents.add_folder(str(folder), HOST).id == collection.id, "the same folder twice is one collection"
    documents.delete(collection.id, HOST)
    assert (folder / "a.md").exists(), "deleting the collection never touches the host's own folder"


def test_chat_answers_from_the_chosen_documents_and_lists_its_sources(setup):
    documents, chat, engine, uploads, tmp_path = setup
    collection, _ = add(documents, uploads, tmp_path, ANA, {
        "ferry.txt": "The ferry to Inishmore leaves at 10:30 from the pier at Rossaveal.",
        "keys.md": "# House\n\nThe spare key is under the blue flowerpot.",
    })  # fmt: skip
    updates = send(chat, None, "When does the ferry to Inishmore leave?", ANA, documents=[collection.id])
    conversation = updates[0][1]
    prompt = engine.prompts[-1]
    assert prompt[-1].role == "user" and prompt[-1].content.startswith("Sources:")
    assert "[1] ferry.txt\nThe ferry to Inishmore leaves at 10:30" in prompt[-1].content
    assert prompt[-1].content.endswith("Question: When does the ferry to Inishmore leave?")
    shown = updates[-1][0][-1]["content"]
    assert '<div class="melange-sources"><b>Sources</b>' in shown
    assert "<summary>[1] ferry.txt</summary>" in shown and "10:30 from the pier" in shown
    stored = chat.store.messages(conversation)
    assert stored[0].content == "When does the ferry to Inishmore leave?", "the question is stored as typed"
    assert "melange-sources" not in stored[1].content, "sources are shown under the reply, never sent to the model"
    assert documents.attached(conversation) == [collection.id]
    # Reopened later, the reply still shows its sources; the next question asks the same documents.
    reopened, *_ = chat.open_conversation(conversation, ANA)
    assert "<summary>[1] ferry.txt</summary>" in reopened[-1]["content"]
    send(chat, conversation, "Where is the spare key?", ANA)
    assert "the blue flowerpot" in engine.prompts[-1][-1].content


def test_nothing_relevant_says_so_without_asking_the_model(setup):
    documents, chat, engine, uploads, tmp_path = setup
    collection, _ = add(documents, uploads, tmp_path, HOST, {"ferry.txt": "The ferry to Inishmore leaves at 10:30."})
    updates = send(chat, None, "Who painted Mona Lisa?", HOST, documents=[collection.id])
    reply = updates[-1][0][-1]["content"]
    assert reply == NOTHING_FOUND.format(names="“My documents”")
    assert engine.prompts == [], "nothing was generated"
    assert "Sources" not in reply
    # Without documents the same question goes to the model as usual.
    send(chat, updates[0][1], "Who painted Mona Lisa?", HOST, documents=[])
    assert engine.prompts[-1][-1].content == "Who painted Mona Lisa?"


def test_a_documents_html_never_reaches_the_page_as_html(setup):
    documents, chat, _, uploads, tmp_path = setup
    collection, _ = add(documents, uploads, tmp_path, HOST, {
        "evil.md": "# Notes\n\nThe treasure map <script>alert(1)</script> <img src=https://evil.example/x> is in the attic.",
    })  # fmt: skip
    shown = send(chat, None, "Where is the treasure map?", HOST, documents=[collection.id])[-1][0][-1]["content"]
    sources = shown.split('<div class="melange-sources">', 1)[1]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in sources and "<script>" not in sources and "<img" not in sources


def test_a_regenerated_reply_without_documents_shows_no_old_sources(setup):
    documents, chat, _, uploads, tmp_path = setup
    collection, _ = add(documents, uploads, tmp_path, HOST, {"ferry.txt": "The ferry to Inishmore leaves at 10:30."})
    conversation = send(chat, None, "When does the ferry to Inishmore leave?", HOST, documents=[collection.id])[0][1]
    documents.attach(conversation, [], HOST)
    updates = list(chat.regenerate(conversation, *CONTROLS, principal=HOST))
    assert "Sources" not in updates[-1][0][-1]["content"], "SQLite may reuse the reply's id: its sources are reset"


def test_a_transcript_is_added_with_its_timestamps(setup):
    documents, chat, engine, _, tmp_path = setup
    segments = [Segment(i * 6.0, i * 6.0 + 5.0, f"Point {i} was next.") for i in range(30)]
    segments[20] = Segment(120.0, 125.0, "The warehouse inventory is due on the fourth of June.", speaker="Speaker 1")
    transcript = Transcript(TranscriptInfo("en", 1.0, 180.0, "tiny.en"), segments)
    with pytest.raises(gr.Error, match="Transcribe something first"):
        documents.add_transcript(None, {}, None, BEN)
    collection = documents.add_transcript(transcript, {"Speaker 1": "Rosa"}, "/tmp/gradio/abc/weekly meeting.wav", BEN)
    assert collection.name == "Transcripts" and collection.owner == "guest:ben"
    assert documents.indexer.wait(collection.id, timeout=60)
    [file] = documents.index.files(collection.id)
    assert file.name.startswith("weekly-meeting-") and file.name.endswith(".json") and file.kind == "transcript"
    assert documents.add_transcript(transcript, {}, None, BEN).id == collection.id, "one Transcripts collection"
    updates = send(chat, None, "When is the warehouse inventory due?", BEN, documents=[collection.id])
    shown = updates[-1][0][-1]["content"]
    assert "weekly-meeting-" in shown and ", 01:" in shown, "the source names the transcript's time"
    assert "Rosa: The warehouse inventory" in engine.prompts[-1][-1].content


def test_deleting_a_collection_removes_its_copies_and_its_place_in_conversations(setup):
    documents, chat, _, uploads, tmp_path = setup
    collection, _ = add(documents, uploads, tmp_path, ANA, {"a.txt": "Alpha bravo charlie."})
    conversation = send(chat, None, "alpha?", ANA, documents=[collection.id])[0][1]
    documents.delete(collection.id, ANA)
    assert not Path(collection.root).exists()
    assert documents.attached(conversation) == [] and documents.visible(ANA) == []
    send(chat, conversation, "alpha again?", ANA)  # the conversation goes on without documents


def test_deleting_a_conversation_forgets_its_documents_and_sources(setup):
    documents, chat, _, uploads, tmp_path = setup
    collection, _ = add(documents, uploads, tmp_path, HOST, {"ferry.txt": "The ferry to Inishmore leaves at 10:30."})
    conversation = send(chat, None, "When does the ferry to Inishmore leave?", HOST, documents=[collection.id])[0][1]
    reply_id = chat.store.messages(conversation)[-1].id
    assert documents.sources(conversation, [reply_id])
    chat.delete(conversation, HOST)
    assert documents.attached(conversation) == [] and documents.sources(conversation, [reply_id]) == {}


def test_a_question_asked_while_its_documents_are_indexed_says_to_wait(setup, monkeypatch):
    import threading

    from engines.docs import parse as docs_parse

    documents, chat, engine, uploads, tmp_path = setup
    reading, release = threading.Event(), threading.Event()
    real_parse = docs_parse.parse

    def slow_parse(path, *args, **kwargs):
        reading.set()
        release.wait(30)
        return real_parse(path, *args, **kwargs)

    monkeypatch.setattr(docs_parse, "parse", slow_parse)
    path = upload(uploads, tmp_path, HOST, "ferry.txt", "The ferry to Inishmore leaves at 10:30.")
    collection, _ = documents.add_uploads(None, [path], HOST)
    assert reading.wait(30)
    try:
        reply = send(chat, None, "When does the ferry to Inishmore leave?", HOST, documents=[collection.id])[-1][0][-1]["content"]
    finally:
        release.set()
    assert reply == STILL_INDEXING.format(names="“My documents”") and engine.prompts == []
    assert documents.indexer.wait(collection.id, timeout=60)
    send(chat, None, "When does the ferry to Inishmore leave?", HOST, documents=[collection.id])
    assert "10:30" in engine.prompts[-1][-1].content
