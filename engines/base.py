"""The small contract every engine keeps: typed params and results, two errors, a status.

Engines never import gradio. The UI turns ``InputError`` and ``EngineError`` into ``gr.Error``;
a future HTTP API turns them into 4xx and 5xx answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

EngineKind = Literal["chat", "image", "speech"]

# Called while a model loads or a job runs: (fraction done 0..1 or None when unknown, description).
ProgressCallback = Callable[[float | None, str], None]


class InputError(ValueError):
    """The request is wrong; the message is meant for the person who made it."""


class EngineError(RuntimeError):
    """The request was fine but the engine could not serve it (load failure, out of memory...)."""


@dataclass(frozen=True)
class EngineStatus:
    kind: EngineKind
    backend: str  # "llama-cpp", "diffusers", "faster-whisper", "fake"
    model: str  # display name of the active model
    loaded: bool
    device: str  # where the model runs or will run: "cpu", "cuda"
    demo: bool = False  # True for the project's own untrained demo weights


@runtime_checkable
class Engine(Protocol):
    kind: EngineKind

    def status(self) -> EngineStatus: ...

    def load(self, progress: ProgressCallback | None = None) -> None:
        """Load the active model if it is not resident yet; cheap when it is."""

    def unload(self) -> None: ...


# ---------------------------------------------------------------- chat


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    seed: int = -1  # -1: a new random seed each time

    def check(self) -> None:
        if not 0.0 <= self.temperature <= 5.0:
            raise InputError(f"Temperature must be between 0 and 5, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"Top-p must be in (0, 1], got {self.top_p}.")
        if not 0 <= self.top_k <= 1000:
            raise InputError(f"Top-k must be between 0 and 1000, got {self.top_k}.")
        if not 0.5 <= self.repeat_penalty <= 2.0:
            raise InputError(f"Repeat penalty must be between 0.5 and 2, got {self.repeat_penalty}.")
        if not 1 <= self.max_tokens <= 32768:
            raise InputError(f"Max new tokens must be between 1 and 32768, got {self.max_tokens}.")
        if self.seed < -1:
            raise InputError(f"Seed must be -1 (random) or a non-negative integer, got {self.seed}.")


@dataclass
class ChatStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    finish_reason: str | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ChatDelta:
    """One streamed piece of a reply; the last one carries the stats."""

    text: str
    stats: ChatStats | None = None


@runtime_checkable
class ChatEngine(Engine, Protocol):
    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        """Yield the reply piece by piece. Closing the generator stops generation."""


def check_messages(messages: list[ChatMessage]) -> None:
    if not messages or messages[-1].role != "user":
        raise InputError("The conversation must end with a user message.")
    if not messages[-1].content.strip():
        raise InputError("The message is empty: type something to send.")


# ---------------------------------------------------------------- image


@dataclass(frozen=True)
class ImageParams:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance: float = 7.0
    seed: int = -1  # -1: a new random seed; the result says which one was used
    sampler: str = "Euler"

    def check(self, max_side: int = 2048) -> None:
        if not self.prompt.strip():
            raise InputError("The prompt is empty: describe the image you want.")
        for name, value in (("Width", self.width), ("Height", self.height)):
            if value % 8 or not 64 <= value <= max_side:
                raise InputError(f"{name} must be a multiple of 8 between 64 and {max_side}, got {value}.")
        if not 1 <= self.steps <= 150:
            raise InputError(f"Steps must be between 1 and 150, got {self.steps}.")
        if not 0.0 <= self.guidance <= 30.0:
            raise InputError(f"Guidance (CFG) must be between 0 and 30, got {self.guidance}.")
        if not -1 <= self.seed < 2**32:
            raise InputError(f"Seed must be -1 (random) or an integer below 2^32, got {self.seed}.")


@dataclass(frozen=True)
class ImageResult:
    image: object  # PIL.Image.Image; typed loosely so the contract does not import PIL
    params: ImageParams  # with the seed actually used
    model: str
    seconds: float


StepCallback = Callable[[int, int], None]  # (step done, total steps)


@runtime_checkable
class ImageEngine(Engine, Protocol):
    samplers: tuple[str, ...]

    def generate(self, params: ImageParams, on_step: StepCallback | None = None) -> ImageResult: ...


# ---------------------------------------------------------------- speech


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: detect
    beam_size: int = 5
    vad_filter: bool = True
    word_timestamps: bool = False

    def check(self) -> None:
        if not 1 <= self.beam_size <= 10:
            raise InputError(f"Beam size must be between 1 and 10, got {self.beam_size}.")


@dataclass(frozen=True)
class TranscriptInfo:
    language: str
    language_probability: float
    duration: float  # seconds of audio


@dataclass
class Transcript:
    info: TranscriptInfo
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments).strip()


@runtime_checkable
class SpeechEngine(Engine, Protocol):
    def transcribe(
        self, audio_path: str, options: TranscribeOptions
    ) -> tuple[TranscriptInfo, Iterator[Segment]]:
        """Check the file and start decoding; segments come lazily as they are decoded.

        Raises InputError at once for a file that holds no readable audio.
        """
