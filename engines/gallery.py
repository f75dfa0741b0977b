"""Generated images on disk: numbered PNGs with their recipe, listed newest first, kept across restarts."""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import replace
from pathlib import Path

from PIL import Image

from engines.base import IMAGE_INPUTS, ImageResult
from engines.recipe import png_info

_NUMBERED = re.compile(r"^(\d{5,})-")
SOURCES = "sources"  # img2img starting images, beside the PNGs that name them


class Gallery:
    """One folder of PNGs named ``00042-<seed>.png``: the number orders them, the name never collides."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._kept: dict[tuple[str, int, int], Path] = {}  # an input used again is not re-encoded again

    def _number(self, path: Path) -> int:
        match = _NUMBERED.match(path.name)
        return int(match.group(1)) if match else -1

    def save(self, result: ImageResult) -> Path:
        image = result.image
        assert isinstance(image, Image.Image)
        self.folder.mkdir(parents=True, exist_ok=True)
        # The recipe names kept copies of its input images (start, mask, control), so it can be made again.
        kept = {name: str(self.keep_source(path)) for name in IMAGE_INPUTS if (path := getattr(result.params, name))}
        if kept:
            result = replace(result, params=replace(result.params, **kept))
        number = max((self._number(p) for p in self.folder.glob("*.png")), default=-1) + 1
        info = png_info(result)
        while True:
            path = self.folder / f"{number:05d}-{result.params.seed}.png"
            try:
                with path.open("xb") as f:  # exclusive: two sessions saving at once never overwrite
                    image.save(f, format="PNG", pnginfo=info)
                return path
            except FileExistsError:
                number += 1

    def keep_source(self, path: str | Path) -> Path:
        """An input image (img2img start, mask, control image), kept under ``sources/`` as PNG by its content's
        hash: the upload it came from is a temporary file, and one source used for many images is kept once.
        Re-encoded, so whatever was uploaded, only plain pixels are stored."""
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
        if key in self._kept and self._kept[key].is_file():
            return self._kept[key]
        buffer = io.BytesIO()
        with Image.open(path) as im:
            im.load()
            keep = im if im.mode in ("RGB", "RGBA", "L", "LA") else im.convert("RGBA" if "transparency" in im.info or "A" in im.mode else "RGB")
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
        """PNGs newest first (by number, then modification time for files named otherwise)."""
        if not self.folder.is_dir():
            return []
        files = [p for p in self.folder.glob("*.png") if p.is_file()]
        files.sort(key=lambda p: (self._number(p), p.stat().st_mtime_ns), reverse=True)
        return files[:limit]
