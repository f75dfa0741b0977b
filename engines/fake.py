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
    SAMPLERS,
    Cancelled,
    check_batch,
    ChatDelta,
    ChatMessage,
    ChatParams,
    ChatStats,
    EngineError,
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
    check_prompt,
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
        yield from self._echo(f"You said: {messages[-1].content.strip()}", params)

    def complete(self, prompt: str, params: ChatParams) -> Iterator[ChatDelta]:
        check_prompt(prompt)
        params.check()
        self.load()
        yield from self._echo(f"and then: {prompt.strip()}", params)

    def _echo(self, text: str, params: ChatParams) -> Iterator[ChatDelta]:
        """``text`` one word per delta, up to the first stop string or max_tokens words."""
        cut = min((i for i in (text.find(s) for s in params.stop) if i >= 0), default=len(text))
        words = text[:cut].split()
        finish = "stop" if len(words) <= params.max_tokens else "length"
        words = words[: params.max_tokens]
        started = time.perf_counter()
        for i, word in enumerate(words):
            if self.delay:
                time.sleep(self.delay)
            yield ChatDelta(word if i == 0 else " " + word)
        stats = ChatStats(prompt_tokens=len(text.split()), completion_tokens=len(words), seconds=time.perf_counter() - started, finish_reason=finish)
        yield ChatDelta("", stats)


class FakeImageEngine(_FakeBase):
    """A flat colour derived from prompt, seed and model: same request, same pixels."""

    kind = "image"
    model = "fake-colour"
    samplers = SAMPLERS

    def __init__(self, models: tuple[str, ...] = ("fake-colour", "fake-refiner"), delay: float = 0.0) -> None:
        super().__init__()
        self._models = models
        self.delay = delay  # seconds per step, for tests of Cancel and previews

    def models(self) -> list[str]:
        return list(self._models)

    def loras(self) -> list[str]:
        return ["fake-lora.safetensors"]

    def controlnets(self) -> list[str]:
        return ["fake-controlnet"]

    def upscalers(self) -> list[str]:
        return ["Lanczos"]

    def upscale_image(self, image, params: ImageParams, on_step=None, cancel=None):
        params.check_upscale()
        return image.resize((round(image.width * params.upscale), round(image.height * params.upscale))), ""

    def prepare(self, params: ImageParams, progress: ProgressCallback | None = None) -> None:
        for name in (params.model, params.refiner):
            if name and name not in self._models:
                raise InputError(f"Unknown image model {name!r}: pick one from the list.")
        self.load(progress)

    def generate(self, params: ImageParams, on_step: StepCallback | None = None, *, on_preview=None, cancel=None) -> ImageResult:
        return self.generate_batch([params], on_step, on_preview=on_preview, cancel=cancel)[0]

    def generate_batch(self, batch: list[ImageParams], on_step: StepCallback | None = None, *, on_preview=None, cancel=None) -> list[ImageResult]:
        from PIL import Image

        check_batch(1, len(batch))
        for params in batch:
            params.check()
        self.prepare(batch[0])
        batch = [
            replace(p, seed=int.from_bytes(hashlib.sha256(f"{time.time_ns()}-{i}".encode()).digest()[:4], "big"))
            if p.seed == -1
            else p
            for i, p in enumerate(batch)
        ]
        model = batch[0].model or self._models[0]
        total = batch[0].steps
        for step in range(total):
            if self.delay:
                time.sleep(self.delay)
            if on_step:
                on_step(step + 1, total)
            if on_preview:
                on_preview(lambda step=step: Image.new("RGB", (8, 8), (step * 10 % 256, 0, 0)))
            if cancel is not None and cancel.is_set() and step + 1 < total:
                raise Cancelled(f"Cancelled after step {step + 1} of {total}.")
        results = []
        for params in batch:
            extras = f"{params.loras}|{params.mask_image is not None}|{params.controlnet}|{params.hires_scale}"
            digest = hashlib.sha256(f"{params.prompt}|{params.seed}|{model}|{params.refiner}|{extras}".encode()).digest()
            width, height = params.output_size()
            image = Image.new("RGB", (round(width * params.upscale), round(height * params.upscale)), tuple(digest[:3]))
            results.append(ImageResult(
                image, replace(params, model=model), model, 0.0, model_hash=digest.hex()[:10],
                lora_hashes=tuple(digest.hex()[10:20] for _ in params.loras), controlnet_hash=digest.hex()[20:30] if params.controlnet else "",
            ))  # fmt: skip
        return results


class FakeSpeechEngine(_FakeBase):
    """Reads only a WAV header; 'transcribes' to one segment that names the file's duration.

    ``transcribe_samples`` hears one word per half second of non-silent audio, for live-caption tests.
    """

    kind = "speech"
    model = "fake-whisper"

    def switch(self, model: str | Path, display_name: str | None = None, progress: ProgressCallback | None = None) -> None:
        if "missing" in str(model):
            raise EngineError(f"{model} is not a CTranslate2 Whisper model: it has no model.bin")
        self.loaded = False
        self.model = display_name or Path(str(model)).name
        self.load(progress)

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
        parts = text.split()
        step = duration / len(parts)
        words = (
            tuple(Word(i * step, (i + 1) * step, w, 1.0) for i, w in enumerate(parts)) if options.word_timestamps else ()
        )

        def segments() -> Iterator[Segment]:
            yield Segment(0.0, duration, text, words)

        return TranscriptInfo(options.language or "en", 1.0, duration, self.model), segments()

    def transcribe_samples(self, samples, options: TranscribeOptions) -> list[Segment]:
        import numpy as np

        samples = np.asarray(samples, dtype=np.float32)
        half = 8000
        words = [
            Word(i * 0.5, (i + 1) * 0.5, f"word{i}", 1.0)
            for i in range(len(samples) // half)
            if np.abs(samples[i * half : (i + 1) * half]).max() > 0.01
        ]
        return [Segment(words[0].start, words[-1].end, " ".join(w.text for w in words), tuple(words))] if words else []


class FakeEmbedder:
    """Bag of words, hashed into 384 dimensions: texts that share words are close, others are not. Enough to
    drive the documents UI instantly; retrieval quality is tested on the real model."""

    name = "fake-embedder"
    identity = "fake-embedder (hashed bag of words)"
    dimensions = 384
    loaded = True

    def embed(self, texts: list[str]):
        import re

        import numpy as np

        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                if len(word) > 2:
                    out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimensions] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(text.split()) + 2 for text in texts)  # words, and the two markers a real tokenizer adds
