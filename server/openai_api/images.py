"""``/v1/images/generations``: the image engine, each image saved in the caller's own gallery with its recipe.

``url`` answers a link to the PNG in the caller's gallery folder: the guard serves it to them and to the host
only. ``b64_json`` answers the same PNG's bytes, recipe included. Images are drawn one at a time (a batch of
ten at 1024² would not fit most GPUs); a caller who hangs up stops the run at its next step.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request

from engines.base import ImageParams, seeds_for
from engines.image.gallery import Gallery
from server.openai_api.common import V1, authenticate
from server.openai_api.errors import OpenAIError, not_found_model
from server.openai_api.pump import run_blocking
from server.openai_api.schemas import ImageRequest, ImagesResponse
from server.openai_api.turns import ClientGone, wait_for_disconnect
from server.principal import Principal

SIZE = re.compile(r"^\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*$")
DEFAULT = ImageParams(prompt="")


def size_of(size: str | None) -> tuple[int, int]:
    if size in (None, "", "auto"):
        return DEFAULT.width, DEFAULT.height
    match = SIZE.match(size)
    if match is None:
        raise OpenAIError(400, f"size must be WIDTHxHEIGHT, such as 512x512 (or auto); got {size[:40]!r}.", param="size", code="invalid_size")
    return int(match.group(1)), int(match.group(2))


def model_of(v1: V1, name: str | None, principal: Principal) -> str:
    """The running model, another the engine offers (the host's to choose, as on the page), else 404."""
    running = v1.running("image")
    if name is None or name in ("", "image", running):
        return running
    offered = v1.image.models()
    if name not in offered:
        raise not_found_model(name, offered)
    if not principal.is_host:
        raise OpenAIError(403, f"Only the host can switch models; the Image panel runs {running!r}.", param="model", code="model_not_allowed")
    return name


def draw(v1: V1, gallery: Gallery, params: ImageParams, n: int, cancel: threading.Event) -> list[tuple[int, Path]]:
    """Blocking: prepare the model, draw ``n`` images one by one (seeds seed, seed+1, …) and save each."""
    engine = v1.image
    engine.prepare(params)
    saved = []
    for seed in seeds_for("fixed", params.seed, n, lambda: secrets.randbelow(2**32)):
        (result,) = engine.generate_batch([replace(params, seed=seed)], cancel=cancel)
        saved.append((result.params.seed, gallery.save(result)))
    return saved


def file_url(request: Request, path: Path) -> str:
    return f"{str(request.base_url).rstrip('/')}/gradio_api/file={quote(str(path), safe='/')}"


def add_routes(router: APIRouter, v1: V1) -> None:
    @router.post("/images/generations", response_model=ImagesResponse, response_model_exclude_none=True, summary="Generate images (recipe inside each PNG)")
    async def generations(body: ImageRequest, request: Request, principal: Principal = Depends(authenticate)):
        width, height = size_of(body.size)
        params = ImageParams(
            prompt=body.prompt.strip(),
            negative_prompt=body.negative_prompt.strip(),
            width=width,
            height=height,
            steps=body.steps or DEFAULT.steps,
            guidance=DEFAULT.guidance if body.guidance is None else body.guidance,
            sampler=body.sampler or DEFAULT.sampler,
            seed=-1 if body.seed is None else body.seed,
            model=model_of(v1, body.model, principal),
        )
        params.check()
        v1.check_image_work(principal, width, height, params.steps, body.n)
        gallery = Gallery(v1.access.folder("images", principal))
        cancel = threading.Event()
        turn = await v1.turns.take("image", principal, request)
        pump = run_blocking(lambda: draw(v1, gallery, params, body.n, cancel))
        job = asyncio.ensure_future(pump.__anext__())
        gone = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not job.done():
                cancel.set()  # the run stops at its next step
                job.cancel()
                raise ClientGone()
            saved = job.result()
        finally:
            gone.cancel()
            await pump.finished.wait()  # the engine is free before the next job's turn
            await v1.turns.give_back(turn)
        data = []
        for seed, path in saved:
            if body.response_format == "b64_json":
                data.append({"b64_json": base64.b64encode(path.read_bytes()).decode("ascii"), "seed": seed})
            else:
                data.append({"url": file_url(request, path), "seed": seed})
        return {"created": int(time.time()), "data": data}
