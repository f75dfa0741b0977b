"""The ``/v1`` request and response bodies, as pydantic models (they are also the OpenAPI schema).

Requests follow OpenAI's API; fields Melange cannot honour are refused with a clear 400 rather than ignored
(``n`` above 1, tools, images in messages, logprobs), and fields that change nothing here are accepted and
ignored (``user``, ``presence_penalty``…), as OpenAI-compatible servers do. Unknown fields are ignored too:
clients such as Open WebUI send their own. Melange's own extras (``top_k``, ``repeat_penalty``; for images
``negative_prompt``, ``steps``, ``guidance``, ``sampler``, ``seed``) sit beside OpenAI's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.base import MAX_STOP_CHARS, MAX_STOP_STRINGS, SAMPLERS

MAX_TOKENS = 32768  # the engines' own bound (ChatParams.check)
MAX_IMAGES = 10  # OpenAI's own limit for n
MAX_SEED = 2**32 - 1
ModelName = Annotated[str, Field(min_length=1, max_length=512, description="A model id from /v1/models.")]
Stop = str | Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]], Field(max_length=MAX_STOP_STRINGS)] | None


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- models


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Literal["chat", "image", "speech", "embedding"] = Field(description="Melange: which panel's engine serves it (embedding: the documents' model).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


# ---------------------------------------------------------------- chat


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    """An image or audio part: refused with a clear message (no model here reads them)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["image_url", "input_audio", "file", "refusal"]


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart | OtherPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(Request):
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="The most new tokens (default 2048; guests: their cap).")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="The same seed and prompt give the same reply.")
    stop: Stop = Field(None, description=f"Up to {MAX_STOP_STRINGS} strings; generation ends before any of them.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted and ignored.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Accepted and ignored.")
    top_k: int | None = Field(None, ge=0, le=1000, description="Melange: sample from the k most likely tokens (0: all).")
    repeat_penalty: float | None = Field(None, ge=0.5, le=2, description="Melange: penalise repeated tokens (1: off).")


class ChatCompletionRequest(Sampling):
    model: ModelName
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="The same as max_tokens.")
    tools: list[dict] | None = Field(None, description="Not supported: a request with tools is refused.")
    logprobs: bool | None = Field(None, description="Not supported: true is refused.")


class CompletionRequest(Sampling):
    model: ModelName
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(description="The text to continue (one prompt).")
    max_tokens: int | None = Field(16, ge=1, le=MAX_TOKENS, description="The most new tokens (OpenAI's default: 16).")
    echo: bool = Field(False, description="Not supported: true is refused.")
    suffix: str | None = Field(None, description="Not supported.")
    logprobs: int | None = Field(None, description="Not supported.")
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


# ---------------------------------------------------------------- images


class ImageRequest(Request):
    prompt: str = Field(min_length=1, max_length=8000)
    model: str | None = Field(None, max_length=512, description="Default: the Image panel's running model.")
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    # The pattern is documented, not enforced by pydantic: a wrong size gets a message of our own (images.size_of).
    size: str | None = Field(None, max_length=32, description="WIDTHxHEIGHT in multiples of 8, e.g. 512x512 (default), or auto.", json_schema_extra={"pattern": r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$"})
    response_format: Literal["url", "b64_json"] = "url"
    quality: str | None = Field(None, max_length=32, description="Accepted and ignored.")
    style: str | None = Field(None, max_length=32, description="Accepted and ignored.")
    user: str | None = None
    negative_prompt: str = Field("", max_length=8000, description="Melange: what the image should not show.")
    steps: int | None = Field(None, ge=1, le=150, description="Melange: sampling steps (default 20).")
    guidance: float | None = Field(None, ge=0, le=30, description="Melange: guidance (CFG) scale (default 7).")
    sampler: Literal[SAMPLERS] | None = Field(None, description="Melange: the sampler (default Euler).")  # type: ignore[valid-type]
    seed: int | None = Field(None, ge=-1, le=MAX_SEED, description="Melange: the first image's seed; the others follow (seed+1…). -1 or none: random.")


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None
    seed: int = Field(description="Melange: this image's seed; the same request with it makes the same image.")


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


# ---------------------------------------------------------------- embeddings

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit
MAX_EMBEDDING_CHARS = 32_000  # per text: far past the 256 tokens the model reads (the rest is cut, as OpenAI cuts at its limit)


class EmbeddingRequest(Request):
    input: (
        Annotated[str, Field(min_length=1, max_length=MAX_EMBEDDING_CHARS)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_EMBEDDING_CHARS)]], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    ) = Field(description="A text or a list of texts (token ids are not accepted: send text).")
    model: str | None = Field(None, max_length=512, description="Default: the embedded all-MiniLM-L6-v2.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=4096, description="Only the model's own (384) is offered.")
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 with encoding_format=base64.")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---------------------------------------------------------------- audio

TranscriptFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


class TranscriptWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptSegment(BaseModel):
    id: int
    start: float
    end: float
    text: str


class Transcription(BaseModel):
    text: str


class VerboseTranscription(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[TranscriptSegment] | None = None
    words: list[TranscriptWord] | None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
