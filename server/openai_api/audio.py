"""``/v1/audio/transcriptions`` and ``/v1/audio/translations``: the speech engine on an uploaded file.

The upload is copied to a private temporary file, transcribed, and deleted; nothing is kept (the page's
Transcribe keeps its exports, an API caller has its answer). Formats as OpenAI's: ``json``, ``text``,
``srt``, ``vtt`` and ``verbose_json`` with ``segments`` and, asked with ``timestamp_granularities[]=word``,
``words``. A caller who hangs up stops the transcription at its next segment.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.responses import JSONResponse, PlainTextResponse, Response

from engines.speech import subtitles
from engines.base import Segment, TranscribeOptions, Transcript, TranscriptInfo
from server.openai_api.common import V1, after, authenticate
from server.openai_api.errors import OpenAIError
from server.openai_api.pump import Pump
from server.openai_api.schemas import TranscriptFormat, Transcription, VerboseTranscription
from server.openai_api.turns import ClientGone, wait_for_disconnect
from server.principal import Principal

Granularity = Literal["word", "segment"]
# JSON for json and verbose_json (the response model), plain text for text, srt and vtt.
FORMATS_DOC = {200: {"description": "The transcript", "content": {"text/plain": {"schema": {"type": "string"}}}}}
ANSWER = Transcription | VerboseTranscription


def save_upload(upload: UploadFile) -> Path:
    """The upload as a file of our own (the engine reads by path), named only by a random folder."""
    folder = Path(tempfile.mkdtemp(prefix="melange-v1-audio-"))
    suffix = "".join(c for c in Path(upload.filename or "").suffix[:8] if c.isalnum() or c == ".")
    path = folder / f"upload{suffix}"
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return path


def answer(transcript: Transcript, response_format: str, granularities: set[str]) -> Response:
    if response_format == "json":
        return JSONResponse({"text": transcript.text})
    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(subtitles.export(transcript, response_format))
    info = transcript.info
    options = transcript.options
    body: dict = {
        "task": options.task if options else "transcribe",
        "language": info.language,
        "duration": round(info.duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities:
        body["segments"] = [{"id": i, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for i, s in enumerate(transcript.segments)]
    if "word" in granularities:
        body["words"] = [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in transcript.words]
    return JSONResponse(body)


async def transcribe(
    v1: V1, request: Request, principal: Principal, upload: UploadFile, model: str, options: TranscribeOptions,
    response_format: str, granularities: list[str] | None,
) -> Response:  # fmt: skip
    v1.resolve("speech", model)
    wanted = set(granularities or ())
    if wanted and response_format != "verbose_json":
        raise OpenAIError(400, "timestamp_granularities needs response_format verbose_json.", param="timestamp_granularities", code="invalid_value")
    wanted = wanted or {"segment"}
    options.check()
    engine = v1.speech

    def work() -> Iterator[TranscriptInfo | Segment]:
        path = save_upload(upload)
        try:
            info, segments = engine.transcribe(str(path), options)
            v1.check_audio(principal, info.duration)
            yield info
            yield from segments
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)

    turn = await v1.turns.take("speech", principal, request)
    pump = Pump(work, name="melange-v1-speech")

    async def collect() -> Transcript:
        info = await pump.__anext__()
        transcript = Transcript(info, [], options)
        async for segment in pump:
            transcript.segments.append(segment)
        return transcript

    job = asyncio.ensure_future(collect())
    gone = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not job.done():
            job.cancel()
            raise ClientGone()
        transcript = job.result()
    finally:
        gone.cancel()
        after(pump, v1.turns, turn)
    return answer(transcript, response_format, wanted)


def add_routes(router: APIRouter, v1: V1) -> None:
    language_field = Form(None, max_length=16, description="ISO-639-1 code of the speech (default: detected).")
    prompt_field = Form(None, max_length=2000, description="Text that sets the style and spelling.")
    format_field = Form("json")
    temperature_field = Form(None, ge=0, le=1, description="Accepted and ignored (beam search decodes).")
    granularity_field = Form(None, alias="timestamp_granularities[]", description="word and/or segment (verbose_json only).")

    @router.post("/audio/transcriptions", response_model=ANSWER, responses=FORMATS_DOC, summary="Transcribe an audio file")
    async def transcriptions(
        request: Request,
        file: UploadFile = File(description="Any audio or video file ffmpeg reads."),
        model: str = Form(max_length=512),
        language: str | None = language_field,
        prompt: str | None = prompt_field,
        response_format: TranscriptFormat = format_field,
        temperature: float | None = temperature_field,
        timestamp_granularities: list[Granularity] | None = granularity_field,
        principal: Principal = Depends(authenticate),
    ) -> Response:
        options = TranscribeOptions(language=(language or "").strip() or None, word_timestamps="word" in (timestamp_granularities or ()), initial_prompt=prompt or "")
        return await transcribe(v1, request, principal, file, model, options, response_format, timestamp_granularities)

    @router.post("/audio/translations", response_model=ANSWER, responses=FORMATS_DOC, summary="Translate speech to English text")
    async def translations(
        request: Request,
        file: UploadFile = File(description="Any audio or video file ffmpeg reads."),
        model: str = Form(max_length=512),
        prompt: str | None = prompt_field,
        response_format: TranscriptFormat = format_field,
        temperature: float | None = temperature_field,
        principal: Principal = Depends(authenticate),
    ) -> Response:
        options = TranscribeOptions(task="translate", initial_prompt=prompt or "")
        return await transcribe(v1, request, principal, file, model, options, response_format, None)
