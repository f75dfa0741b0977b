"""Chat panel handlers with the SQLite store, on the fake engine (the real model is in test_chat_engine)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from conversations import ConversationStore, StoredMessage, import_json
from engines.base import ChatDelta, ChatMessage, ChatParams, EngineError
from engines.fake import FakeChatEngine
from ui.chat import ChatPanel, Sampling
from ui.presets import load_presets

CONTROLS = ("Be brief.", 0.5, 0.9, 40, 1.1, 64, -1, "Helpful assistant")  # system prompt, temperature, top-p, top-k, repeat, max, seed, preset


class FailingChatEngine(FakeChatEngine):
    """Writes two words, then breaks."""

    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        yield ChatDelta("Half a")
        yield ChatDelta(" reply")
        raise EngineError("the model crashed")


@pytest.fixture
def store(tmp_path):
    store = ConversationStore(tmp_path / "melange.db")
    yield store
    store.close()


def make_panel(store, tmp_path, engine=None) -> ChatPanel:
    return ChatPanel(engine or FakeChatEngine(), store, tmp_path / "models", load_presets().chat, tmp_path / "presets")


def send(panel, conversation_id, message, controls=CONTROLS):
    return list(panel.send(conversation_id, message, *controls))


def test_a_message_starts_a_stored_conversation_and_the_reply_streams(store, tmp_path):
    panel = make_panel(store, tmp_path, FakeChatEngine(delay=0.05))
    updates = send(panel, None, "hello there")
    chatbot, conversation_id, textbox, _, history = updates[0]
    assert chatbot == [{"role": "user", "content": "hello there"}], "the user's message shows at once"
    assert textbox == ""
    assert history["choices"] == [("hello there", conversation_id)]
    partials = [u[0][-1]["content"] for u in updates[1:]]
    assert len(set(partials)) >= 3, "the reply grows over several updates"
    final = updates[-1][0][-1]["content"]
    assert final.startswith("You said: hello there") and "tok/s" in final
    assert "tok/s" in updates[-1][3]
    stored = store.messages(conversation_id)
    assert [(m.role, m.content) for m in stored] == [("user", "hello there"), ("assistant", "You said: hello there")]
    assert stored[1].stats["completion_tokens"] == 4
    assert store.get(conversation_id).settings["temperature"] == 0.5


def test_the_conversation_continues_and_survives_a_restart(store, tmp_path):
    panel = make_panel(store, tmp_path)
    conversation_id = send(panel, None, "one")[0][1]
    send(panel, conversation_id, "two")
    reopened = ConversationStore(tmp_path / "melange.db")
    chatbot, *_ = make_panel(reopened, tmp_path).open_conversation(conversation_id)
    assert [m["content"].split("\n\n<sub>")[0] for m in chatbot] == ["one", "You said: one", "two", "You said: two"]
    reopened.close()


@pytest.mark.parametrize("message", ["", "   ", "\n\t", "\x00\x07\x1b"])
def test_an_empty_message_is_refused_and_nothing_is_stored(store, tmp_path, message):
    with pytest.raises(gr.Error, match="empty"):
        send(make_panel(store, tmp_path), None, message)
    assert store.list() == []


def test_control_characters_are_removed_but_newlines_kept(store, tmp_path):
    conversation_id = send(make_panel(store, tmp_path), None, "a\x00b\nc\x1b[0m")[0][1]
    assert store.messages(conversation_id)[0].content == "ab\nc[0m"


def test_a_one_megabyte_paste_gets_a_clear_message(store, tmp_path):
    with pytest.raises(gr.Error, match="limit"):
        send(make_panel(store, tmp_path), None, "x" * 1_000_000)
    assert store.list() == []


@pytest.mark.parametrize(
    "index, value, message",
    [(1, -1.0, "Temperature"), (5, 10**9, "Max new tokens"), (2, 0.0, "Top-p"), (6, 1.5, "whole number")],
)
def test_out_of_range_settings_sent_through_the_api_are_refused(store, tmp_path, index, value, message):
    controls = list(CONTROLS)
    controls[index] = value
    with pytest.raises(gr.Error, match=message):
        send(make_panel(store, tmp_path), None, "hi", controls)
    assert store.list() == []


def test_a_failing_engine_loses_neither_the_message_nor_the_partial_reply(store, tmp_path):
    panel = make_panel(store, tmp_path, FailingChatEngine())
    with pytest.raises(gr.Error, match="crashed"):
        send(panel, None, "keep me")
    [conversation] = store.list()
    stored = store.messages(conversation.id)
    assert [(m.role, m.content) for m in stored] == [("user", "keep me"), ("assistant", "Half a reply")]
    assert stored[1].stats == {"finish_reason": "cancelled"}


def test_fast_tokens_reach_the_page_in_batches_but_all_of_them_arrive(store, tmp_path):
    controls = ("", 0.5, 0.9, 40, 1.1, 1024, -1, None)
    updates = send(make_panel(store, tmp_path), None, " ".join(["word"] * 200), controls)
    assert len(updates) < 20, "a token stream faster than the screen refresh is coalesced"
    assert updates[-1][0][-1]["content"].startswith("You said: " + " ".join(["word"] * 200))


class Clock:
    """ui.chat's clock, moved by hand: a token takes ``token`` seconds, showing an update ``update`` seconds."""

    def __init__(self, token: float, update: float) -> None:
        self.now, self.token, self.update = 1000.0, token, update

    def monotonic(self) -> float:
        return self.now


