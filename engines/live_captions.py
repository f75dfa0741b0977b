"""Live captions from a microphone stream: a local-agreement policy over a rolling buffer.

Audio arrives in small chunks at any rate and channel count; it is resampled to 16 kHz mono, kept
whole in a WAV file (nothing said is lost: it is re-transcribed in one pass when the person stops),
and appended to a rolling buffer that is transcribed again each time enough new audio has come in.

* Words that two transcriptions in a row agree on (the longest common prefix, "LocalAgreement-2")
  are *confirmed* and never change; the rest is a *tentative* tail shown grey and revised.
* Silero VAD (shipped with faster-whisper) finds the pauses: at a pause everything heard is
  confirmed and the buffer starts afresh after it; a buffer with no speech is never transcribed,
  so silence gives no hallucinated "Thank you.".
* The buffer is cut only after a confirmed word (and new words must start after it), and words
  that repeat the confirmed tail are dropped: no word is lost or doubled at a cut.
* Decoding is adaptive: it waits for at least as much new audio as the last decode took, so a slow
  machine captions in bigger steps instead of falling behind.
"""

from __future__ import annotations

import re
import threading
import time
import wave
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engines.audio_stream import SAMPLE_RATE
from engines.base import InputError, SpeechEngine, TranscribeOptions, Word

MIN_STEP_SECONDS = 0.25  # never decode twice within this much new audio
PAUSE_SECONDS = 0.5  # silence after speech that ends a phrase
MAX_BUFFER_SECONDS = 12.0  # past this, cut after the last confirmed word even without a pause
PROMPT_CHARS = 200  # confirmed text handed to Whisper as context


@dataclass(frozen=True)
class Captions:
    confirmed: str  # final: never changes again
    tentative: str  # may still be revised
    seconds: float  # audio received so far


def _norm(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())


