"""Transcription on a remote server with OpenAI's ``/v1/audio/transcriptions`` (another Melange, or any
Whisper server that speaks it: faster-whisper-server, vLLM, OpenAI's own).

The file is sent whole and the answer asked as ``verbose_json`` with segments (and words when word
timestamps are on), so the panel's transcript, timestamps, exports and speaker labels work as with a local
model. What OpenAI's API has no field for (beam size, the VAD filter, hotwords, batched inference) is the
server's own business. The transcript arrives at once when the server is done; Stop stops waiting for it.
"""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engines.speech.audio_stream import SAMPLE_RATE
from engines.base import EngineStatus, InputError, ProgressCallback, Segment, TranscribeOptions, TranscriptInfo, Word
from engines.remote_http import REMOTE_DEVICE, RemoteServer


def segments_from(answer: dict) -> list[Segment]:
    """OpenAI's verbose answer as segments, each with the words that fall in it (OpenAI lists words apart)."""
    words = [
        Word(float(w["start"]), float(w["end"]), str(w.get("word", "")).strip(), float(w.get("probability", 1.0)))
        for w in answer.get("words") or ()
        if str(w.get("word", "")).strip()
    ]
    raw = answer.get("segments") or []
    if not raw and answer.get("text", "").strip():  # a server that sends no segments: one for the whole text
        end = float(answer.get("duration") or (words[-1].end if words else 0.0))
        raw = [{"start": 0.0, "end": end, "text": answer["text"]}]
    segments = []
    for i, s in enumerate(raw):
        start, end = float(s["start"]), float(s["end"])
        last = i == len(raw) - 1
        mine = tuple(w for w in words if start <= w.start < end or (last and w.start >= start))
        text = str(s.get("text", "")).strip()
        if text:
            segments.append(Segment(start, end, text, mine))
    return segments


def wav_bytes(samples: np.ndarray) -> bytes:
    """A float32 16 kHz mono array as a 16-bit wav file in memory."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


class OpenAISpeechEngine:
    kind = "speech"

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None, *, ca_file: str | None = None, timeout: float = 3600.0) -> None:
        self.server = RemoteServer(base_url, api_key, "speech server", timeout, ca_file)
        self.model = model  # None: the first the server lists
        self._ready = False
        self._lock = threading.Lock()

    def status(self) -> EngineStatus:
        name = self.model or f"the first model of {self.server.base_url}"
        return EngineStatus("speech", "openai", name, self._ready, REMOTE_DEVICE, note=f"Served by {self.server.base_url}.")

    def models(self) -> list[str]:
        return self.server.model_ids("speech")

    def load(self, progress: ProgressCallback | None = None) -> None:
        with self._lock:
            if self._ready:
                return
            if progress:
                progress(None, f"Asking {self.server.base_url} for its models…")
            self.model = self.server.choose_model(self.model, "speech", unlisted_ok=True)
            self._ready = True

    def unload(self) -> None:
        self._ready = False

    def switch(self, model: str | Path, display_name: str | None = None, progress: ProgressCallback | None = None) -> None:
        old = self.model
        with self._lock:
            self.model, self._ready = str(model), False
        try:
            self.load(progress)
        except Exception:
            with self._lock:
                self.model, self._ready = old, False
            raise

    def _ask(self, name: str, content, options: TranscribeOptions) -> dict:
        self.load()
        path = "/audio/translations" if options.task == "translate" else "/audio/transcriptions"
        fields: dict[str, str | list[str]] = {
            "model": self.model or "",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["segment", "word"] if options.word_timestamps else ["segment"],
        }
        if options.language and options.task != "translate":
            fields["language"] = options.language
        if options.initial_prompt.strip():
            fields["prompt"] = options.initial_prompt.strip()
        return self.server.post(path, data=fields, files={"file": (name, content)})

    def transcribe(self, audio_path: str, options: TranscribeOptions) -> tuple[TranscriptInfo, Iterator[Segment]]:
        options.check()
        path = Path(audio_path)
        if not path.is_file():
            raise InputError(f"{path.name} was not found.")
        with path.open("rb") as f:
            answer = self._ask(path.name, f, options)
        language = str(answer.get("language") or options.language or "")
        info = TranscriptInfo(language, 1.0, float(answer.get("duration") or 0.0), self.model or "", multilingual=True)
        return info, iter(segments_from(answer))

    def transcribe_samples(self, samples, options: TranscribeOptions) -> list[Segment]:
        """Live captions: each window is sent as a short wav."""
        return segments_from(self._ask("live.wav", wav_bytes(samples), options))
