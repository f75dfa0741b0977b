"""What every ``/v1`` route shares: the engines, the queue, who is asking, their caps, and model names."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request
from starlette.responses import StreamingResponse

from server.guard import principal_of
from server.openai_api.errors import OpenAIError, not_found_model
from server.openai_api.pump import Pump
from server.openai_api.turns import Turn, Turns
from server.principal import Principal

# Besides each model's own name, a panel's name means "whatever that panel runs now", and "whisper-1" (the
# name OpenAI's own transcription model has, which many tools send unasked) means the speech model.
# Names a client may use for each kind's running model, beside its own id.
ALIASES = {
    "chat": ("chat",),
    "image": ("image",),
    "speech": ("speech", "whisper-1"),
    "embedding": ("embedding", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
}


@dataclass
class V1:
    """What the routes need from the app. ``access`` is ``ui.access.Access`` (its per-person folders and its
    ``Limits``), read here by attribute only: the server package does not import the UI."""

    chat: object
    image: object
    speech: object
    turns: Turns
    access: object
    started: int = field(default_factory=lambda: int(time.time()))

    def engine(self, kind: str):
        return getattr(self, kind)

    def running(self, kind: str) -> str:
        return self.engine(kind).status().model

    def resolve(self, kind: str, name: str | None) -> str:
        """The running model's name for ``name`` (its own name or an alias), else 404."""
        running = self.running(kind)
        if name is None or name == running or name in ALIASES[kind]:
            return running
        raise not_found_model(name, [running])

    # ---------------------------------------------------------------- caps (as ui.access.Limits: the page's)

    @property
    def limits(self):
        return getattr(self.access, "limits", None)

    def cap(self, everyone: str, guests: str | None, principal: Principal) -> float | None:
        limits = self.limits
        values = [getattr(limits, everyone, None)]
        if not principal.is_host and guests:
            values.append(getattr(limits, guests, None))
        values = [v for v in values if v is not None]
        return min(values) if values else None

    def token_cap(self, principal: Principal) -> int | None:
        return None if principal.is_host else getattr(self.limits, "guest_max_tokens", None)

    def check_tokens(self, principal: Principal, max_tokens: int, param: str = "max_tokens") -> None:
        cap = self.token_cap(principal)
        if cap is not None and max_tokens > cap:
            raise OpenAIError(400, f"{param} is {max_tokens}; guests may ask for at most {int(cap)}.", code="max_tokens_exceeded", param=param)

    def default_tokens(self, principal: Principal, default: int) -> int:
        cap = self.token_cap(principal)
        return int(min(default, cap)) if cap is not None else default

    def check_image_work(self, principal: Principal, width: int, height: int, steps: int, images: int) -> None:
        work = width * height / 1e6 * steps * images
        cap = self.cap("max_image_work", "guest_max_image_work", principal)
        if cap is not None and work > cap:
            raise OpenAIError(
                400,
                f"That asks for {work:,.0f} megapixel-steps ({width}x{height}, {steps} steps, {images} image(s)); the "
                f"limit per request is {cap:,.0f}. Use fewer steps, a smaller size or fewer images.",
                code="request_too_large",
            )

    def check_audio(self, principal: Principal, seconds: float) -> None:
        cap = self.cap("max_audio_seconds", "guest_max_audio_seconds", principal)
        if cap is not None and seconds > cap:
            raise OpenAIError(
                400, f"The audio is {seconds / 60:,.1f} minutes long; the limit per request is {cap / 60:,.0f} minutes.", code="audio_too_long"
            )


async def authenticate(request: Request) -> Principal:
    """The person the guard found (session, API key, or the host on this machine); every route needs one.
    A coroutine because it only reads what the guard left in the scope: FastAPI runs a plain function
    dependency on its thread pool, a round trip every request paid before its first byte."""
    principal = principal_of(request)
    if principal is None:
        raise OpenAIError(401, "Missing or wrong API key: send Authorization: Bearer <key>.", code="invalid_api_key")
    return principal


def after(pump: Pump, turns: Turns, turn: Turn) -> None:
    """Once the engine has let go, give the engine's turn back (never before: the next job would wait on it)."""

    async def release() -> None:
        pump.stop()
        await pump.finished.wait()
        await turns.give_back(turn)

    asyncio.ensure_future(release())


class JobStream(StreamingResponse):
    """An event stream that ends its job however it ends: finished, failed, or the caller gone."""

    def __init__(self, content, on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