def stream_with_costly_updates(store, tmp_path, monkeypatch, clock: Clock, tokens: int = 200, stats: bool = True) -> list:
    """The page's updates for a reply of ``tokens`` tokens, each update costing the page ``clock.update``."""
    import ui.chat

    monkeypatch.setattr(ui.chat, "time", clock)
    panel = make_panel(store, tmp_path)

    def generate(conversation_id, history, sampling, params, replace=None):
        text = ""
        for i in range(tokens):
            clock.now += clock.token
            text += f" w{i}"
            last = i == tokens - 1
            yield StoredMessage(1, "assistant", text.strip(), {"completion_tokens": tokens, "seconds": 1.0} if last and stats else None)

    monkeypatch.setattr(panel, "_generate", generate)
    updates = []
    for update in panel.send(None, "hello", *CONTROLS):
        updates.append(update)
        clock.now += clock.update  # what Gradio spends on it before it asks for the next one
    return updates


def test_updates_that_cost_the_page_more_come_less_often_and_the_whole_reply_arrives(store, tmp_path, monkeypatch):
    cheap = stream_with_costly_updates(store, tmp_path, monkeypatch, Clock(token=0.01, update=0.0))
    costly = stream_with_costly_updates(store, tmp_path, monkeypatch, Clock(token=0.01, update=0.005))
    assert 30 <= len(cheap) <= 45, "cheap updates: 20 a second (200 tokens in 2 s)"
    assert 8 <= len(costly) <= 16, "5 ms an update: one every 0.17 s, so updates take 3% of the time"
    for updates in (cheap, costly):
        assert updates[-1][0][-1]["content"].startswith(" ".join(f"w{i}" for i in range(200)) + "\n\n<sub>200 tokens")
        assert "tok/s" in updates[-1][3]
        assert all(u[3] == "" for u in updates[:-1]), "the stats line stays empty while the reply streams"


def test_updates_never_stop_for_long_and_the_last_words_show_without_stats(store, tmp_path, monkeypatch):
    slow = stream_with_costly_updates(store, tmp_path, monkeypatch, Clock(token=0.01, update=1.0), stats=False)
    assert len(slow) >= 2 + 200 * 0.01 / 0.25 - 1, "at least four updates a second"
    assert slow[-1][0][-1]["content"] == " ".join(f"w{i}" for i in range(200))


