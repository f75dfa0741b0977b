"""Images from another Melange's ``/v1/images/generations`` (a GPU box the team shares).

The request carries Melange's extra fields (negative prompt, steps, guidance, sampler, seed), so the image
comes back as this panel asked and the same recipe makes the same image again; the PNG is saved here with
its recipe as any other. Images whose seeds follow each other go in one request. Progress moves image by
image (the server sends no steps), and Cancel closes the connection: the server stops at its next step. A
refiner and image-to-image stay local features.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from dataclasses import replace

from engines.base import (
    PIXEL_UPSCALER,
    SAMPLERS,
    Cancelled,
    EngineError,
    EngineStatus,
    ImageParams,
    ImageResult,
    InputError,
    ProgressCallback,
    StepCallback,
    check_batch,
)
from engines.remote_http import REMOTE_DEVICE, RemoteServer

POLL_SECONDS = 0.1  # how often a running request looks at Cancel


def run_coroutine(coroutine):
    """``asyncio.run`` on a thread of its own: the caller's thread may already run an event loop (a test
    session's Playwright does), where asyncio.run refuses to start."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as e:  # handed to the caller as if raised here
            outcome["error"] = e

    worker = threading.Thread(target=target, name="melange-remote-image", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def runs(batch: list[ImageParams]) -> list[list[ImageParams]]:
    """The batch cut where the seeds stop following each other: each run is one request (seed, n)."""
    groups: list[list[ImageParams]] = []
    for params in batch:
        if groups and params.seed == groups[-1][-1].seed + 1 and groups[-1][-1].seed >= 0:
            groups[-1].append(params)
        else:
            groups.append([params])
    return groups


class RemoteImageEngine:
    kind = "image"
    samplers: tuple[str, ...] = SAMPLERS

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None, *, ca_file: str | None = None, timeout: float = 3600.0) -> None:
        self.server = RemoteServer(base_url, api_key, "image server", timeout, ca_file)
        self.model = model
        self.placeholder = f"the image model of {self.server.base_url}"  # its name until the server says it
        self._ready = False
        self._lock = threading.Lock()

    def status(self) -> EngineStatus:
        name = self.model or self.placeholder
        return EngineStatus("image", "melange", name, self._ready, REMOTE_DEVICE, note=f"Drawn by {self.server.base_url}.")

    def models(self) -> list[str]:
        try:
            return self.server.model_ids("image")
        except (EngineError, InputError):
            return [self.model or self.placeholder]  # the picker shows what it can while the server is away

    def load(self, progress: ProgressCallback | None = None) -> None:
        with self._lock:
            if self._ready:
                return
            if progress:
                progress(None, f"Asking {self.server.base_url} for its models…")
            self.model = self.server.choose_model(self.model, "image")
            self._ready = True

    def unload(self) -> None:
        self._ready = False

    # The add-ons need the pipeline in this process; /v1/images/generations carries none of them.
    def loras(self) -> list[str]:
        return []

    def controlnets(self) -> list[str]:
        return []

    def upscalers(self) -> list[str]:
        return [PIXEL_UPSCALER]  # the picker's default; any upscaling is refused in prepare()

    def upscale_image(self, image, params: ImageParams, on_step: StepCallback | None = None, cancel=None):
        raise InputError("Upscaling is not available with a remote image server: set Upscale to 1.")

    def prepare(self, params: ImageParams, progress: ProgressCallback | None = None) -> None:
        if params.refiner:
            raise InputError("A refiner is not available with a remote image server: set Refiner to None.")
        if params.init_image or params.mask_image or params.outpaint:
            raise InputError("Image to image, inpainting and outpainting are not available with a remote image server: remove the start image.")
        unsupported = [name for name, on in (("LoRAs", params.loras), ("ControlNet", params.controlnet),
                                             ("the hi-res fix", params.hires_scale != 1), ("upscaling", params.upscale != 1)) if on]  # fmt: skip
        if unsupported:
            raise InputError(f"{', '.join(unsupported).capitalize()} not available with a remote image server: switch them off.")
        self.load(progress)
        if params.model not in ("", self.model, self.placeholder):
            available = self.server.model_ids("image")
            if params.model not in available:
                raise InputError(f"Unknown image model {params.model!r}: the image server has {', '.join(available[:8])}.")

    def generate(self, params: ImageParams, on_step: StepCallback | None = None, *, on_preview=None, cancel=None) -> ImageResult:
        return self.generate_batch([params], on_step, on_preview=on_preview, cancel=cancel)[0]

    def generate_batch(self, batch: list[ImageParams], on_step: StepCallback | None = None, *, on_preview=None, cancel=None) -> list[ImageResult]:
        if not batch:
            raise InputError("Nothing to generate: the batch is empty.")
        check_batch(1, len(batch))
        for params in batch:
            params.check()
        self.prepare(batch[0])
        total = len(batch) * batch[0].steps
        results: list[ImageResult] = []
        for group in runs(batch):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"Cancelled after {len(results)} of {len(batch)} images.")
            results += self._draw(group, cancel, done=len(results))
            if on_step:
                on_step(len(results) * batch[0].steps, total)
        return results

    def _draw(self, group: list[ImageParams], cancel, done: int) -> list[ImageResult]:
        p = group[0]
        body = {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt,
            "size": f"{p.width}x{p.height}",
            "steps": p.steps,
            "guidance": p.guidance,
            "sampler": p.sampler,
            "seed": p.seed,
            "n": len(group),
            "response_format": "b64_json",
            "model": self.model if p.model in ("", self.placeholder) else p.model,
        }
        started = time.perf_counter()
        answer = self._post_cancellable(body, cancel, done)
        seconds = (time.perf_counter() - started) / len(group)
        return [self._result(item, p, seconds) for item in answer.get("data") or []]

    def _post_cancellable(self, body: dict, cancel, done: int) -> dict:
        """The request on a small event loop of its own, so that Cancel can close its connection mid-image (a
        blocking socket closed from another thread would keep waiting, and the server would never know)."""

        async def send() -> dict:
            async with self.server.new_async_client() as client:
                request = asyncio.ensure_future(client.post("/images/generations", json=body))
                while not request.done():
                    await asyncio.wait({request}, timeout=POLL_SECONDS)
                    if cancel is not None and cancel.is_set() and not request.done():
                        request.cancel()  # closes the connection: the server stops at its next step
                        raise Cancelled(f"Cancelled while the image server drew image {done + 1}.")
                return self.server.check(request.result()).json()

        with self.server.errors():
            return run_coroutine(send())

    def _result(self, item: dict, asked: ImageParams, seconds: float) -> ImageResult:
        from PIL import Image, UnidentifiedImageError

        try:
            png = base64.b64decode(item["b64_json"])
            with Image.open(io.BytesIO(png)) as im:
                im.load()
                recipe = json.loads(im.info.get("melange") or "{}")
                image = im.convert("RGB")
        except (KeyError, ValueError, UnidentifiedImageError) as e:
            raise EngineError(f"The image server sent something that is not an image: {type(e).__name__}.") from None
        model = str(recipe.get("model") or asked.model or self.model or "")
        seed = int(item.get("seed", recipe.get("seed", asked.seed)))
        return ImageResult(image, replace(asked, seed=seed, model=model), model, seconds, model_hash=str(recipe.get("model_hash", "")))
