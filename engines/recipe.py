"""Every generated PNG carries its recipe: A1111's ``parameters`` text and a JSON ``melange`` chunk.

``read_recipe`` reads either back (the JSON when there is one, else A1111's text, so PNGs from
A1111, Forge or ComfyUI's A1111 nodes restore too) into the fields of ``ImageParams``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from engines.base import ImageParams, ImageResult, InputError

RECIPE_VERSION = 1
# What a recipe restores besides the img2img source, which it names: the gallery keeps a copy under sources/.
RECIPE_FIELDS = tuple(f.name for f in fields(ImageParams) if f.name != "init_image")


def recipe(result: ImageResult) -> dict:
    params = asdict(result.params)
    init = params.pop("init_image")
    out = {"version": RECIPE_VERSION, **params, "model": result.model, "model_hash": result.model_hash}
    if result.params.refiner:
        out["refiner_hash"] = result.refiner_hash
    if init is None:
        out.pop("strength")
    else:
        out["init_image"] = Path(init).name
    return out


def a1111_parameters(result: ImageResult) -> str:
    """The ``parameters`` text other tools (A1111, Forge, Civitai) read back."""
    p = result.params
    lines = [p.prompt]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    sampler, schedule = (p.sampler[: -len(" Karras")], "Karras") if p.sampler.endswith(" Karras") else (p.sampler, "")
    settings = [
        f"Steps: {p.steps}",
        f"Sampler: {sampler}",
        *([f"Schedule type: {schedule}"] if schedule else []),
        f"CFG scale: {p.guidance:g}",
        f"Seed: {p.seed}",
        f"Size: {p.width}x{p.height}",
        *([f"Model hash: {result.model_hash}"] if result.model_hash else []),
        f"Model: {_quote(result.model)}",
    ]
    if p.init_image is not None:
        settings.append(f"Denoising strength: {p.strength:g}")
    if p.refiner:
        refiner = f"{p.refiner} [{result.refiner_hash}]" if result.refiner_hash else p.refiner
        settings += [f"Refiner: {_quote(refiner)}", f"Refiner switch at: {p.refiner_start:g}"]
    lines.append(", ".join(settings))
    return "\n".join(lines)


def _quote(value: str) -> str:
    return json.dumps(value) if re.search(r'[,:"]', value) else value


def png_info(result: ImageResult) -> PngInfo:
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(result))
    info.add_text("melange", json.dumps(recipe(result), ensure_ascii=False))
    return info


# A1111's own pattern for "Key: value, Key: "quoted, value", ..."
_PARAM = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict:
    """The ImageParams fields an A1111 ``parameters`` text names (unknown keys are ignored)."""
    *head, last = text.strip().split("\n")
    if not _PARAM.findall(last) or "Steps:" not in last:
        head, last = [*head, last], ""
    prompt, negative, in_negative = [], [], False
    for line in head:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    raw = {k.strip(): (json.loads(v) if v.startswith('"') else v.strip()) for k, v in _PARAM.findall(last)}
    out: dict = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip()}
    try:
        if "Steps" in raw:
            out["steps"] = int(raw["Steps"])
        if "Sampler" in raw:
            sampler = raw["Sampler"]
            schedule = raw.get("Schedule type", "")
            out["sampler"] = f"{sampler} Karras" if schedule == "Karras" and not sampler.endswith("Karras") else sampler
        if "CFG scale" in raw:
            out["guidance"] = float(raw["CFG scale"])
        if "Seed" in raw:
            out["seed"] = int(raw["Seed"])
        if "Size" in raw:
            out["width"], out["height"] = (int(v) for v in raw["Size"].split("x"))
        if "Model" in raw:
            out["model"] = raw["Model"]
        if "Model hash" in raw:
            out["model_hash"] = raw["Model hash"]
        if "Denoising strength" in raw:
            out["strength"] = float(raw["Denoising strength"])
        if "Refiner" in raw:
            name, _, rest = raw["Refiner"].partition(" [")
            out["refiner"], out["refiner_hash"] = name, rest.rstrip("]")
        if "Refiner switch at" in raw:
            out["refiner_start"] = float(raw["Refiner switch at"])
    except ValueError as e:
        raise InputError(f"The image's parameters text is malformed: {e}") from e
    return out


def read_recipe(path: str | Path) -> dict | None:
    """The recipe a PNG carries (Melange's JSON, else A1111's text), or None when it has none."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            melange, parameters = im.info.get("melange"), im.info.get("parameters")
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path.name} is not an image that can be read.") from e
    if melange:
        try:
            data = json.loads(melange)
        except json.JSONDecodeError as e:
            raise InputError(f"{path.name} has a damaged Melange recipe: {e}") from e
        if not isinstance(data, dict):
            raise InputError(f"{path.name} has a damaged Melange recipe.")
        return data
    if parameters:
        return parse_a1111(parameters)
    return None
