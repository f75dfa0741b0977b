"""Generated images on disk: numbered PNGs with their recipe, listed newest first, kept across restarts.

One folder per person: the host's images at the top of the images folder, each LAN guest's under
``guests/<name>/``. The host's gallery lists everyone's.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import os
import re
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from PIL import Image

from engines.base import IMAGE_INPUTS, ImageResult
from engines.image.inpaint import upright
from engines.image.recipe import png_info

_NUMBERED = re.compile(r"^(\d{5,})-")
SOURCES = "sources"  # img2img starting images, beside the PNGs that name them


GUESTS = "guests"

# Each folder's PNGs as (number, modification time, path), read again only when the folder changed. Listing
# the newest and numbering a new image read every file's entry in the folder: with 3,000 images, 58 ms per
# Generate (48 ms of it for the page's gallery). A folder's modification time changes whenever a file is
# added, removed or renamed in it; the app's own saves add their PNG to the listing under the lock, so the
# saves that follow one another do not make the next Generate read the folder again.
_listings: dict[Path, tuple[int, list[tuple[int, int, Path]]]] = {}
_listings_lock = threading.Lock()
_highest: dict[Path, int] = {}  # the highest number this process gave a PNG in each folder: two saves never share one


def _number_of(name: str) -> int:
    match = _NUMBERED.match(name)
    return int(match.group(1)) if match else -1


def _listing(folder: Path) -> list[tuple[int, int, Path]]:
    try:
        stamp = folder.stat().st_mtime_ns
    except FileNotFoundError:
        return []
    with _listings_lock:
        cached = _listings.get(folder)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        entries = []
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(".png") and not entry.name.startswith(".") and entry.is_file():
                    entries.append((_number_of(entry.name), entry.stat().st_mtime_ns, folder / entry.name))
        _listings[folder] = (stamp, entries)
        return entries


class Gallery:
    """One folder of PNGs named ``00042-<seed>.png``: the number orders them, the name never collides.
    ``include_guests``: list the guests' folders below this one too (the host's view)."""

    def __init__(self, folder: Path, include_guests: bool = False) -> None:
        self.folder = Path(folder)
        self.include_guests = include_guests
        self._kept: dict[tuple[str, int, int], Path] = {}  # an input used again is not re-encoded again

    def folders(self) -> list[Path]:
        """Where this gallery's images are listed from (and may be selected from)."""
        guests = self.folder / GUESTS
        extra = sorted(p for p in guests.iterdir() if p.is_dir()) if self.include_guests and guests.is_dir() else []
        return [self.folder, *extra]

    def find(self, where: str | Path) -> Path | None:
        """A PNG of this gallery named by a path or URL from the page (never trusted): by its full path when
        that lies in one of the folders, else by its file name in them."""
        where = str(where).split("?")[0]
        if "file=" in where:
            where = where.split("file=", 1)[1]
        name = Path(where).name
        if not name.endswith(".png"):
            return None
        candidate = Path(os.path.realpath(where))
        for folder in self.folders():
            if candidate.parent == Path(os.path.realpath(folder)) and candidate.is_file():
                return candidate
        for folder in self.folders():
            if (folder / name).is_file():
                return folder / name
        return None

    def save(self, result: ImageResult) -> Path:
        image = result.image
        assert isinstance(image, Image.Image)
        self.folder.mkdir(parents=True, exist_ok=True)
        # The recipe names kept copies of its input images (start, mask, control), so it can be made again.
        kept = {name: str(self.keep_source(path)) for name in IMAGE_INPUTS if (path := getattr(result.params, name))}
        if kept:
            result = replace(result, params=replace(result.params, **kept))
        folder = self.folder
        entries = _listing(folder)  # before the temporary file below changes the folder
        # Written whole under a hidden temporary name first: a crash mid-write never leaves half a PNG in the gallery.
        fd, partial = tempfile.mkstemp(prefix=".", suffix=".png.part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                image.save(f, format="PNG", pnginfo=png_info(result))
            with _listings_lock:
                number = max(max((n for n, _, _ in entries), default=-1), _highest.get(folder, -1)) + 1
                while True:
                    path = folder / f"{number:05d}-{result.params.seed}.png"
                    try:
                        os.link(partial, path)  # atomic, and never overwrites: two sessions saving at once both keep theirs
                        break
                    except FileExistsError:
                        number += 1
                _highest[folder] = number
                os.unlink(partial)
                partial = None
                # Unless another save or a listing replaced the kept listing meanwhile, this PNG is the only change
                # to the folder since it was read (temporary files are not PNGs; every save links under this lock).
                # A file put there by hand in this moment shows once the folder changes again.
                if _listings.get(folder, (None, None))[1] is entries:
                    _listings[folder] = (folder.stat().st_mtime_ns, [*entries, (number, path.stat().st_mtime_ns, path)])
                else:  # a listing without this PNG must never pass for the folder as it is now
                    _listings.pop(folder, None)
            return path
        finally:
            if partial is not None:
                os.unlink(partial)

    def keep_source(self, path: str | Path) -> Path:
        """An input image (img2img start, mask, control image), kept under ``sources/`` as PNG by its content's
        hash: the upload it came from is a temporary file, and one source used for many images is kept once.
        Re-encoded, so whatever was uploaded, only plain pixels are stored: upright, as the run read them (a
        photo's EXIF orientation does not survive into the PNG, so it is applied here)."""
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
        if key in self._kept and self._kept[key].is_file():
            return self._kept[key]
        buffer = io.BytesIO()
        with Image.open(path) as im:
            im.load()
            turned = upright(im)
            keep = turned if turned.mode in ("RGB", "RGBA", "L", "LA") else turned.convert("RGBA" if "transparency" in im.info or "A" in im.mode else "RGB")
            keep.save(buffer, format="PNG")
        data = buffer.getvalue()
        target = self.folder / SOURCES / (hashlib.sha256(data).hexdigest()[:16] + ".png")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")
            partial.write_bytes(data)
            partial.replace(target)  # atomic: a reader never sees half a file
        self._kept[key] = target
        return target

    def source(self, name: str) -> Path | None:
        """A kept starting image by the name a recipe gives; only ever inside ``sources/``."""
        path = self.folder / SOURCES / Path(name).name
        return path if path.is_file() else None

    def newest(self, limit: int = 200) -> list[Path]:
        """PNGs newest first: by number, then modification time for files named otherwise; across several
        people's folders, by modification time."""
        folders = [f for f in self.folders() if f.is_dir()]
        entries = [e for f in folders for e in _listing(f)]
        order = (lambda e: (e[1], e[0])) if len(folders) > 1 else (lambda e: (e[0], e[1]))
        newest = [p for _, _, p in heapq.nlargest(limit, entries, key=order)]
        if all(p.is_file() for p in newest):
            return newest
        # A file deleted behind the app's back in the moment the app saved one: read the folders again.
        with _listings_lock:
            for f in folders:
                _listings.pop(f, None)
        entries = [e for f in folders for e in _listing(f)]
        return [p for _, _, p in heapq.nlargest(limit, entries, key=order)]
