"""Deterministic stand-in engines: they keep the contract, load instantly and need no weights.

For fast tests of the UI handlers and for working on the UI (`--engines fake`). They are never the
proof that a panel works: the real-model tests are.
"""

from __future__ import annotations

import hashlib
import time
import wave
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from engines.base import (
    ChatDelta,
    ChatMessage,
    ChatParams,
    ChatStats,
    EngineStatus,
    ImageParams,
    ImageResult,
    InputError,
    ProgressCallback,
    Segment,
    StepCallback,
    TranscribeOptions,
    TranscriptInfo,
    Word,
    check_messages,
)


class _FakeBase:
    backend = "fake"
    model = "fake"

    def __init__(self) -> None:
        self.loaded = False
        self.load_calls = 0

    def status(self) -> EngineStatus:
        return EngineStatus(self.kind, self.backend, self.model, self.loaded, "cpu")

    def load(self, progress: ProgressCallback | None = None) -> None:
        if not self.loaded:
            self.load_calls += 1
            if progress:
                progress(None, f"Loading {self.model}…")
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False


class FakeChatEngine(_FakeBase):
    """Echoes the last user message back, one word per delta."""

    kind = "chat"
    model = "fake-echo"

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.n_ctx = 4096

    def switch(self, model_path: str | Path, display_name: str | None = None, n_ctx: int | None = None) -> None:
        self.loaded = False
        self.model = display_name or Path(model_path).name
        self.n_ctx = n_ctx or self.n_ctx

    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        check_messages(messages)
        params.check()
        self.load()
        words = f"You said: {messages[-1].content.strip()}".split(" ")[: params.max_tokens]
        started = time.perf_counter()
        for i, word in enumerate(words):
            if self.delay:
                time.sleep(self.delay)
            yield ChatDelta(word if i == 0 else " " + word)
        yield ChatDelta("", ChatStats(completion_tokens=len(words), seconds=time.perf_counter() - started, finish_reason="stop"))


class FakeImageEngine(_FakeBase):
    """A flat colour derived from prompt and seed: same request, same pixels."""

    kind = "image"
    model = "fake-colour"
    samplers = ("Euler", "Euler a", "DPM++ 2M")

    def generate(self, params: ImageParams, on_step: StepCallback | None = None) -> ImageResult:
        from PIL import Image

        params.check()
        if params.sampler not in self.samplers:
            raise InputError(f"Unknown sampler {params.sampler!r}; choose one of {', '.join(self.samplers)}.")
        self.load()
        if params.seed == -1:
            params = replace(params, seed=int.from_bytes(hashlib.sha256(str(time.time_ns()).encode()).digest()[:4], "big"))
        for step in range(params.steps):
            if on_step:
                on_step(step + 1, params.steps)
        digest = hashlib.sha256(f"{params.prompt}|{params.seed}".encode()).digest()
        image = Image.new("RGB", (params.width, params.height), tuple(digest[:3]))
        return ImageResult(image=image, params=params, model=self.model, seconds=0.0)


class FakeSpeechEngine(_FakeBase):
    """Reads only a WAV header; 'transcribes' to one segment that names the file's duration."""

    kind = "speech"
    model = "fake-whisper"

    def transcribe(self, audio_path: str, options: TranscribeOptions) -> tuple[TranscriptInfo, Iterator[Segment]]:
        options.check()
        path = Path(audio_path)
        try:
            with wave.open(str(path)) as w:
                duration = w.getnframes() / w.getframerate()
        except (OSError, EOFError, wave.Error) as e:
            raise InputError(f"{path.name} is not a readable WAV file (the fake engine reads WAV only).") from e
        self.load()
        text = f"fake transcript of {duration:.1f} seconds"
        words = tuple(Word(0.0, duration, w, 1.0) for w in text.split()) if options.word_timestamps else ()

        def segments() -> Iterator[Segment]:
            yield Segment(0.0, duration, text, words)

        return TranscriptInfo(options.language or "en", 1.0, duration), segments()
