"""Every generated PNG carries its recipe: A1111's ``parameters`` text and a JSON ``melange`` chunk."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engines.base import ImageParams, ImageResult


def a1111_parameters(params: ImageParams, model: str) -> str:
    """The ``parameters`` text other tools (A1111, ComfyUI, Civitai) read back."""
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    lines.append(
        f"Steps: {params.steps}, Sampler: {params.sampler}, CFG scale: {params.guidance}, "
        f"Seed: {params.seed}, Size: {params.width}x{params.height}, Model: {model}"
    )
    return "\n".join(lines)


def save_png(result: ImageResult, folder: Path) -> Path:
    """Write the image with its recipe under a name that sorts newest last and never collides."""
    folder.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(result.params, result.model))
    info.add_text("melange", json.dumps({"model": result.model, **asdict(result.params)}))
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{result.params.seed}"
    path = folder / f"{stem}.png"
    n = 1
    while path.exists():
        path = folder / f"{stem}-{n}.png"
        n += 1
    image = result.image
    assert isinstance(image, Image.Image)
    image.save(path, pnginfo=info)
    return path


def read_recipe(path: Path) -> dict | None:
    """The ``melange`` recipe of a PNG, or None when it has none."""
    with Image.open(path) as im:
        raw = im.info.get("melange")
    return json.loads(raw) if raw else None
