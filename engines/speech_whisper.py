"""Transcribe audio files with a Whisper model through faster-whisper (CTranslate2), kept resident.

The file is probed with PyAV before anything heavy happens, so a bad upload gets a clear
``InputError`` instead of an FFmpeg traceback from deep inside the decoder.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

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

MODEL_FILE = "model.bin"


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


def probe_audio(audio_path: str | Path) -> None:
    """Raise InputError unless the file exists, is readable and holds at least one decodable audio frame.

    Decoding a single frame is cheap and catches files whose header parses but whose data does not.
    """
    import av  # imported here so the app starts without PyAV's FFmpeg libraries loaded

    path = Path(audio_path)
    name = path.name or str(path)
    if not path.exists():
        raise InputError(f"Audio file not found: {path}")
    if path.is_dir():
        raise InputError(f"{name} is a folder, not an audio file.")
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise InputError(f"{name} cannot be read ({e.strerror or e}).") from e
    if path.stat().st_size == 0:
        raise InputError(f"{name} is empty (0 bytes): there is no audio to transcribe.")
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams})
                holds = f" (it holds only {', '.join(kinds)})" if kinds else ""
                raise InputError(f"{name} has no audio track{holds}.")
            for _frame in container.decode(container.streams.audio[0]):
                break
            else:
                raise InputError(f"{name} has an audio track but it holds no sound that can be decoded.")
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InputError(
            f"{name} is not an audio file that can be read ({reason}). "
            "Try a WAV, MP3, FLAC, M4A or OGG file."
        ) from e


def to_segments(raw: Iterable) -> Iterator[Segment]:
    """Map faster-whisper segments to ours one at a time: ``raw`` decodes audio as it is consumed.

    Whisper puts a leading space on segment and word text; it is stripped so the UI need not.
    """
    try:
        for s in raw:
            words = tuple(
                Word(float(w.start), float(w.end), w.word.strip(), float(w.probability)) for w in s.words or ()
            )
            yield Segment(float(s.start), float(s.end), s.text.strip(), words)
    except RuntimeError as e:  # CTranslate2 reports device failures (CUDA out of memory...) as RuntimeError
        raise EngineError(f"Transcription failed: {e}") from e
    finally:
        close = getattr(raw, "close", None)
        if close is not None:  # a Stop closes us mid-file: let faster-whisper's generator go now
            close()


class WhisperSpeechEngine:
    kind = "speech"

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        *,
        display_name: str | None = None,
        cpu_threads: int = 0,
    ) -> None:
        self.local = is_local_model(model)
        self.model = Path(model).expanduser() if self.local else str(model)
        self.device = device
        self.compute_type = "float16" if device == "cuda" else "int8"
        self.display_name = display_name or (self.model.name if self.local else self.model)
        self.cpu_threads = cpu_threads
        self._model = None
        self._lock = threading.Lock()  # two first requests at once must not load the model twice

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
                self._model = self._open()
            return self._model

    def _open(self):
        if self.local:
            check_model_folder(self.model)
        from faster_whisper import WhisperModel  # imported here so the fake engines run without CTranslate2

        try:
            return WhisperModel(
                str(self.model),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
            )
        except (OSError, RuntimeError, ValueError) as e:  # hub download errors are OSErrors
            raise EngineError(f"Could not load Whisper model {self.display_name}: {e}") from e

    def unload(self) -> None:
        # A transcription still running keeps its own reference; the memory goes when it finishes.
        with self._lock:
            if self._model is not None:
                del self._model
                self._model = None
                gc.collect()

    def transcribe(self, audio_path: str, options: TranscribeOptions) -> tuple[TranscriptInfo, Iterator[Segment]]:
        options.check()
        probe_audio(audio_path)
        model = self._loaded()
        language = (options.language or "").strip().lower() or None
        if language is not None and language not in model.supported_languages:
            if model.supported_languages == ["en"]:
                raise InputError(f"{self.display_name} only transcribes English; choose English or auto-detect.")
            raise InputError(f"Unknown language code {options.language!r}; use a code such as 'en' or 'fr'.")

        import av

        try:
            # Decodes the whole file, runs the VAD and detects the language now; segments come later.
            raw, info = model.transcribe(
                str(audio_path),
                language=language,
                beam_size=options.beam_size,
                vad_filter=options.vad_filter,
                word_timestamps=options.word_timestamps,
            )
        except av.error.FFmpegError as e:
            raise InputError(f"{Path(audio_path).name} could not be decoded: {e}") from e
        except RuntimeError as e:
            raise EngineError(f"Transcription failed: {e}") from e
        return (
            TranscriptInfo(info.language, float(info.language_probability), float(info.duration)),
            to_segments(raw),
        )
