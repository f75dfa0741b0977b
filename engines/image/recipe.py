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

from engines.base import IMAGE_INPUTS, ImageParams, ImageResult, InputError, LoraWeight

RECIPE_VERSION = 1
# What a recipe restores besides its input images, which it names: the gallery keeps copies under sources/.
RECIPE_FIELDS = tuple(f.name for f in fields(ImageParams) if f.name not in IMAGE_INPUTS)
# Fields that mean nothing while their feature is off: left out of the recipe then, so it stays readable.
_GROUPS = {
    "mask": ("mask_blur", "inpaint_only_masked", "inpaint_padding"),
    "outpaint": ("outpaint_pixels",),
    "hires": ("hires_upscaler", "hires_strength", "hires_steps"),
    "controlnet": ("control_preprocessor", "canny_low", "canny_high", "control_scale", "control_start", "control_end"),
    "upscale": ("upscaler",),
}


def recipe(result: ImageResult) -> dict:
    p = result.params
    params = asdict(p)
    out = {"version": RECIPE_VERSION, **params, "model": result.model, "model_hash": result.model_hash}
    if p.refiner:
        out["refiner_hash"] = result.refiner_hash
    if p.init_image is None:
        out.pop("strength")
    on = {"mask": p.inpainting, "outpaint": bool(p.outpaint), "hires": p.hires_scale > 1, "controlnet": bool(p.controlnet), "upscale": p.upscale > 1}
    for group, names in _GROUPS.items():
        if not on[group]:
            for name in names:
                out.pop(name)
    if p.controlnet:
        out["controlnet_hash"] = result.controlnet_hash
    if p.upscale > 1 and result.upscaler_hash:
        out["upscaler_hash"] = result.upscaler_hash
    for name in ("loras", "outpaint", "hires_scale", "controlnet", "upscale"):
        if not out[name] or out[name] == 1:
            out.pop(name)
    if p.loras:
        out["loras"] = [
            {"name": lora.name, "hash": digest, "weight": lora.weight}
            for lora, digest in zip(p.loras, result.lora_hashes or ("",) * len(p.loras))
        ]
    for name in IMAGE_INPUTS:
        if out[name] is None:
            out.pop(name)
        else:
            out[name] = Path(out[name]).name
    return out


def params_from_recipe(data: dict, source=lambda name: None) -> ImageParams:
    """ImageParams from a recipe (missing fields take their defaults, so older recipes read too); input
    images are found by name through ``source`` (the gallery's kept copies)."""
    known = {f.name for f in fields(ImageParams)}
    values = {k: v for k, v in data.items() if k in known}
    values["loras"] = tuple(LoraWeight(str(item["name"]), float(item.get("weight", 1.0))) for item in data.get("loras") or ())
    values["outpaint"] = tuple(data.get("outpaint") or ())
    for name in IMAGE_INPUTS:
        if data.get(name):
            found = source(data[name])
            values[name] = str(found) if found else None
    try:
        return ImageParams(**values)
    except TypeError as e:
        raise InputError(f"The recipe is malformed: {e}") from e


def a1111_parameters(result: ImageResult) -> str:
    """The ``parameters`` text other tools (A1111, Forge, Civitai) read back."""
    p = result.params
    # A1111 writes LoRAs as <lora:name:weight> in the prompt; tools that read its text expect them there.
    tags = "".join(f" <lora:{Path(lora.name).stem}:{lora.weight:g}>" for lora in p.loras)
    lines = [p.prompt + tags]
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
    if p.inpainting:
        settings.append(f"Mask blur: {p.mask_blur}")
    if p.hires_scale > 1:
        if p.init_image is None:
            settings.append(f"Denoising strength: {p.hires_strength:g}")
        settings += [f"Hires upscale: {p.hires_scale:g}", f"Hires steps: {p.hires_steps}", f"Hires upscaler: {p.hires_upscaler}"]
    if p.controlnet:
        unit = (
            f"Module: {p.control_preprocessor}, Model: {p.controlnet} [{result.controlnet_hash}], Weight: {p.control_scale:g}, "
            f"Guidance Start: {p.control_start:g}, Guidance End: {p.control_end:g}"
        )
        settings.append(f"ControlNet 0: {json.dumps(unit)}")
    if p.loras:
        hashes = ", ".join(f"{Path(lora.name).stem}: {digest}" for lora, digest in zip(p.loras, result.lora_hashes))
        settings.append(f"Lora hashes: {json.dumps(hashes)}")
    if p.refiner:
        refiner = f"{p.refiner} [{result.refiner_hash}]" if result.refiner_hash else p.refiner
        settings += [f"Refiner: {_quote(refiner)}", f"Refiner switch at: {p.refiner_start:g}"]
    if p.upscale > 1:
        settings += [f"Postprocess upscale by: {p.upscale:g}", f"Postprocess upscaler: {_quote(p.upscaler)}"]
    lines.append(", ".join(settings))
    return "\n".join(lines)


def _quote(value: str) -> str:
    return json.dumps(value) if re.search(r'[,:"]', value) else value


def png_info(result: ImageResult) -> PngInfo:
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(result))
    info.add_text("melange", json.dumps(recipe(result), ensure_ascii=False))
    return info


# <lora:name:weight> in an A1111 prompt
_LORA_TAG = re.compile(r"\s*<lora:([^:>]+):(-?[\d.]+)>")
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
    text = "\n".join(prompt)
    loras = [{"name": name, "weight": float(weight)} for name, weight in _LORA_TAG.findall(text)]
    out: dict = {"prompt": _LORA_TAG.sub("", text).strip(), "negative_prompt": "\n".join(negative).strip()}
    if loras:
        out["loras"] = loras
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
        if "Mask blur" in raw:
            out["mask_blur"] = int(raw["Mask blur"])
        if "Hires upscale" in raw:
            out["hires_scale"] = float(raw["Hires upscale"])
            out["hires_strength"] = float(raw.get("Denoising strength", 0.5))
            out["hires_steps"] = int(raw.get("Hires steps", 0))
            out["hires_upscaler"] = raw.get("Hires upscaler", "Latent")
            out.pop("strength", None)  # A1111 writes the hi-res pass's strength there
        if "Postprocess upscale by" in raw:
            out["upscale"] = float(raw["Postprocess upscale by"])
            out["upscaler"] = raw.get("Postprocess upscaler", "Lanczos")
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
