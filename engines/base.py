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
    note: str = ""  # something the person should know about the model, shown beside it


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


MAX_STOP_STRINGS = 4  # OpenAI's own limit
MAX_STOP_CHARS = 200


@dataclass(frozen=True)
class ChatParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    seed: int = -1  # -1: a new random seed each time
    stop: tuple[str, ...] = ()  # generation ends before any of these strings (OpenAI's ``stop``)

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
        if not -1 <= self.seed < 2**32:
            raise InputError(f"Seed must be -1 (random) or an integer from 0 to 2^32 - 1, got {self.seed}.")
        if len(self.stop) > MAX_STOP_STRINGS or not all(0 < len(s) <= MAX_STOP_CHARS for s in self.stop):
            raise InputError(f"Give at most {MAX_STOP_STRINGS} stop strings of 1 to {MAX_STOP_CHARS} characters each.")


@dataclass
class ChatStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    finish_reason: str | None = None  # "stop", "length", or "cancelled" when the reader stopped early
    dropped_messages: int = 0  # oldest turns left out so the conversation fits the context

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
    n_ctx: int

    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        """Yield the reply piece by piece. Closing the generator stops generation."""

    def complete(self, prompt: str, params: ChatParams) -> Iterator[ChatDelta]:
        """Continue plain text (no chat template), piece by piece, like ``stream``; the last delta has the stats."""


def check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise InputError("The prompt is empty: give some text to continue.")


def check_messages(messages: list[ChatMessage]) -> None:
    if not messages or messages[-1].role != "user":
        raise InputError("The conversation must end with a user message.")
    if not messages[-1].content.strip():
        raise InputError("The message is empty: type something to send.")


# ---------------------------------------------------------------- image

# Sampler names as people know them from the SD web UIs; each engine maps them to its schedulers.
SAMPLERS = ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "LCM", "UniPC")
# How the seeds of a run's images are chosen (see ``seeds_for``).
SEED_MODES = ("fixed", "increment", "random")
MAX_BATCH_SIZE = 8
MAX_BATCH_COUNT = 100


# Inpainting, outpainting, hi-res fix, ControlNet, upscaling: the names their controls take.
MAX_LORAS = 4
OUTPAINT_DIRECTIONS = ("left", "right", "up", "down")
HIRES_UPSCALERS = ("Latent", "Lanczos")  # latents resized before the second pass, or pixels
PIXEL_UPSCALER = "Lanczos"  # the upscaler that needs no model; super-resolution models are named by their file
CONTROL_PREPROCESSORS = ("none", "canny")  # none: the control image is used as given (a depth map, a pose…)
MAX_SOURCE_SIDE = 4096  # a start image "only the masked area" keeps at its own size, or an outpainted canvas
# An input image (start, mask, control) is refused past this before it is decoded: a 300 KB PNG can claim 100
# megapixels (300 MB as RGB). 50 covers an 8K frame and a 45-megapixel camera.
MAX_INPUT_PIXELS = 50_000_000
MAX_UPSCALED_SIDE = 8192  # an upscaled image: no diffusion at that size, only resampling or a tiled SR pass
IMAGE_INPUTS = ("init_image", "mask_image", "control_image")  # the recipe's fields that name an input image


class Cancelled(Exception):
    """The person pressed Cancel; not an error. The message says where it stopped."""


