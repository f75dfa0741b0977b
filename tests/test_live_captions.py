"""Live captions on the real tiny.en: microphone-like chunks (48 kHz stereo, 0.3 s) fed as fast as they decode."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from engines import embedded
from engines.speech.live_captions import LiveCaptioner, _norm
from engines.speech.whisper import WhisperSpeechEngine
from tests import fixtures

CHUNK_SECONDS = 0.3
RATE = 48000


@pytest.fixture(scope="module")
def engine():
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=2)
    engine.load()
    yield engine
    engine.unload()


def microphone(path, tail_silence: float = 1.5) -> np.ndarray:
    """The wav as a browser would send it: 48 kHz, two channels, int16, with silence after."""
    fixtures._run("sox", str(path), "-r", str(RATE), "-c", "2", str(path.with_suffix(".48k.wav")), "pad", "0", str(tail_silence))
    with wave.open(str(path.with_suffix(".48k.wav"))) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)


def stream(captioner, audio):
    step = int(CHUNK_SECONDS * RATE)
    return [captioner.feed(RATE, audio[i : i + step]) for i in range(0, len(audio), step)]


def test_speech_is_captioned_with_nothing_lost_or_doubled(engine, tmp_path):
    path, text = fixtures.long_speech_wav(tmp_path, min_seconds=20)  # one pass of the six sentences
    captioner = LiveCaptioner(engine, tmp_path / "recording.wav")
    seen = stream(captioner, microphone(path))
    final = seen[-1]
    assert final.tentative == "", "after a pause every word is confirmed"
    wer = fixtures.word_error_rate(text, final.confirmed)
    assert wer <= 0.15, f"WER {wer:.2f}: {final.confirmed!r}"
    words = [_norm(w) for w in final.confirmed.split()]
    doubled = [a for a, b in zip(words, words[1:]) if a == b]
    assert not doubled, final.confirmed
    # Confirmed text never changes: each update extends the last.
    for a, b in zip(seen, seen[1:]):
        assert b.confirmed.startswith(a.confirmed)
    # Tentative words show up before they are confirmed (the grey tail is used).
    assert any(c.tentative for c in seen)
    recording = captioner.finish()
    assert fixtures.wav_duration(recording) == pytest.approx(fixtures.wav_duration(path) + 1.5, abs=0.1)


def test_silence_gives_no_captions(engine, tmp_path):
    silence = fixtures.silence_wav(tmp_path, 6.0)
    captioner = LiveCaptioner(engine, tmp_path / "recording.wav")
    seen = stream(captioner, microphone(silence, tail_silence=0.0))
    assert all(c.confirmed == "" and c.tentative == "" for c in seen)


def test_finish_without_audio_says_nothing_was_recorded(engine, tmp_path):
    from engines.base import InputError

    captioner = LiveCaptioner(engine, tmp_path / "recording.wav")
    with pytest.raises(InputError, match="Nothing was recorded"):
        captioner.finish()
