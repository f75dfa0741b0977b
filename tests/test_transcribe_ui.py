"""Transcribe panel handlers on the fake engine: fast checks of the glue."""

from __future__ import annotations

import wave

import gradio as gr
import pytest

from engines.fake import FakeSpeechEngine
from ui import transcribe


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
