"""One speaker per channel: a two-channel call on the real tiny.en, each voice leaking into the other's
microphone 20 dB down, through the Transcribe panel's handler."""

from __future__ import annotations

import numpy as np
import pytest

from engines import embedded
from engines.speech.whisper import WhisperSpeechEngine
from tests import fixtures, speech_fixtures
from ui.transcribe import FileOptions, TranscribePanel


@pytest.fixture(scope="module")
def panel():
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=2)
    yield TranscribePanel(engine)
    engine.unload()


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    """Four turns, awb (left) and slt (right) alternating; each channel carries the other voice at -20 dB."""
    directory = tmp_path_factory.mktemp("call")
    mono, turns = speech_fixtures.conversation_wav(directory, ["flite-awb", "flite-slt"], 4, first=2)
    samples = speech_fixtures.read_wav(mono)
    left, right = np.zeros_like(samples), np.zeros_like(samples)
    for turn in turns:
        part = slice(int(turn.start * 16000), int(turn.end * 16000))
        own, other = (left, right) if turn.speaker == "flite-awb" else (right, left)
        own[part] = samples[part]
        other[part] = samples[part] * 0.1
    return speech_fixtures.write_wav(directory / "call.wav", np.stack([left, right], axis=1)), turns


def test_each_channel_is_one_speaker_merged_by_time(panel, call):
    path, turns = call
    *_, last = panel.transcribe(str(path), FileOptions(channels=True, beam_size=1))
    text, timed, info, transcript, files, rows = last
    assert "one speaker per channel" in info and len(files) == 4
    assert [r[0] for r in rows] == ["Speaker 1", "Speaker 2"]
    spoken = " ".join(t.text for t in turns)
    assert speech_fixtures.wer(spoken, transcript.text) <= 0.15, "each turn once: the leaking voice is left out"
    expected = ["Speaker 1" if t.speaker == "flite-awb" else "Speaker 2" for t in turns]
    runs = [s.speaker for i, s in enumerate(transcript.segments) if i == 0 or s.speaker != transcript.segments[i - 1].speaker]
    assert runs == expected, "the turns in order, each by its channel's speaker"
    for word in transcript.words:  # Whisper's word times are loose by a few tenths at a turn's edges
        middle = (word.start + word.end) / 2
        near = {expected[i] for i, t in enumerate(turns) if t.start - 0.5 <= middle <= t.end + 0.5}
        assert word.speaker in near, (word, near)


def test_channels_need_two_of_them(panel, tmp_path):
    import gradio as gr

    mono = fixtures.speech_wav(tmp_path)
    with pytest.raises(gr.Error, match="two-channel recording.*has 1 channel"):
        list(panel.transcribe(str(mono), FileOptions(channels=True)))
    same = tmp_path / "same.wav"
    fixtures._run("sox", str(mono), "-c", "2", str(same))  # one microphone saved as stereo
    with pytest.raises(gr.Error, match="same sound"):
        list(panel.transcribe(str(same), FileOptions(channels=True)))
