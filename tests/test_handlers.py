"""UI handlers on the deterministic fake engines: fast checks of the glue, not proof the panels work."""

from __future__ import annotations

import wave
from collections.abc import Iterator

import gradio as gr
import pytest

from engines.base import ChatDelta, ChatMessage, ChatParams, EngineError
from engines.fake import FakeChatEngine, FakeSpeechEngine
from ui import chat, transcribe


class FailingChatEngine(FakeChatEngine):
    """Writes two words, then the engine breaks."""

    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        yield ChatDelta("Half a")
        yield ChatDelta(" reply")
        raise EngineError("the model crashed")


def run_chat(engine, conversation, message):
    return list(chat.respond(engine, conversation, message, "Be brief.", 0.5, 64))


def test_chat_streams_the_reply_and_clears_the_textbox():
    conversation: list[ChatMessage] = []
    updates = run_chat(FakeChatEngine(), conversation, "hello there")
    chatbot, conv, textbox, stats = updates[-1]
    assert chatbot[-1] == {"role": "assistant", "content": "You said: hello there"}
    assert chatbot[0] == {"role": "user", "content": "hello there"}
    assert textbox == ""
    assert "tokens" in stats and "tok/s" in stats
    partials = [u[0][-1]["content"] for u in updates if u[0][-1]["role"] == "assistant"]
    assert len(set(partials)) >= 3, "the reply should grow over several updates"
    assert [m.role for m in conversation] == ["user", "assistant"]


def test_chat_keeps_history_across_turns_and_hides_the_system_prompt():
    conversation: list[ChatMessage] = []
    run_chat(FakeChatEngine(), conversation, "one")
    chatbot = run_chat(FakeChatEngine(), conversation, "two")[-1][0]
    assert [m["content"] for m in chatbot] == ["one", "You said: one", "two", "You said: two"]


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_chat_refuses_an_empty_message_and_changes_nothing(message):
    conversation: list[ChatMessage] = []
    with pytest.raises(gr.Error, match="empty"):
        run_chat(FakeChatEngine(), conversation, message)
    assert conversation == []


def test_chat_refuses_a_giant_paste_with_a_clear_message():
    conversation: list[ChatMessage] = []
    with pytest.raises(gr.Error, match="limit"):
        run_chat(FakeChatEngine(), conversation, "x" * (chat.MAX_MESSAGE_CHARS + 1))
    assert conversation == []


def test_chat_refuses_out_of_range_sliders_sent_through_the_api():
    with pytest.raises(gr.Error, match="Temperature"):
        list(chat.respond(FakeChatEngine(), [], "hi", "", -1.0, 64))
    with pytest.raises(gr.Error, match="Max new tokens"):
        list(chat.respond(FakeChatEngine(), [], "hi", "", 0.5, 10**9))


def test_a_failing_engine_loses_neither_the_message_nor_the_partial_reply():
    conversation: list[ChatMessage] = []
    with pytest.raises(gr.Error, match="crashed"):
        run_chat(FailingChatEngine(), conversation, "keep me")
    assert conversation[0] == ChatMessage("user", "keep me")
    assert conversation[1] == ChatMessage("assistant", "Half a reply")


def test_chat_loads_the_model_on_first_use_only():
    engine = FakeChatEngine()
    run_chat(engine, [], "a")
    run_chat(engine, [], "b")
    assert engine.load_calls == 1


def write_wav(path, seconds=1.5, rate=16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return path


def test_transcribe_streams_text_timestamps_and_info(tmp_path):
    wav = write_wav(tmp_path / "a.wav")
    updates = list(transcribe.transcribe(FakeSpeechEngine(), str(wav), transcribe.AUTO_LANGUAGE, 5, True))
    text, timed, info = updates[-1]
    assert text == "fake transcript of 1.5 seconds"
    assert timed.startswith("[00:00.0 → 00:01.5]")
    assert "Language **en**" in info and "done in" in info


def test_transcribe_without_a_file_asks_for_one():
    with pytest.raises(gr.Error, match="Upload or record"):
        list(transcribe.transcribe(FakeSpeechEngine(), None, "en", 5, True))


def test_transcribe_turns_unreadable_audio_into_a_clear_message(tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio")
    with pytest.raises(gr.Error, match="not a readable"):
        list(transcribe.transcribe(FakeSpeechEngine(), str(bogus), "en", 5, True))