def test_stop_mid_reply_keeps_the_partial_reply(store, tmp_path):
    panel = make_panel(store, tmp_path, FakeChatEngine(delay=0.05))
    stream = panel.send(None, "a long message to echo back word by word", *CONTROLS)
    conversation_id = next(stream)[1]
    next(stream)
    shown = next(stream)[0][-1]["content"]  # the reply as the page last showed it
    stream.close()  # what Gradio does when Stop is pressed or the tab closes
    reply = store.messages(conversation_id)[-1]
    whole = "You said: a long message to echo back word by word"
    # Kept: at least what was shown, and what was generated before Stop; updates may hold the newest words back
    # for a moment (the page's update rate), so the stored reply can be a word ahead of the page, never behind.
    assert reply.role == "assistant" and shown.startswith("You said") and reply.content.startswith(shown)
    assert whole.startswith(reply.content) and len(reply.content) < len(whole), "stopped early, the partial reply kept"
    assert reply.stats == {"finish_reason": "cancelled"}


class NumberedChatEngine(FakeChatEngine):
    """Says which attempt this is, so a regenerated reply differs from the first."""

    attempts = 0

    def stream(self, messages, params):
        self.attempts += 1
        yield ChatDelta(f"Attempt {self.attempts}")


def test_regenerate_replaces_the_last_reply(store, tmp_path):
    panel = make_panel(store, tmp_path, NumberedChatEngine())
    conversation_id = send(panel, None, "again")[0][1]
    list(panel.regenerate(conversation_id, *CONTROLS))
    assert [(m.role, m.content) for m in store.messages(conversation_id)] == [("user", "again"), ("assistant", "Attempt 2")]


def test_edit_and_resend_replaces_the_message_and_what_followed(store, tmp_path):
    panel = make_panel(store, tmp_path)
    conversation_id = send(panel, None, "first")[0][1]
    send(panel, conversation_id, "second")
    list(panel.edit(conversation_id, 2, "second, edited", *CONTROLS))
    assert [m.content for m in store.messages(conversation_id)] == [
        "first",
        "You said: first",
        "second, edited",
        "You said: second, edited",
    ]
    with pytest.raises(gr.Error, match="Only your own messages"):
        list(panel.edit(conversation_id, 1, "rewrite the reply", *CONTROLS))


def test_rename_delete_and_the_sidebar(store, tmp_path):
    panel = make_panel(store, tmp_path)
    a = send(panel, None, "alpha")[0][1]
    b = send(panel, None, "beta")[0][1]
    assert [c for _, c in panel.history_choices()] == [b, a], "newest first"
    panel.rename(a, "Renamed")
    assert ("Renamed", a) in panel.history_choices()
    with pytest.raises(gr.Error):
        panel.rename(a, "   ")
    panel.delete(a)
    assert [c for _, c in panel.history_choices()] == [b]
    assert store.messages(a) == []


def test_export_markdown_and_json_round_trip(store, tmp_path):
    panel = make_panel(store, tmp_path)
    conversation_id = send(panel, None, "export me")[0][1]
    md_path, json_path = panel.export(conversation_id)
    markdown = Path(md_path).read_text()
    assert "# export me" in markdown and "You said: export me" in markdown and "temperature: 0.5" in markdown
    data = json.loads(Path(json_path).read_text())
    assert data["settings"]["model"] == "fake-echo" and data["settings"]["max_tokens"] == 64
    assert data["settings"]["preset"] == "Helpful assistant"
    copy = import_json(store, data)
    original = [(m.role, m.content, m.stats) for m in store.messages(conversation_id)]
    assert [(m.role, m.content, m.stats) for m in store.messages(copy.id)] == original
    with pytest.raises(gr.Error, match="Open a conversation"):
        panel.export(None)


def test_presets_apply_and_save_as_new(store, tmp_path):
    panel = make_panel(store, tmp_path)
    assert panel.apply_preset("Helpful assistant")[1] == 0.3
    update = panel.save_preset("Creative", "Be playful.", 1.2, 0.95, 80, 1.0, 512)
    assert update["value"] == "Creative"
    reloaded = load_presets(user_root=tmp_path / "presets").chat
    assert any(p.name == "Creative" and p.temperature == 1.2 and p.system_prompt == "Be playful." for p in reloaded)
    with pytest.raises(gr.Error, match="exists already"):
        panel.save_preset("Creative", "", 0.5, 0.9, 40, 1.1, 64)
    with pytest.raises(gr.Error, match="name"):
        panel.save_preset("  ", "", 0.5, 0.9, 40, 1.1, 64)


