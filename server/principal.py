"""Who a request comes from, in the one form every layer shares.

Gradio hands each handler the user as a plain string (``gr.Request.username``, from the app's
``auth_dependency``); ``Principal.encode`` and ``Principal.decode`` are that string's two ends, so the
panels never parse it themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["host", "guest"]
HOST_OWNER = "local"  # what the host's data was stored under before LAN mode existed
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,31}$")


def check_name(name: str) -> str:
    """A guest's name as typed, checked: it names their folders and shows on the page."""
    name = " ".join((name or "").split())
    if not NAME.match(name):
        raise ValueError("A name is 1 to 32 letters, digits, spaces, dots, dashes or underscores, starting with a letter or digit.")
    return name


@dataclass(frozen=True)
class Principal:
    role: Role
    name: str  # "host", or the guest's name as they typed it

    @property
    def is_host(self) -> bool:
        return self.role == "host"

    @property
    def owner(self) -> str:
        """The key this person's conversations, images, transcripts and recordings are stored under."""
        return HOST_OWNER if self.is_host else f"guest:{self.name.casefold()}"

    @property
    def folder(self) -> str:
        """A folder name for this person's files, relative to each data folder ('' for the host's own)."""
        return "" if self.is_host else "guests/" + re.sub(r"[^a-z0-9._-]", "_", self.name.casefold())

    def encode(self) -> str:
        return "host" if self.is_host else f"guest:{self.name}"

    @classmethod
    def decode(cls, username: str | None) -> Principal:
        """``None`` (no login in front of the app: localhost) is the host."""
        if not username or username == "host":
            return HOST
        if username.startswith("guest:"):
            return cls("guest", username.removeprefix("guest:"))
        raise ValueError(f"not a Melange user: {username!r}")


HOST = Principal("host", "host")