class LiveCaptioner:
    """One person's live session. ``feed`` is called from one thread at a time (the stream handler)."""

    def __init__(
        self,
        engine: SpeechEngine,
        recording: str | Path,
        options: TranscribeOptions | None = None,
        background: bool = False,
    ) -> None:
        """``background``: decode in a thread of its own so ``feed`` returns at once (the UI's stream
        handler must not hold up the next chunk); else ``feed`` decodes in line (deterministic tests)."""
        self.engine = engine
        self.options = replace(options or TranscribeOptions(), beam_size=1, word_timestamps=True, vad_filter=False,
                               batched=False)  # fmt: skip
        self.recording = Path(recording)
        self._wav = wave.open(str(self.recording), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)
        self._resampler = None
        self._input_format: tuple | None = None
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0.0  # seconds since the recording began
        self.received = 0.0
        self.confirmed: list[Word] = []
        self.previous: list[Word] = []  # the last hypothesis, for agreement
        self.tentative: list[Word] = []
        self.error = ""
        self._decoded_at = 0.0  # self.received at the last decode
        self._last_cost = 0.0  # seconds the last decode took
        self._lock = threading.Lock()  # the buffer and the recording
        self._decoding = threading.Lock()
        self._wake = threading.Event()
        self.closed = False
        self._worker = threading.Thread(target=self._work, daemon=True) if background else None
        if self._worker:
            self._worker.start()
        from faster_whisper.vad import get_vad_model

        get_vad_model()  # loaded now (once per process), not during the first words

    # ---------------------------------------------------------------- audio in

    def _to_16k(self, rate: int, data: np.ndarray) -> np.ndarray:
        import av

        data = np.asarray(data)
        if data.ndim == 1:
            data = data[:, None]
        if data.dtype.kind == "f":
            data = (np.clip(data, -1.0, 1.0) * 32767).astype(np.int16)
        elif data.dtype == np.int32:
            data = (data >> 16).astype(np.int16)
        data = data.astype(np.int16)
        channels = data.shape[1]
        if self._input_format != (rate, channels):  # a resampler keeps its state across chunks: no seams
            self._resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            self._input_format = (rate, channels)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.reshape(1, -1)), format="s16",
                                           layout="mono" if channels == 1 else "stereo")  # fmt: skip
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    def feed(self, rate: int, data: np.ndarray) -> Captions:
        """Take one chunk from the microphone; transcribe again if enough new audio has come in."""
        with self._lock:
            if self.closed:
                return self.captions()
            if rate <= 0 or data is None or len(data) == 0:
                return self.captions()
            if np.asarray(data).ndim == 2 and np.asarray(data).shape[1] > 2:
                data = np.asarray(data)[:, :2]
            samples = self._to_16k(int(rate), data)
            self._wav.writeframes(samples.tobytes())
            self.buffer = np.concatenate([self.buffer, samples.astype(np.float32) / 32768.0])
            self.received += len(samples) / SAMPLE_RATE
        if self._worker:
            self._wake.set()
        else:
            self._maybe_decode()
        return self.captions()

    def _maybe_decode(self) -> None:
        with self._decoding:
            received = self.received
            if received - self._decoded_at >= max(MIN_STEP_SECONDS, self._last_cost):
                started = time.perf_counter()
                self._decode()
                self._last_cost = time.perf_counter() - started
                self._decoded_at = received

    def _work(self) -> None:
        while not self.closed:
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._maybe_decode()
            except Exception as e:  # shown with the captions; the recording goes on
                self.error = str(e)

    # ---------------------------------------------------------------- the policy

    def _speech(self, buffer: np.ndarray) -> list[dict]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        vad = VadOptions(min_silence_duration_ms=int(PAUSE_SECONDS * 1000), speech_pad_ms=150)
        return get_speech_timestamps(buffer, vad)

    def _cut(self, seconds: float) -> None:
        """Drop the buffer's audio before ``seconds`` (absolute); audio appended meanwhile stays."""
        with self._lock:
            drop = int(max(0.0, seconds - self.buffer_start) * SAMPLE_RATE)
            self.buffer = self.buffer[drop:]
            self.buffer_start += drop / SAMPLE_RATE

    def _hypothesis(self, buffer: np.ndarray, start: float, end_seconds: float | None = None) -> list[Word]:
        audio = buffer if end_seconds is None else buffer[: int((end_seconds - start) * SAMPLE_RATE)]
        if len(audio) < SAMPLE_RATE // 4:
            return []
        # Context is what was confirmed *before* the buffer: words inside it are heard again and dropped
        # below by time; in the prompt too, Whisper would skip them and the words after them.
        prompt = " ".join(w.text for w in self.confirmed if w.end <= start + 0.05)[-PROMPT_CHARS:]
        options = replace(self.options, initial_prompt=prompt or self.options.initial_prompt)
        words = [
            replace(w, start=w.start + start, end=w.end + start)
            for s in self.engine.transcribe_samples(audio, options)
            for w in s.words
        ]
        last_end = self.confirmed[-1].end if self.confirmed else 0.0
        words = [w for w in words if w.start >= last_end - 0.1]  # words already confirmed before the cut
        # A word at the very start that repeats the confirmed tail is the same word heard twice.
        for n in range(min(5, len(words), len(self.confirmed)), 0, -1):
            if [_norm(w.text) for w in self.confirmed[-n:]] == [_norm(w.text) for w in words[:n]]:
                words = words[n:]
                break
        return words

    def _decode(self) -> None:
        with self._lock:  # a snapshot: chunks keep arriving while it is transcribed
            buffer, start = self.buffer, self.buffer_start
        speech = self._speech(buffer)
        buffer_end = start + len(buffer) / SAMPLE_RATE
        if not speech:  # silence: never transcribed; keep a little in case speech is starting
            self.previous = self.tentative = []
            self._cut(buffer_end - 0.5)
            return
        speech_end = start + speech[-1]["end"] / SAMPLE_RATE
        if buffer_end - speech_end >= PAUSE_SECONDS:  # a pause: all of it is final
            self.confirmed = self.confirmed + self._hypothesis(buffer, start, speech_end)
            self.previous = self.tentative = []
            self._cut(speech_end)
            return
        current = self._hypothesis(buffer, start)
        agreed = 0
        while (
            agreed < min(len(current), len(self.previous))
            and _norm(current[agreed].text) == _norm(self.previous[agreed].text)
        ):
            agreed += 1
        self.confirmed = self.confirmed + current[:agreed]
        self.tentative = current[agreed:]
        self.previous = self.tentative
        if agreed and buffer_end - start > MAX_BUFFER_SECONDS:
            self._cut(self.confirmed[-1].end)

    # ---------------------------------------------------------------- out

    def captions(self) -> Captions:
        return Captions(
            " ".join(w.text for w in self.confirmed), " ".join(w.text for w in self.tentative), self.received
        )

    def finish(self) -> Path:
        """Close the recording; returns its path (16 kHz mono WAV) for the full re-transcription."""
        with self._lock:
            was_open, self.closed = not self.closed, True
            if was_open:
                self._wav.close()
        if self._worker:
            self._wake.set()
            self._worker.join(timeout=30)
        if self.received <= 0:
            raise InputError("Nothing was recorded: check that the browser may use the microphone.")
        return self.recording