@dataclass(frozen=True)
class LoraWeight:
    """One LoRA of a recipe: a .safetensors in the models folder (or a Hugging Face id) and its weight."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class ImageParams:
    """The recipe of one image: what a PNG carries and what restores it.

    Every field added after the first release has a default that means "off", so older recipes restore.
    """

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance: float = 7.0
    seed: int = -1  # -1: a new random seed; the result says which one was used
    sampler: str = "Euler"
    model: str = ""  # a name from the engine's ``models()`` or a Hugging Face repo id; "": the engine's default
    refiner: str = ""  # a second model that finishes the image; "": none
    refiner_start: float = 0.8  # fraction of the steps after which the refiner takes over
    init_image: str | None = None  # img2img: path of the starting image; None: text-to-image
    strength: float = 0.75  # img2img: how much of the starting image is replaced by noise (1: all)
    loras: tuple[LoraWeight, ...] = ()  # fused into the model while they stay the same
    # Inpainting: redraw where the mask is white (or opaque); it is the start image's size.
    mask_image: str | None = None
    mask_blur: int = 4  # pixels of soft edge, so the new part blends in
    inpaint_only_masked: bool = False  # redraw only the mask's surroundings at width×height, paste back
    inpaint_padding: int = 32  # pixels of context around the mask with ``inpaint_only_masked``
    # Outpainting: the start image (at width×height) gets a new strip on each side named, then filled.
    outpaint: tuple[str, ...] = ()
    outpaint_pixels: int = 128
    # Hi-res fix: draw at width×height, upscale by ``hires_scale``, then a second pass at ``hires_strength``.
    hires_scale: float = 1.0  # 1: off
    hires_upscaler: str = "Latent"
    hires_strength: float = 0.5
    hires_steps: int = 0  # steps of the second pass; 0: the same as ``steps``
    # ControlNet: a model that steers the layout from a control image (edges, depth, pose…).
    controlnet: str = ""  # "": none
    control_image: str | None = None
    control_preprocessor: str = "none"
    canny_low: int = 100
    canny_high: int = 200
    control_scale: float = 1.0
    control_start: float = 0.0  # fraction of the steps where the ControlNet starts and stops steering
    control_end: float = 1.0
    # Upscale the finished image: Lanczos resampling, or a super-resolution model from the models folder.
    upscale: float = 1.0  # 1: off
    upscaler: str = PIXEL_UPSCALER

    @property
    def inpainting(self) -> bool:
        return self.mask_image is not None or bool(self.outpaint)

    def output_size(self) -> tuple[int, int]:
        """The drawn size before the upscale: width×height, grown by outpainting or the hi-res fix (an
        "only masked" inpaint keeps the start image's own size, which only the engine knows)."""
        width, height = self.width, self.height
        if self.outpaint:
            width += self.outpaint_pixels * sum(d in self.outpaint for d in ("left", "right"))
            height += self.outpaint_pixels * sum(d in self.outpaint for d in ("up", "down"))
        if self.hires_scale > 1:
            width, height = hires_size(width, height, self.hires_scale)
        return width, height

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
        if self.sampler not in SAMPLERS:
            raise InputError(f"Unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        if self.init_image is not None:
            if not 0.0 < self.strength <= 1.0:
                raise InputError(f"Strength must be above 0 and at most 1, got {self.strength}.")
            if int(self.steps * self.strength) < 1:
                raise InputError(
                    f"{self.steps} steps at strength {self.strength} leave no step to run: raise the steps or the strength."
                )
        if self.refiner:
            if not 0.0 < self.refiner_start < 1.0:
                raise InputError(f"Refiner start must be between 0 and 1 (exclusive), got {self.refiner_start}.")
            if int(self.steps * (1 - self.refiner_start)) < 1 or int(self.steps * self.refiner_start) < 1:
                raise InputError(
                    f"{self.steps} steps with the refiner starting at {self.refiner_start} leave one of the two "
                    "models no step: raise the steps or move the refiner start."
                )
            if self.inpainting or self.controlnet or self.hires_scale > 1:
                raise InputError(
                    "The refiner works with text to image and image to image only: set Refiner to None for "
                    "inpainting, outpainting, ControlNet or the hi-res fix."
                )
        self._check_loras()
        self._check_inpaint(max_side)
        self._check_hires(max_side)
        self._check_control()
        self.check_upscale()

    def _check_loras(self) -> None:
        if len(self.loras) > MAX_LORAS:
            raise InputError(f"At most {MAX_LORAS} LoRAs at once, got {len(self.loras)}.")
        names = [lora.name for lora in self.loras]
        if any(not name.strip() for name in names) or len(set(names)) != len(names):
            raise InputError("Each LoRA must be named, and named once.")
        for lora in self.loras:
            if not -4.0 <= lora.weight <= 4.0:
                raise InputError(f"LoRA weights must be between -4 and 4; {lora.name} has {lora.weight}.")

    def _check_inpaint(self, max_side: int) -> None:
        if not self.inpainting:
            return
        what = "Outpainting" if self.outpaint else "Inpainting"
        if self.init_image is None:
            raise InputError(f"{what} needs a start image: drop one in Image to image.")
        if not 0 <= self.mask_blur <= 64:
            raise InputError(f"Mask blur must be between 0 and 64 pixels, got {self.mask_blur}.")
        if not 0 <= self.inpaint_padding <= 256:
            raise InputError(f"The padding around the mask must be between 0 and 256 pixels, got {self.inpaint_padding}.")
        unknown = [d for d in self.outpaint if d not in OUTPAINT_DIRECTIONS]
        if unknown or len(set(self.outpaint)) != len(self.outpaint):
            raise InputError(f"Outpaint directions are {', '.join(OUTPAINT_DIRECTIONS)}, each once; got {list(self.outpaint)}.")
        if self.outpaint:
            if self.outpaint_pixels % 8 or not 8 <= self.outpaint_pixels <= 1024:
                raise InputError(f"Outpainting adds a multiple of 8 between 8 and 1024 pixels, got {self.outpaint_pixels}.")
            width, height = self.output_size()
            limit = MAX_SOURCE_SIDE if self.inpaint_only_masked else max_side
            if max(width, height) > limit:
                raise InputError(
                    f"Outpainting {self.outpaint_pixels} px to the {' and '.join(self.outpaint)} makes the image "
                    f"{width}×{height}, past the {limit} px this model draws well: add fewer pixels or start smaller."
                )

    def _check_hires(self, max_side: int) -> None:
        if self.hires_scale == 1:
            return
        if not 1.0 < self.hires_scale <= 4.0:
            raise InputError(f"The hi-res fix scales by more than 1 and at most 4, got {self.hires_scale}.")
        if self.init_image is not None:
            raise InputError(
                "The hi-res fix is for text to image: with a start image, set the size you want and the strength instead."
            )
        if self.hires_upscaler not in HIRES_UPSCALERS:
            raise InputError(f"The hi-res upscaler is one of {', '.join(HIRES_UPSCALERS)}, got {self.hires_upscaler!r}.")
        if not 0.0 < self.hires_strength <= 1.0:
            raise InputError(f"The hi-res strength must be above 0 and at most 1, got {self.hires_strength}.")
        if not 0 <= self.hires_steps <= 150:
            raise InputError(f"Hi-res steps must be between 0 (same as Steps) and 150, got {self.hires_steps}.")
        if int((self.hires_steps or self.steps) * self.hires_strength) < 1:
            raise InputError("The hi-res pass has no step to run: raise its steps or its strength.")
        width, height = self.output_size()
        if max(width, height) > max_side:
            raise InputError(
                f"The hi-res fix at ×{self.hires_scale:g} makes {width}×{height}, past the {max_side} px this model "
                "draws well: lower the scale, or use Upscale (no model pass) for the rest."
            )

    def _check_control(self) -> None:
        if not self.controlnet:
            return
        if self.control_image is None:
            raise InputError("ControlNet needs a control image: drop one under ControlNet, or set ControlNet to None.")
        if self.control_preprocessor not in CONTROL_PREPROCESSORS:
            raise InputError(f"The preprocessor is one of {', '.join(CONTROL_PREPROCESSORS)}, got {self.control_preprocessor!r}.")
        if not 0 <= self.canny_low < self.canny_high <= 255:
            raise InputError(f"Canny thresholds need 0 ≤ low < high ≤ 255, got {self.canny_low} and {self.canny_high}.")
        if not 0.0 <= self.control_scale <= 2.0:
            raise InputError(f"The ControlNet scale must be between 0 and 2, got {self.control_scale}.")
        if not 0.0 <= self.control_start < self.control_end <= 1.0:
            raise InputError(
                f"ControlNet start and end need 0 ≤ start < end ≤ 1, got {self.control_start} and {self.control_end}."
            )

    def check_upscale(self) -> None:
        if self.upscale == 1:
            return
        if not 1.0 < self.upscale <= 4.0:
            raise InputError(f"Upscale by more than 1 and at most 4, got {self.upscale}.")
        if not self.upscaler.strip():
            raise InputError("Name the upscaler: Lanczos, or a super-resolution model from the models folder.")
        width, height = self.output_size()
        if max(width, height) * self.upscale > MAX_UPSCALED_SIDE:
            raise InputError(
                f"Upscaling {width}×{height} by {self.upscale:g} passes {MAX_UPSCALED_SIDE} px: choose a smaller factor."
            )


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The hi-res pass's size: scaled, rounded down to a multiple of 8 (what the VAE needs)."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def check_batch(batch_count: int, batch_size: int) -> None:
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InputError(f"Batch size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}.")
    if not 1 <= batch_count <= MAX_BATCH_COUNT:
        raise InputError(f"Batch count must be between 1 and {MAX_BATCH_COUNT}, got {batch_count}.")


def seeds_for(mode: str, seed: int, count: int, random_seed: Callable[[], int]) -> list[int]:
    """The seeds of a run's ``count`` images.

    "fixed" and "increment" both give seed, seed+1, ... so the whole run reproduces from one number
    (a seed of -1 draws the first one); they differ in the UI, where "increment" moves the seed box on
    past the last seed used. "random" draws a new seed for every image.
    """
    if mode not in SEED_MODES:
        raise InputError(f"Seed mode must be one of {', '.join(SEED_MODES)}, got {mode!r}.")
    if not -1 <= seed < 2**32:
        raise InputError(f"Seed must be -1 (random) or an integer below 2^32, got {seed}.")
    if mode == "random":
        return [random_seed() for _ in range(count)]
    first = random_seed() if seed == -1 else seed
    return [(first + i) % 2**32 for i in range(count)]


@dataclass(frozen=True)
class ImageResult:
    image: object  # PIL.Image.Image; typed loosely so the contract does not import PIL
    params: ImageParams  # with the seed and model actually used
    model: str  # display name of the model
    seconds: float
    model_hash: str = ""  # A1111's short hash (first 10 hex digits of the weights' sha256)
    refiner_hash: str = ""
    lora_hashes: tuple[str, ...] = ()  # one per ``params.loras``, same order
    controlnet_hash: str = ""
    upscaler_hash: str = ""  # a super-resolution model's; "" for Lanczos


StepCallback = Callable[[int, int], None]  # (step done, total steps)
# Handed ``draw``, which makes a small PIL image of this step's latents: called there and then (on the engine's
# thread, where the latents are) or not at all. A page shows a few previews a second; drawing one at every step cost
# the run 0.5 ms a step (torch work beside the engine's own, 256² on 2 cores).
PreviewCallback = Callable[[Callable[[], object]], None]


@runtime_checkable
class ImageEngine(Engine, Protocol):
    samplers: tuple[str, ...]

    def models(self) -> list[str]:
        """Names for the model picker, the default model first."""

    def prepare(self, params: ImageParams, progress: ProgressCallback | None = None) -> None:
        """Load (downloading if needed) the model and refiner that ``params`` name."""

    def generate(
        self,
        params: ImageParams,
        on_step: StepCallback | None = None,
        *,
        on_preview: PreviewCallback | None = None,
        cancel: object | None = None,
    ) -> ImageResult: ...

    def generate_batch(
        self,
        batch: list[ImageParams],
        on_step: StepCallback | None = None,
        *,
        on_preview: PreviewCallback | None = None,
        cancel: object | None = None,  # a threading.Event: set it to stop at the next step (raises Cancelled)
    ) -> list[ImageResult]:
        """Images that share every parameter but the seed, made in one pass."""

    def loras(self) -> list[str]:
        """LoRA names for the pickers (a Hugging Face id works too)."""

    def controlnets(self) -> list[str]: ...

    def upscalers(self) -> list[str]:
        """"Lanczos", then the super-resolution models."""

    def upscale_image(self, image: object, params: ImageParams, on_step: StepCallback | None = None, cancel: object | None = None) -> tuple[object, str]:
        """A finished image upscaled as ``params.upscale``/``params.upscaler`` say; returns it and the upscaler's hash."""


# ---------------------------------------------------------------- speech

TASKS = ("transcribe", "translate")  # translate: any language to English (multilingual models only)


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float
    speaker: str | None = None  # "Speaker 1"...; None until speakers are labelled


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None  # "Speaker 1"...; None until speakers are labelled


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: detect
    task: str = "transcribe"
    beam_size: int = 5
    vad_filter: bool = True
    word_timestamps: bool = False
    initial_prompt: str = ""  # text that sets the style and spelling ("Melange, CTranslate2, Dr. Okafor.")
    hotwords: str = ""  # words to favour, separated by spaces or commas
    batched: bool = False  # batched inference: faster on long files, segments come a window at a time
    batch_size: int = 8

    def check(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"Task must be one of {', '.join(TASKS)}, got {self.task!r}.")
        if not 1 <= self.beam_size <= 10:
            raise InputError(f"Beam size must be between 1 and 10, got {self.beam_size}.")
        if not 1 <= self.batch_size <= 64:
            raise InputError(f"Batch size must be between 1 and 64, got {self.batch_size}.")
        if len(self.initial_prompt) > 2000 or len(self.hotwords) > 2000:
            raise InputError("The initial prompt and hotwords must each be under 2,000 characters.")


@dataclass(frozen=True)
class TranscriptInfo:
    language: str
    language_probability: float
    duration: float  # seconds of audio (from the file's header until it is all decoded)
    model: str = ""  # display name of the model that made the transcript
    multilingual: bool = True  # False for English-only models (.en): no language choice, no translate


@dataclass
class Transcript:
    info: TranscriptInfo
    segments: list[Segment] = field(default_factory=list)
    options: TranscribeOptions | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments).strip()

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


@runtime_checkable
class SpeechEngine(Engine, Protocol):
    def transcribe(
        self, audio_path: str, options: TranscribeOptions
    ) -> tuple[TranscriptInfo, Iterator[Segment]]:
        """Check the file and start decoding; segments come lazily as they are decoded.

        Raises InputError at once for a file that holds no readable audio.
        """

    def transcribe_samples(self, samples, options: TranscribeOptions) -> list[Segment]:
        """Transcribe a short float32 16 kHz mono array at once (live captions); times from its start."""


# ---------------------------------------------------------------- documents

# What "Add files" takes: the parsers in ``docs_parse`` by suffix (".json": a Melange transcript export).
DOCUMENT_SUFFIXES = (".pdf", ".docx", ".md", ".markdown", ".txt", ".text", ".html", ".htm", ".json")
FileState = Literal["indexed", "failed", "skipped"]


@dataclass(frozen=True)
class Passage:
    """A piece of a document small enough to embed and quote, with where it came from (its citation anchor)."""

    text: str
    page: int | None = None  # 1-based page of a PDF
    start: float | None = None  # seconds into a transcript
    end: float | None = None
    section: str = ""  # the nearest heading above it, where the format has headings


@dataclass(frozen=True)
class ParsedDocument:
    kind: str  # "pdf", "docx", "markdown", "text", "html", "transcript"
    passages: list[Passage]
    pages: int = 0  # a PDF's pages (what indexing throughput is counted in); 0 for other formats
    note: str = ""  # something the person should know although it was indexed ("3 pages had no text")


@dataclass(frozen=True)
class Collection:
    id: str  # random and unguessable, like a conversation's
    name: str
    owner: str
    root: str  # the folder that is scanned: the uploads' own folder, or a folder the host named
    from_folder: bool  # True: the host's folder, read where it is; False: uploaded copies
    created: float


@dataclass(frozen=True)
class DocumentFile:
    path: str
    name: str  # relative to the collection's root
    size: int
    state: FileState
    message: str  # why it failed or was skipped, or a note ("3 pages had no text")
    kind: str = ""
    pages: int = 0
    passages: int = 0


@dataclass(frozen=True)
class IndexProgress:
    """One collection's indexing, as the page polls it."""

    running: bool = False
    stage: str = ""  # "queued", "scanning", "re-embedding" (then total and done count passages), "indexing", "" when idle
    total: int = 0  # files found in the last scan
    done: int = 0  # of them, handled (indexed, unchanged, failed or skipped)
    current: str = ""  # the file being read now
    indexed: int = 0  # (re)indexed in this run
    unchanged: int = 0
    removed: int = 0  # deleted from the folder, so dropped from the index
    failed: int = 0
    skipped: int = 0  # not a document type (a picture, an archive)
    pages: int = 0  # PDF pages read in this run
    passages: int = 0
    seconds: float = 0.0
    message: str = ""  # about the whole run: a folder over the file limit, a missing folder, an engine failure

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass(frozen=True)
class RetrievalParams:
    k: int = 5  # passages handed to the model at most
    candidates: int = 40  # taken from each of the two searches before fusing
    min_similarity: float = 0.3  # cosine similarity below which a passage is not about the question
    rrf_k: int = 60  # reciprocal rank fusion's constant (Cormack et al. 2009)

    def check(self) -> None:
        if not 1 <= self.k <= 50:
            raise InputError(f"k must be between 1 and 50, got {self.k}.")
        if not self.k <= self.candidates <= 1000:
            raise InputError(f"candidates must be between k and 1000, got {self.candidates}.")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise InputError(f"min_similarity must be between -1 and 1, got {self.min_similarity}.")


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with where it came from and why it ranked."""

    passage_id: int
    collection: str  # the collection's id
    file: str  # its name, relative to the collection's root
    text: str
    page: int | None = None
    start: float | None = None
    end: float | None = None
    section: str = ""
    score: float = 0.0  # the fused (reciprocal rank) score
    similarity: float = 0.0  # cosine similarity of its embedding to the question's
    lexical_rank: int | None = None  # 1-based rank in the BM25 search; None: not found there
    vector_rank: int | None = None