def test_model_picker_lists_the_embedded_model_and_the_models_folder(store, tmp_path):
    (tmp_path / "models" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "sub" / "mine.gguf").write_bytes(b"GGUF" + b"\0" * 16)
    panel = make_panel(store, tmp_path)
    names = [name for name, _ in panel.model_choices()]
    assert any("SmolLM2" in n for n in names) and "sub/mine.gguf" in names
    panel.switch_model(str(tmp_path / "models" / "sub" / "mine.gguf"), 2048)
    assert panel.engine.n_ctx == 2048 and panel.engine.status().model == "sub/mine.gguf"


def test_switching_to_a_missing_or_non_gguf_file_is_refused(store, tmp_path):
    from engines.chat.llama import LlamaChatEngine
    from engines import embedded

    panel = make_panel(store, tmp_path, LlamaChatEngine(embedded.smollm2_gguf()))
    with pytest.raises(gr.Error, match="not found"):
        panel.switch_model(str(tmp_path / "nope.gguf"), 4096)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(gr.Error, match="not a GGUF"):
        panel.switch_model(str(text), 4096)
    assert "SmolLM2" in panel.engine.status().model


@pytest.mark.parametrize(
    "repo, filename, message",
    [("not-a-repo", "x.gguf", "owner/name"), ("owner/name", "model.bin", ".gguf")],
)
def test_download_refuses_malformed_requests(store, tmp_path, repo, filename, message):
    with pytest.raises(gr.Error, match=message):
        make_panel(store, tmp_path).download(repo, filename)


def test_download_offline_says_so(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(gr.Error, match="Cannot reach the Hugging Face hub"):
        make_panel(store, tmp_path).download("someone/does-not-exist-GGUF", "model.Q4_K_M.gguf")


# ---------------------------------------------------------------- the /chat API's handler

SAMPLING = Sampling("Be brief.", 0.5, 0.9, 40, 1.1, 64, -1)


def test_the_api_streams_the_reply_alone_and_stores_the_conversation(store, tmp_path):
    panel = make_panel(store, tmp_path, FakeChatEngine(delay=0.06))
    updates = list(panel.api_chat("hello there", SAMPLING, None))
    assert len(updates) >= 3 and len({u["reply"] for u in updates}) >= 3, "the reply streams"
    final = updates[-1]
    assert final["reply"] == "You said: hello there", "the reply only: no footer, no history"
    assert final["stats"]["completion_tokens"] == 4
    assert all(u["stats"] is None for u in updates[:-1])
    stored = store.messages(final["conversation_id"])
    assert [(m.role, m.content) for m in stored] == [("user", "hello there"), ("assistant", "You said: hello there")]


def test_the_api_continues_a_conversation_by_its_id(store, tmp_path):
    panel = make_panel(store, tmp_path)
    first = list(panel.api_chat("one", SAMPLING, None))[-1]["conversation_id"]
    again = list(panel.api_chat("two", SAMPLING, first))[-1]
    assert again["conversation_id"] == first
    assert [m.content for m in store.messages(first)] == ["one", "You said: one", "two", "You said: two"]
    assert len(store.list()) == 1


@pytest.mark.parametrize(
    ("message", "sampling", "conversation_id", "error"),
    [
        ("   ", SAMPLING, None, "empty"),
        ("hi", Sampling("", -1.0, 0.9, 40, 1.1, 64, -1), None, "emperature"),
        ("hi", Sampling("", 0.5, 0.9, 40, 1.1, 10**9, -1), None, "ax"),
        ("hi", Sampling("", 0.5, 0.9, 40, 1.1, 64, 1.5), None, "whole number"),
        ("hi", SAMPLING, 999, "no conversation 999"),
    ],
)
def test_bad_api_requests_are_refused_and_store_nothing(store, tmp_path, message, sampling, conversation_id, error):
    with pytest.raises(gr.Error, match=error):
        list(make_panel(store, tmp_path).api_chat(message, sampling, conversation_id))
    assert store.list() == []
