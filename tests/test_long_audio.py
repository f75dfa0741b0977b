"""A three-hour recording is transcribed without its decoded audio ever being in memory whole."""

from __future__ import annotations

import threading
import time

import pytest

from engines import embedded
from engines.base import TranscribeOptions
from engines.residency import process_rss
from engines.speech.whisper import WhisperSpeechEngine
from tests import fixtures

HOURS = 3
DECODED_BYTES = HOURS * 3600 * 16000 * 4  # float32 at 16 kHz: what loading it all would take (691 MB)


class PeakMemory:
    def __init__(self) -> None:
        self.start = process_rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, process_rss())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def three_hours(tmp_path_factory):
    """The speech fixture, then silence up to three hours: a 345 MB WAV."""
    directory = tmp_path_factory.mktemp("long")
    speech = fixtures.speech_wav(directory)
    out = directory / "three_hours.wav"
    fixtures._run("sox", "-D", str(speech), str(out), "pad", "0", str(HOURS * 3600 - fixtures.wav_duration(speech)))
    return out


def transcribe_measured(engine, path) -> tuple[str, float, int]:
    with PeakMemory() as memory:
        info, segments = engine.transcribe(str(path), TranscribeOptions(beam_size=1, vad_filter=True))
        text = " ".join(s.text for s in segments)
    return text, info.duration, memory.peak - memory.start


def test_a_three_hour_file_is_transcribed_in_bounded_memory(three_hours, tmp_path):
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), "cpu")
    engine.load()
    # Twenty minutes first: the allocators (VAD, features) reach their working size on two chunks.
    twenty = tmp_path / "twenty_minutes.wav"
    fixtures._run("sox", "-D", str(three_hours), str(twenty), "trim", "0", "1200")
    _, _, grown_20min = transcribe_measured(engine, twenty)
    started = time.perf_counter()
    text, duration, grown = transcribe_measured(engine, three_hours)
    engine.unload()
    assert abs(duration - HOURS * 3600) < 1
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, text) <= 0.15, text
    # Memory follows the chunk, not the file: nine times the audio, no more memory than twenty minutes took.
    assert grown < DECODED_BYTES / 2, f"memory grew {grown / 2**20:.0f} MiB for {HOURS} h of audio"
    assert grown < 1.5 * grown_20min + 64 * 2**20, f"{grown / 2**20:.0f} MiB for 3 h against {grown_20min / 2**20:.0f} for 20 min"
    print(f"{HOURS} h in {time.perf_counter() - started:.0f} s, peak growth {grown / 2**20:.0f} MiB (20 min: {grown_20min / 2**20:.0f})")
