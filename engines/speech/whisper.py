"""Transcribe audio with a Whisper model through faster-whisper (CTranslate2), kept resident.

Files are probed first (``engines.speech.audio_stream``) so a bad upload gets a clear ``InputError``, then
decoded ten minutes at a time: a three-hour recording never sits in memory whole, and the first
segments appear while the rest is still being read.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import numpy as np

from engines.base import (
    EngineError,
    EngineStatus,
    InputError,
    ProgressCallback,
    Segment,
    TranscribeOptions,
    TranscriptInfo,
    Word,
)
from engines.priority import run_on_fresh_thread
from engines.speech.audio_stream import SAMPLE_RATE, iter_chunks, probe_audio  # noqa: F401  (probe_audio: re-exported)

MODEL_FILE = "model.bin"
# A live-caption window is encoded at its own length instead of padded to Whisper's 30 s: the encoder's
# cost is fixed by its input length, and on a CPU it is most of a short decode (tiny.en, 6 s of speech:
# 1.0 s of CPU padded to 30 s, 0.23 s padded to 10 s; the same words). Whisper needs some silence after
# the speech to know it has ended: with less than 8 s in all, 1-2 s clips came back looping ("We went.
# We went. ..."; 36 clips: 12 loops with 1 s of padding, 2 at 7 s, none at 8 s or 10 s).
MIN_WINDOW_SECONDS = 10.0
WINDOW_MARGIN_SECONDS = 2.0
TOKENS_PER_SECOND = 8  # fast speech is 4-6 Whisper tokens a second; a decoder stuck repeating stops here
_window = threading.local()  # mel frames of real audio in the window this thread is decoding, else 0

# A careful decode whose text Whisper itself doubts (faster-whisper's thresholds: average log-probability
# under -1, or compression ratio over 2.4) is decoded once more without the prompt, and the likelier text kept.
# The text before a hard phrase can steer the beam into a stock phrase: "Thank you. Thank you. Thank you."
# over "My brother bought a blue bicycle with a small basket." (espeak-ng en-029, log-probability -1.09);
# without the prompt it hears "My long and long and long, I'll see you in a small mask." (-1.02). A retry
# sampled at temperature 0.2 (Whisper's own fallback) was tried first: it kept the stock phrase 4 times in 10.
DOUBTED_LOG_PROB = -1.0
DOUBTED_COMPRESSION = 2.4


def _doubted(raw: list) -> bool:
    return any(s.avg_logprob < DOUBTED_LOG_PROB or s.compression_ratio > DOUBTED_COMPRESSION for s in raw)


def _likelihood(raw: list) -> float:
    return sum(s.avg_logprob for s in raw) / len(raw) if raw else -math.inf


@cache
def _windowed_model_class():
    """faster-whisper's WhisperModel, encoding only a live window's own frames (see WINDOW_STEP_SECONDS).

    faster-whisper pads every clip to 30 s before ``encode``; the padding is cut off again here, for the
    thread that asked for it only, so a file transcribed at the same time keeps the standard 30 s windows.
    """
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):
        def encode(self, features: np.ndarray):
            frames = getattr(_window, "frames", 0)
            if frames and features.shape[-1] > frames:
                features = np.ascontiguousarray(features[..., :frames])
            return super().encode(features)

    return WindowedWhisperModel


def is_local_model(model: str | Path) -> bool:
    """A Path, or a string that looks like or names a path, is a folder; anything else is a size or hub id."""
    if isinstance(model, Path):
        return True
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()


def check_model_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise EngineError(f"Whisper model folder not found: {folder}")
    if not (folder / MODEL_FILE).is_file():
        raise EngineError(
            f"{folder} is not a CTranslate2 Whisper model: it has no {MODEL_FILE} "
            "(convert the model with ct2-transformers-converter, or pick another folder)."
        )


def to_segments(raw: Iterable, offset: float = 0.0) -> Iterator[Segment]:
    """Map faster-whisper segments to ours one at a time: ``raw`` decodes audio as it is consumed.

    ``offset`` moves times from a chunk's start to the file's. Whisper puts a leading space on segment
    and word text; it is stripped so the UI need not.
    """
    try:
        for s in raw:
            words = tuple(
                Word(float(w.start) + offset, float(w.end) + offset, w.word.strip(), float(w.probability))
                for w in s.words or ()
                if w.word.strip()
            )
            text = s.text.strip()
            if text:
                yield Segment(float(s.start) + offset, float(s.end) + offset, text, words)
    except RuntimeError as e:  # CTranslate2 reports device failures (CUDA out of memory...) as RuntimeError
        raise EngineError(f"Transcription failed: {e}") from e
    finally:
        close = getattr(raw, "close", None)
        if close is not None:  # a Stop closes us mid-file: let faster-whisper's generator go now
            close()


class WhisperSpeechEngine:
    kind = "speech"
    chunk_seconds = 600.0  # decoded audio held at once: 10 minutes is 38 MB of float32

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        *,
        display_name: str | None = None,
        cpu_threads: int = 0,
        background: bool = True,
    ) -> None:
        """``background``: its CPU threads run at batch priority (file jobs); a live decoder's copy does not
        (engines.priority: CTranslate2's worker threads take the priority of the thread that loads the model)."""
        self.device = device
        self.background = background
        self.compute_type = "float16" if device == "cuda" else "int8"
        self.cpu_threads = cpu_threads
        self._model = None
        self.loads = 0  # models opened so far: the memory manager books a load when this moves
        self._lock = threading.Lock()  # two first requests at once must not load the model twice
        self._use(model, display_name)

    def _use(self, model: str | Path, display_name: str | None) -> None:
        self.local = is_local_model(model)
        self.model = Path(model).expanduser() if self.local else str(model)
        self.display_name = display_name or (self.model.name if self.local else self.model)

    def switch(self, model: str | Path, display_name: str | None = None, progress: ProgressCallback | None = None) -> None:
        """Use another model: the old one is freed, the new one loaded now (downloaded first for a hub id).

        If the new one cannot load, the engine goes back to the old one (loaded again on next use).
        """
        if is_local_model(model):
            check_model_folder(Path(model).expanduser())
        old = (self.model, self.display_name)
        with self._lock:
            self._model = None
            self._use(model, display_name)
        gc.collect()
        try:
            self._loaded(progress)
        except Exception:
            with self._lock:
                self._model = None
                self._use(*old)
            raise

    def status(self) -> EngineStatus:
        return EngineStatus("speech", "faster-whisper", self.display_name, self._model is not None, self.device)

    def load(self, progress: ProgressCallback | None = None) -> None:
        self._loaded(progress)

    def _loaded(self, progress: ProgressCallback | None = None):
        """The resident WhisperModel, loaded if needed; returned so a concurrent unload cannot pull it away."""
        with self._lock:
            if self._model is None:
                if progress:
                    progress(None, f"Loading {self.display_name}…")
                self._model = self._open(progress)
            return self._model

    def _open(self, progress: ProgressCallback | None = None):
        self.loads += 1
        if self.local:
            check_model_folder(self.model)
            path = self.model
        else:
            from engines.speech.models import download

            path = download(self.model, progress)
            if progress:
                progress(None, f"Loading {self.display_name}…")
        WhisperModel = _windowed_model_class()  # faster-whisper is imported there, so the fakes run without it

        try:
            return run_on_fresh_thread(
                lambda: WhisperModel(str(path), device=self.device, compute_type=self.compute_type, cpu_threads=self.cpu_threads),
                background=self.background and self.device == "cpu",
                name="melange-whisper-load",
            )
        except (OSError, RuntimeError, ValueError) as e:
            raise EngineError(f"Could not load Whisper model {self.display_name}: {e}") from e

    def live_copy(self) -> WhisperSpeechEngine:
        """The same model as a second engine for live captions: its own CTranslate2 worker, so a live
        decode never waits behind a file job, at normal priority where file jobs run at batch priority."""
        return WhisperSpeechEngine(
            self.model, self.device, display_name=self.display_name, cpu_threads=self.cpu_threads, background=False
        )

    def unload(self) -> None:
        # A transcription still running keeps its own reference; the memory goes when it finishes.
        with self._lock:
            if self._model is not None:
                del self._model
                self._model = None
                gc.collect()

    # ---------------------------------------------------------------- transcription

    def _check(self, model, options: TranscribeOptions) -> str | None:
        options.check()
        language = (options.language or "").strip().lower() or None
        if not model.model.is_multilingual:
            if language not in (None, "en"):
                raise InputError(f"{self.display_name} only transcribes English; choose English or auto-detect.")
            if options.task == "translate":
                raise InputError(f"{self.display_name} is English-only: translation needs a multilingual model.")
            return "en"
        if language is not None and language not in model.supported_languages:
            raise InputError(f"Unknown language code {options.language!r}; use a code such as 'en' or 'fr'.")
        return language

    def _run(self, model, samples: np.ndarray, language: str | None, options: TranscribeOptions, **extra):
        """faster-whisper on one chunk: runs the VAD and detects the language now; segments come lazily."""
        common = dict(
            language=language,
            task=options.task,
            beam_size=options.beam_size,
            vad_filter=options.vad_filter,
            word_timestamps=options.word_timestamps,
            initial_prompt=options.initial_prompt.strip() or None,
            hotwords=options.hotwords.strip() or None,
            **extra,
        )
        try:
            if options.batched:
                from faster_whisper import BatchedInferencePipeline

                if not options.vad_filter:  # without the VAD, the batches are plain 30-second windows
                    seconds = len(samples) / SAMPLE_RATE
                    common["clip_timestamps"] = [
                        {"start": t, "end": min(t + 30.0, seconds)} for t in np.arange(0.0, seconds, 30.0)
                    ]
                return BatchedInferencePipeline(model).transcribe(samples, batch_size=options.batch_size, **common)
            return model.transcribe(samples, **common)
        except RuntimeError as e:
            raise EngineError(f"Transcription failed: {e}") from e

    def transcribe(self, audio_path: str, options: TranscribeOptions) -> tuple[TranscriptInfo, Iterator[Segment]]:
        options.check()
        header_duration = probe_audio(audio_path)
        model = self._loaded()
        language = self._check(model, options)
        chunks = iter_chunks(audio_path, self.chunk_seconds)
        offset, samples = next(chunks, (0.0, np.zeros(0, np.float32)))
        if len(samples) == 0:
            raise InputError(f"{Path(audio_path).name} holds no sound that can be decoded.")
        raw, info = self._run(model, samples, language, options)
        language = language or info.language  # later chunks keep the language found in the first
        # A file in one chunk is measured exactly; a longer one goes by its header until all is decoded.
        long_file = header_duration is not None and header_duration > self.chunk_seconds
        duration = header_duration if long_file else float(info.duration)
        del samples

        def segments() -> Iterator[Segment]:
            try:
                yield from to_segments(raw, offset)
                for chunk_offset, chunk in chunks:
                    chunk_raw, _ = self._run(model, chunk, language, options)
                    yield from to_segments(chunk_raw, chunk_offset)
            finally:
                chunks.close()

        info = TranscriptInfo(
            info.language, float(info.language_probability), duration, self.display_name, model.model.is_multilingual
        )
        return info, segments()

    def transcribe_samples(self, samples, options: TranscribeOptions) -> list[Segment]:
        """One short array at once, for live captions: no context carried between calls."""
        model = self._loaded()
        language = self._check(model, options)
        raw, _ = self._run(
            model, np.asarray(samples, dtype=np.float32), language, options, condition_on_previous_text=False
        )
        return list(to_segments(raw))

    def transcribe_window(
        self,
        samples,
        options: TranscribeOptions,
        prefix: str = "",
        fast: bool = True,
    ) -> list[Segment]:
        """A live-caption window (at most a few seconds), encoded at its own length rather than 30 s.

        ``prefix``: words already shown as final; the decoder is made to start with them and continues
        after, so only the unconfirmed tail is decoded (they come back at the start of the text).
        ``fast``: greedy and no word timestamps, for the tentative tail; else the beam size and word
        timestamps of ``options``, to confirm words.
        """
        samples = np.asarray(samples, dtype=np.float32)
        model = self._loaded()
        language = self._check(model, options)
        seconds = len(samples) / SAMPLE_RATE
        # Mel frames: 100 a second, an even count (the encoder halves it), never more than Whisper's 30 s.
        frames = min(3000, 100 * math.ceil(max(MIN_WINDOW_SECONDS, seconds + WINDOW_MARGIN_SECONDS)))
        _window.frames = frames

        def decode(prompt: str | None) -> list:
            raw, _ = model.transcribe(
                samples,
                language=language,
                task=options.task,
                beam_size=1 if fast else options.beam_size,
                # No temperature fallback: a window that loops was decoded again up to twice at full length
                # (one 6 s window took 22 s on a busy machine); loops are cut by the caller.
                temperature=0.0,
                word_timestamps=not fast and options.word_timestamps,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
                initial_prompt=prompt,
                prefix=prefix.strip() or None,
                hotwords=None if prefix.strip() else (options.hotwords.strip() or None),
                max_new_tokens=16 + int(TOKENS_PER_SECOND * seconds),
            )
            return list(raw)  # faster-whisper's own segments: their log-probabilities choose below

        try:
            prompt = options.initial_prompt.strip() or None
            raw = decode(prompt)
            if not fast and prompt and _doubted(raw):  # fast decodes run many times a second: never retried
                retry = decode(None)
                if _likelihood(retry) > _likelihood(raw):
                    raw = retry
            return list(to_segments(raw))
        except RuntimeError as e:
            raise EngineError(f"Transcription failed: {e}") from e
        finally:
            _window.frames = 0
