"""Which uploaded file belongs to whom, so a handler reads only files its caller sent.

Gradio keeps every upload in one shared folder and hands handlers plain paths, which a script can
write anywhere in a request. The guard records each upload's paths under its uploader as the upload
answers; handlers then ask ``Uploads.owns`` before opening a path.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

MAX_TRACKED = 50_000  # oldest forgotten first; Gradio's cache cleanup removes old uploads anyway


def real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


class Uploads:
    def __init__(self) -> None:
        self._owners: OrderedDict[str, set[str]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, owner: str, paths: list[str]) -> None:
        with self._lock:
            for path in paths:
                key = real(path)
                self._owners.setdefault(key, set()).add(owner)
                self._owners.move_to_end(key)
            while len(self._owners) > MAX_TRACKED:
                self._owners.popitem(last=False)

    def owner_of(self, path: str | os.PathLike) -> set[str]:
        with self._lock:
            return set(self._owners.get(real(path), ()))

    def owns(self, owner: str, path: str | os.PathLike) -> bool:
        return owner in self.owner_of(path)


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or under it, after resolving links and '..'."""
    p, f = Path(real(path)), Path(real(folder))
    return p == f or f in p.parents
