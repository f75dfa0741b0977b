"""Awkward input on the real tiny.en: telephone audio, clipping, six channels, an empty file, a microphone that
only sends silence. Each gets sensible output or a clear message, and nothing is left running."""

from __future__ import annotations

import threading
import wave

import numpy as np
import pytest

from engines import embedded
from engines.speech.audio_stream import channel_count
from engines.base import InputError, TranscribeOptions
from engines.speech.live_captions import LiveCaptioner
from engines.speech.whisper import WhisperSpeechEngine
from tests import fixtures, speech_fixtures


@pytest.fixture(scope="module")
def engine():
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=2)
    engine.load()
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return fixtures.speech_wav(tmp_path_factory.mktemp("bad"))


def transcript(engine, path) -> str:
    _, segments = engine.transcribe(str(path), TranscribeOptions(beam_size=1))
    return " ".join(s.text for s in segments)


def test_telephone_audio_at_8_khz(engine, speech, tmp_path):
    phone = tmp_path / "phone.wav"
    fixtures._run("sox", str(speech), "-r", "8000", str(phone), "sinc", "300-3400")  # the telephone band
    assert speech_fixtures.wer(fixtures.SPEECH_TEXT, transcript(engine, phone)) <= 0.3


def test_clipped_audio(engine, speech, tmp_path):
    clipped = tmp_path / "clipped.wav"
    fixtures._run("sox", str(speech), str(clipped), "vol", "12")  # far past full scale: flat-topped
    with wave.open(str(clipped)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert (np.abs(samples.astype(int)) >= 32767).mean() > 0.05, "the fixture really is clipped"
    assert speech_fixtures.wer(fixtures.SPEECH_TEXT, transcript(engine, clipped)) <= 0.4


def test_six_channels_are_heard_together(engine, speech, tmp_path):
    six = tmp_path / "six.wav"
    fixtures._run("sox", "-M", *[str(speech)] * 6, str(six))
    assert channel_count(six) == 6
    assert speech_fixtures.wer(fixtures.SPEECH_TEXT, transcript(engine, six)) <= 0.2


def test_a_file_of_zero_seconds_is_a_clear_message(engine, tmp_path):
    empty = speech_fixtures.write_wav(tmp_path / "zero.wav", np.zeros(0, np.float32))
    with pytest.raises(InputError, match="no sound|no audio|holds no"):
        engine.transcribe(str(empty), TranscribeOptions())


def test_ten_minutes_of_microphone_silence(engine, tmp_path):
    before = threading.active_count()
    captioner = LiveCaptioner(engine, tmp_path / "silence.wav", background=True)
    chunk = np.zeros((4800, 2), np.int16)  # 0.1 s at 48 kHz, two channels, as a browser sends it
    for seq in range(6000):
        captions = captioner.feed(48000, chunk, seq)
    captioner.wait(-1, timeout=0)  # whatever the decoding thread has done by now
    assert (captions.confirmed, captions.tentative, captioner.version) == ("", "", 0), "no words, not even once"
    path = captioner.finish()
    assert threading.active_count() == before, "the decoding thread ended"
    assert fixtures.wav_duration(path) == pytest.approx(600.0, abs=0.05)
    _, segments = engine.transcribe(str(path), TranscribeOptions(vad_filter=True))
    assert list(segments) == []
