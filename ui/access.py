"""Who is using the page and what they may do, asked at the edge of every handler that touches someone's
data, a file, a shared control or a shared resource.

The panels' own methods take a ``Principal`` and stay plain (tests call them directly); the functions Gradio
calls get a ``gr.Request``, turn it into a principal here, and check the files they were handed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from server.guard import PRINCIPAL_KEY
from server.principal import Principal
from server.uploads import Uploads, inside

NOT_ALLOWED = "Not allowed"


def principal_of(request) -> Principal:
    """The person behind a request (a ``gr.Request``, or the plain request a component's server function
    gets); with no login in front of the app (this machine only), the host."""
    if request is None:  # never guess who is asking
        raise gr.Error("This request carries no session.", title=NOT_ALLOWED)
    username = getattr(request, "username", None)
    if username is None:  # a server function's request: the guard left its verdict in the ASGI scope
        scope = getattr(getattr(request, "request", request), "scope", None) or {}
        found = scope.get(PRINCIPAL_KEY) if isinstance(scope, dict) else None
        if found is not None:
            return found
    try:
        return Principal.decode(username)
    except ValueError:
        raise gr.Error("Sign in again: this session is not known.", title=NOT_ALLOWED) from None


def require_host(principal: Principal, what: str) -> None:
    if not principal.is_host:
        raise gr.Error(f"Only the host can {what}.", title=NOT_ALLOWED)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Guests have their own, smaller caps; ``None``: no cap."""

    max_image_work: float | None = None  # megapixels × steps × images
    guest_max_image_work: float | None = None
    max_audio_seconds: float | None = None
    guest_max_audio_seconds: float | None = None
    guest_max_tokens: int | None = None
    max_live_sessions: int = 4

    def check_image(self, principal: Principal, width: int, height: int, steps: int, images: int) -> None:
        work = width * height / 1e6 * steps * images
        cap = self.max_image_work if principal.is_host else _smaller(self.max_image_work, self.guest_max_image_work)
        if cap is not None and work > cap:
            raise gr.Error(
                f"That asks for {work:,.0f} megapixel-steps ({width}×{height}, {steps} steps, {images} image(s)); "
                f"the limit per request is {cap:,.0f}. Use fewer steps, a smaller size or fewer images.",
                title="Too big a request",
            )

    def check_audio(self, principal: Principal, seconds: float) -> None:
        cap = self.max_audio_seconds if principal.is_host else _smaller(self.max_audio_seconds, self.guest_max_audio_seconds)
        if cap is not None and seconds > cap:
            raise gr.Error(
                f"The audio is {seconds / 60:,.1f} minutes long; the limit per request is {cap / 60:,.0f} minutes.",
                title="Too long",
            )

    def check_tokens(self, principal: Principal, max_tokens: int) -> None:
        if not principal.is_host and self.guest_max_tokens is not None and max_tokens > self.guest_max_tokens:
            raise gr.Error(
                f"Max new tokens is {max_tokens}; guests may ask for at most {self.guest_max_tokens}.", title="Too big a request"
            )


def gradio_cache() -> str:
    """Where Gradio keeps uploads and the files it makes from a request's data (its names carry a secret hash)."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def _smaller(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


@dataclass
class Access:
    """The data folders split per person, the record of who uploaded what, and the limits."""

    data_dir: Path | None = None
    uploads: Uploads = field(default_factory=Uploads)
    limits: Limits = field(default_factory=Limits)

    def folder(self, area: str, principal: Principal) -> Path:
        """``area`` (images, recordings, exports) for this person: the host's at its top, a guest's below."""
        assert self.data_dir is not None
        base = self.data_dir / area
        return base / principal.folder if principal.folder else base

    def areas(self) -> list[Path]:
        return [self.data_dir / a for a in ("images", "recordings", "exports")] if self.data_dir else []

    def checked_file(self, principal: Principal, path: str | None, what: str = "file") -> str | None:
        """``path`` when its caller may read it: their own upload, one of their own files in the data folders
        (the host: anyone's), or a file Gradio made while reading this very request (an image editor's layers)
        in its cache, unless it is someone else's upload. Anything else is 'not found', whatever exists there."""
        if not path:
            return None
        if not isinstance(path, str | Path):
            raise gr.Error(f"The {what} must be a file.", title="Check your input")
        owners = self.uploads.owner_of(path)
        if principal.owner in owners:
            return path
        for area in self.areas():
            if inside(path, area) and (principal.is_host or inside(path, self.folder(area.name, principal))):
                return path
        if not owners and inside(path, gradio_cache()):
            return path
        raise gr.Error(
            f"The {what} {Path(str(path)).name!r} was not found among your uploads: upload it first.", title="Not found"
        )
