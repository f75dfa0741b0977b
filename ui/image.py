"""Image panel: model, prompt, sampler, seed mode, batches, refiner and img2img; LoRAs, inpainting and
outpainting, hi-res fix, ControlNet and upscaling; previews while it draws.

Every image is saved with its recipe in the gallery folder; dropping such a PNG on the panel puts every
control back as it was.
"""

from __future__ import annotations

import base64
import inspect
import io
import queue
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from engines.base import (
    CONTROL_PREPROCESSORS,
    HIRES_UPSCALERS,
    MAX_BATCH_COUNT,
    MAX_BATCH_SIZE,
    MAX_LORAS,
    OUTPAINT_DIRECTIONS,
    PIXEL_UPSCALER,
    SEED_MODES,
    Cancelled,
    ImageEngine,
    ImageParams,
    ImageResult,
    LoraWeight,
    check_batch,
    seeds_for,
)
from engines.image.gallery import Gallery
from engines.image.recipe import params_from_recipe, read_recipe
from engines.priority import run_as_job, start_background
from server.principal import HOST, Principal
from server.queue_status import withdraw
from ui import image_downloads
from ui.access import NOT_ALLOWED, Access, principal_of
from ui.common import model_line, number, progress_callback, user_errors, whole
from ui.presets import ImagePreset, Profile

DEMO_NOTICE = (
    "**Demo pipeline.** The active image model is Melange's tiny built-in pipeline with random weights: "
    "it exercises the whole path offline but draws abstract noise, not your prompt. "
    "Start with `--image-model` pointing at a diffusers folder, a `.safetensors` checkpoint or a "
    "Hugging Face repo id for real images, or pick or type one in **Model**."
)
NO_REFINER = "None"
NONE = "None"  # no LoRA in a slot, no ControlNet
CUSTOM = "Custom"
SIZES: dict[str, tuple[int, int]] = {
    "256²": (256, 256),
    "512²": (512, 512),
    "768²": (768, 768),
    "1024²": (1024, 1024),
    "16:9 (1024×576)": (1024, 576),
    "9:16 (576×1024)": (576, 1024),
    "16:9 XL (1344×768)": (1344, 768),
}
PREVIEW_INTERVAL = 0.25  # seconds between preview updates sent to the page: 4 a second looks live, and each costs the run ~10 ms on 2 cores
STEP_INTERVAL = 0.25  # the progress bar's steps reach the handler at most this often, as often as Gradio sends progress (server/queue_wake.py)
# Gradio copies and hashes every gallery file on each update: show the newest few, not the whole folder.
GALLERY_SIZE = 48


def preview_html(image) -> str:
    """A step preview inlined as a small JPEG: no file in Gradio's cache and no second request per preview,
    which on a small machine slowed the run itself (bench/image.py)."""
    if image is None:
        return '<div class="image-preview-empty" style="height:256px"></div>'
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<img src="data:image/jpeg;base64,{data}" alt="Preview of the image being drawn" '
        'style="height:256px;width:auto;max-width:100%;image-rendering:auto">'
    )


def remember_file_hashes() -> None:
    """Gradio names its copy of every file it sends by the hash of the file's whole content, read again at
    each send, on its event loop: the page's gallery sends its GALLERY_SIZE newest PNGs after every image,
    ~10 MB hashed again per Generate for one new file. The hash is kept per file instead, keyed by what any
    rewrite changes (path, inode, size, modification time in ns); gallery PNGs are never rewritten anyway."""
    import os
    from collections import OrderedDict

    from gradio import processing_utils

    if getattr(processing_utils.hash_file, "melange_kept", False):
        return
    original = processing_utils.hash_file
    kept: OrderedDict = OrderedDict()

    def hash_file(file_path, chunk_num_blocks: int = 128) -> str:
        try:
            st = os.stat(file_path)
        except OSError:
            return original(file_path, chunk_num_blocks)
        key = (str(file_path), st.st_ino, st.st_size, st.st_mtime_ns, chunk_num_blocks)
        digest = kept.get(key)
        if digest is None:
            digest = kept[key] = original(file_path, chunk_num_blocks)
            while len(kept) > 4 * GALLERY_SIZE + 64:  # a few galleries' worth
                kept.popitem(last=False)
        return digest

    hash_file.melange_kept = True
    processing_utils.hash_file = hash_file


def size_name(width: int, height: int) -> str:
    return next((name for name, size in SIZES.items() if size == (width, height)), CUSTOM)


@dataclass(frozen=True)
class Request:
    """What one press of Generate asks for: a recipe, and how many images of it with which seeds."""

    params: ImageParams
    seed_mode: str
    batch_count: int
    batch_size: int


def checked_upload(path: str | None, what: str) -> str | None:
    """Every file path that arrives from the page or the API goes through here before anything reads it: such
    a path is not trusted. It must be an image PIL can open; anything else is refused with a clear message."""
    if not path:
        return None
    if not isinstance(path, str):
        raise gr.Error(f"The {what} must be an uploaded image file.", title="Check your input")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        raise gr.Error(f"The {what} ({Path(path).name}) is not an image that can be read (PNG, JPEG, WebP…).", title="Check your input") from None
    return path


MASKS_DIR = Path(tempfile.gettempdir()) / "melange-masks"


def write_mask(alpha) -> str:
    """A mask as the page paints it: white, opaque where to redraw (alpha 255) and clear elsewhere (alpha 0),
    written once by content. The same strokes give the same file, so a restored recipe draws the same image."""
    import hashlib

    from PIL import Image

    alpha = alpha.point(lambda v: 255 if v >= 128 else 0)
    layer = Image.merge("RGBA", (*[Image.new("L", alpha.size, 255)] * 3, alpha))
    buffer = io.BytesIO()
    layer.save(buffer, format="PNG")
    data = buffer.getvalue()
    MASKS_DIR.mkdir(parents=True, exist_ok=True)
    path = MASKS_DIR / f"{hashlib.sha256(data).hexdigest()[:16]}.png"
    if not path.exists():
        partial = path.with_name(f".{path.name}.{threading.get_ident()}.part")
        partial.write_bytes(data)
        partial.replace(path)
    return str(path)


def read_mask(value) -> tuple[str | None, str | None]:
    """(mask path, start image path) from the mask control: the editor's painted layers joined into one mask
    (None when nothing is painted) and its background; or, from the API, a mask image as it is."""
    if not value:
        return None, None
    if isinstance(value, str):
        return checked_upload(value, "mask"), None
    if not isinstance(value, dict):
        raise gr.Error("The mask must be an image, or the mask editor's value.", title="Check your input")
    from PIL import Image, ImageChops

    background = checked_upload(value.get("background"), "start image in the mask editor")
    painted = None
    for layer in value.get("layers") or []:
        path = checked_upload(layer, "painted layer")
        with Image.open(path) as im:
            alpha = im.convert("RGBA").getchannel("A")
        painted = alpha if painted is None else ImageChops.lighter(painted, alpha)
    if painted is None or painted.getextrema()[1] < 128:
        return None, background
    return write_mask(painted), background


def editor_value(start: str | None, mask: str | None) -> dict | None:
    """The mask editor showing ``start`` with ``mask`` as its painted layer (a mask of any kind becomes one)."""
    if not start:
        return None
    if not mask:
        return {"background": start, "layers": [], "composite": start}
    from PIL import Image

    with Image.open(mask) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        alpha = im.convert("RGBA").getchannel("A") if has_alpha else im.convert("L")
    return {"background": start, "layers": [write_mask(alpha)], "composite": start}


def read_controls(
    model: str | None,
    prompt: str,
    negative_prompt: str,
    width,
    height,
    steps,
    guidance,
    sampler: str,
    seed,
    seed_mode: str,
    batch_count,
    batch_size,
    refiner: str | None,
    refiner_start,
    init_image: str | None,
    strength,
    lora_1: str | None = NONE, lora_weight_1=1.0, lora_2: str | None = NONE, lora_weight_2=1.0,
    lora_3: str | None = NONE, lora_weight_3=1.0, lora_4: str | None = NONE, lora_weight_4=1.0,
    mask=None,  # the page's mask editor value, or a mask image's path (the API)
    mask_blur=4,
    inpaint_only_masked=False,
    inpaint_padding=32,
    outpaint=(),
    outpaint_pixels=128,
    hires_scale=1.0,
    hires_upscaler: str = "Latent",
    hires_strength=0.5,
    hires_steps=0,
    controlnet: str | None = NONE,
    control_image: str | None = None,
    control_preprocessor: str = "none",
    canny_low=100,
    canny_high=200,
    control_scale=1.0,
    control_start=0.0,
    control_end=1.0,
    upscale=1.0,
    upscaler: str = PIXEL_UPSCALER,
) -> Request:  # fmt: skip
    """The controls' values as a checked request; anything wrong is a gr.Error naming the control."""
    init_image = checked_upload(init_image, "start image")
    mask_image, editor_start = read_mask(mask)
    init_image = init_image or editor_start
    slots = [(lora_1, lora_weight_1), (lora_2, lora_weight_2), (lora_3, lora_weight_3), (lora_4, lora_weight_4)]
    loras = tuple(
        LoraWeight(name.strip(), number(weight, "LoRA weight")) for name, weight in slots if name and name.strip() and name != NONE
    )
    params = ImageParams(
        prompt=(prompt or "").strip(),
        negative_prompt=(negative_prompt or "").strip(),
        width=whole(width, "Width"),
        height=whole(height, "Height"),
        steps=whole(steps, "Steps"),
        guidance=number(guidance, "Guidance (CFG)"),
        seed=whole(seed, "The seed", " (-1 for a random one)"),
        sampler=sampler,
        model=(model or "").strip(),
        refiner="" if refiner in (None, "", NO_REFINER) else refiner.strip(),
        refiner_start=number(refiner_start if refiner_start is not None else 0.8, "Refiner start"),
        init_image=init_image or None,
        strength=number(strength if strength is not None else 0.75, "Strength"),
        loras=loras,
        mask_image=mask_image,
        mask_blur=whole(mask_blur, "Mask blur"),
        inpaint_only_masked=bool(inpaint_only_masked),
        inpaint_padding=whole(inpaint_padding, "Padding"),
        outpaint=tuple(outpaint or ()),
        outpaint_pixels=whole(outpaint_pixels, "Outpaint pixels"),
        hires_scale=number(hires_scale, "Hi-res scale"),
        hires_upscaler=hires_upscaler or "Latent",
        hires_strength=number(hires_strength, "Hi-res strength"),
        hires_steps=whole(hires_steps, "Hi-res steps"),
        controlnet="" if controlnet in (None, "", NONE) else controlnet.strip(),
        control_image=checked_upload(control_image, "control image"),
        control_preprocessor=control_preprocessor or "none",
        canny_low=whole(canny_low, "Canny low threshold"),
        canny_high=whole(canny_high, "Canny high threshold"),
        control_scale=number(control_scale, "ControlNet scale"),
        control_start=number(control_start, "ControlNet start"),
        control_end=number(control_end, "ControlNet end"),
        upscale=number(upscale, "Upscale factor"),
        upscaler=upscaler or PIXEL_UPSCALER,
    )
    request = Request(params, seed_mode, whole(batch_count, "Batch count"), whole(batch_size, "Batch size"))
    with user_errors():
        params.check()
        check_batch(request.batch_count, request.batch_size)
        seeds_for(seed_mode, params.seed, 0, lambda: 0)  # checks the mode
    return request


def describe(results: list[ImageResult], paths: list[Path]) -> str:
    p = results[-1].params
    seeds = [r.params.seed for r in results]
    seed_text = f"Seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} images · seeds {seeds[0]}…{seeds[-1]}"
    parts = [seed_text, f"{p.steps} steps", p.sampler, f"CFG {p.guidance:g}", f"{p.width}×{p.height}", results[-1].model]
    if p.refiner:
        parts.append(f"refiner {p.refiner} from {p.refiner_start:.0%}")
    if p.loras:
        parts.append("LoRA " + ", ".join(f"{lora.name} {lora.weight:g}" for lora in p.loras))
    if p.outpaint:
        parts.append(f"outpainted {p.outpaint_pixels} px {'/'.join(p.outpaint)} at strength {p.strength:g}")
    elif p.mask_image:
        parts.append(f"inpainted{' (only the masked area)' if p.inpaint_only_masked else ''} at strength {p.strength:g}")
    elif p.init_image:
        parts.append(f"img2img strength {p.strength:g}")
    if p.hires_scale > 1:
        parts.append(f"hi-res ×{p.hires_scale:g} {p.hires_upscaler} at {p.hires_strength:g}")
    if p.controlnet:
        parts.append(f"ControlNet {p.controlnet} ({p.control_preprocessor}) ×{p.control_scale:g}")
    if p.upscale > 1:
        parts.append(f"upscaled ×{p.upscale:g} {p.upscaler}")
    size = results[-1].image.size
    if size != (p.width, p.height):
        parts[4] = f"{size[0]}×{size[1]}"
    parts.append(f"{sum(r.seconds for r in results) / len(results):.2f} s/image")
    saved = f"`{paths[0].name}`" if len(paths) == 1 else f"`{paths[0].name}` … `{paths[-1].name}`"
    return " · ".join(parts) + f" · saved as {saved}"


RUNNING = object()  # run_request without previews: still going (a point where a generator may be closed)


@dataclass(frozen=True)
class Saved:
    """A batch finished and saved: every result so far, and where each PNG went."""

    results: list[ImageResult]
    paths: list[Path]


def run_request(
    engine: ImageEngine,
    gallery: Gallery,
    cancel: threading.Event,
    request: Request,
    progress: gr.Progress | None,
    previews: bool = True,
) -> Iterator[Saved | object]:
    """Runs one request batch by batch. Yields a preview (PIL image, at most every PREVIEW_INTERVAL s) while
    a batch runs and a ``Saved`` after each; a Cancel ends it with ``Cancelled`` raised."""
    params, size = request.params, request.batch_size
    total_images = request.batch_count * size
    seeds = seeds_for(request.seed_mode, params.seed, total_images, lambda: secrets.randbelow(2**32))
    with user_errors():
        # On a job thread, where the run goes next: fusing a LoRA or loading a model is torch work (run_as_job).
        run_as_job(lambda: engine.prepare(params, progress_callback(progress)), "image-prepare")

    results: list[ImageResult] = []
    paths: list[Path] = []
    for first in range(0, total_images, size):
        batch = [replace(params, seed=s) for s in seeds[first : first + size]]
        events: queue.Queue = queue.Queue()
        latest: dict = {}  # the newest step and preview, read whenever the loop below wakes
        posted = {"step": 0.0, "preview": 0.0}  # the first preview at the first step: every run shows one

        def post(kind: str, value, every: float) -> None:
            # The loop is woken at most once per ``every`` for each kind, not at every step: each wake-up
            # pre-empts the engine's (nice 15) thread on a small machine, and the newest value is all it shows.
            latest[kind] = value
            now = time.monotonic()
            if now - posted[kind] >= every:
                posted[kind] = now
                events.put((kind,))

        def draw_preview(draw) -> None:
            # Drawn only when it will be posted: each is torch work on the engine's own thread.
            if time.monotonic() - posted["preview"] >= PREVIEW_INTERVAL:
                post("preview", draw(), PREVIEW_INTERVAL)

        on_preview = draw_preview if previews else None

        def on_step(done: int, total: int) -> None:
            post("step", (done, total), STEP_INTERVAL)

        def work(batch=batch, on_preview=on_preview) -> None:
            try:
                events.put(("done", engine.generate_batch(batch, on_step, on_preview=on_preview, cancel=cancel)))
            except BaseException as e:  # handed to the handler's thread, which raises it there
                events.put(("error", e))

        start_background(work, "image-generate")
        last_preview_at, pending_preview = 0.0, None
        label = f"Image {first + 1}/{total_images}" if size == 1 else f"Images {first + 1}–{first + len(batch)} of {total_images}"
        while True:
            try:
                event = events.get(timeout=PREVIEW_INTERVAL)
            except queue.Empty:
                event = ("tick",)
            step, preview = latest.pop("step", None), latest.pop("preview", None)
            if step is not None and progress is not None:
                done, total = step
                progress((first / size + done / total) / request.batch_count, desc=f"{label} · step {done}/{total}")
            if preview is not None:
                pending_preview = preview
            if event[0] == "error":
                if isinstance(event[1], Cancelled):
                    raise Cancelled(f"{event[1]} " + (describe(results, paths) if results else "No image was saved."))
                with user_errors():
                    raise event[1]
            elif event[0] == "done":
                break
            if pending_preview is not None and time.monotonic() - last_preview_at >= PREVIEW_INTERVAL:
                yield pending_preview
                last_preview_at, pending_preview = time.monotonic(), None
            elif not previews and time.monotonic() - last_preview_at >= PREVIEW_INTERVAL:
                yield RUNNING
                last_preview_at = time.monotonic()
        results += event[1]
        paths += [gallery.save(r) for r in event[1]]
        if pending_preview is not None:
            yield pending_preview
        yield Saved(list(results), list(paths))


def generate(
    engine: ImageEngine,
    gallery: Gallery,
    cancel: threading.Event,
    *controls,
    progress: gr.Progress = gr.Progress(),
) -> Iterator[tuple]:
    """The page's Generate. Yields (preview, result, info, gallery, seed) as the run goes; gr.skip() leaves
    one as it is."""
    request = read_controls(*controls)
    skip = gr.skip()
    saved = None
    try:
        for event in run_request(engine, gallery, cancel, request, progress):
            if isinstance(event, Saved):
                saved = event
                newest = [str(p) for p in gallery.newest(GALLERY_SIZE)]
                yield skip, str(event.paths[-1]), describe(event.results, event.paths), newest, skip
            else:
                yield preview_html(event), skip, skip, skip, skip
    except Cancelled as stopped:
        yield skip, skip, str(stopped), skip, skip
        return
    if request.seed_mode == "increment" and saved is not None:
        yield skip, skip, skip, skip, (saved.results[-1].params.seed + 1) % 2**32


def generate_for_api(engine: ImageEngine, gallery: Gallery, cancel: threading.Event, *controls, progress=None) -> Iterator[tuple]:
    """The API's ``/generate``: the same request, without step previews (nobody watches them), answered with
    the saved PNGs and a summary: ``{"info", "seeds", "images": [recipe, …]}``.

    A generator that yields ``(gr.skip(), gr.skip())`` while the run goes and the answer last: Gradio closes a
    generator whose client went away at its next yield, and closing it cancels the run at its next step (a
    plain function would run a 100-image batch to its end for nobody)."""
    request = read_controls(*controls)
    saved = None
    try:
        for event in run_request(engine, gallery, cancel, request, progress, previews=False):
            if isinstance(event, Saved):
                saved = event
            elif event is RUNNING:
                yield gr.skip(), gr.skip()
    except Cancelled as stopped:
        raise gr.Error(str(stopped), title="Cancelled") from None
    assert saved is not None
    recipes = [{"file": p.name, "seed": r.params.seed, "model": r.model, "model_hash": r.model_hash} for r, p in zip(saved.results, saved.paths)]
    summary = {"info": describe(saved.results, saved.paths), "seeds": [r.params.seed for r in saved.results], "images": recipes}
    yield [str(p) for p in saved.paths], summary


def selected_image(value, gallery: Gallery | Path) -> Path | None:
    """The gallery file a select event points at, looked up in the gallery's own folders only: the event
    comes from the page, so its path is not trusted."""
    gallery = gallery if isinstance(gallery, Gallery) else Gallery(gallery)
    image = value.get("image", value) if isinstance(value, dict) else value
    where = (image.get("path") or image.get("url") or "") if isinstance(image, dict) else str(image or "")
    return gallery.find(where) if where else None


def restore(path: str | None, models: list[str], gallery: Gallery | None = None, available_loras: list[str] = ()) -> tuple:
    """Control values from a dropped PNG's recipe, in the order of ``RESTORED``; a PNG without one is an error.
    An img2img recipe gets its starting image back from ``gallery``'s kept sources when it is there."""
    if not path:
        return tuple(gr.skip() for _ in RESTORED) + (gr.skip(),)
    with user_errors():
        recipe = read_recipe(path)
    if recipe is None:
        raise gr.Error(f"{Path(path).name} carries no recipe (no Melange or A1111 parameters).", title="Nothing to restore")
    defaults = ImageParams(prompt="")
    get = lambda key: recipe.get(key, getattr(defaults, key))  # noqa: E731
    model = recipe.get("model") or gr.skip()
    note = ""
    if isinstance(model, str) and model not in models and "/" not in model:
        note = f" Its model {model!r} is not available here: pick one before generating."
    source = None
    if recipe.get("init_image"):
        source = gallery.source(recipe["init_image"]) if gallery else None
        if source is None:
            note += " Its starting image is not in this gallery: drop it in Image to image before generating."
    mask = None
    if recipe.get("mask_image"):
        mask = gallery.source(recipe["mask_image"]) if gallery else None
        if mask is None:
            note += " Its mask is not in this gallery: paint it again before generating."
    control = None
    if recipe.get("control_image"):
        control = gallery.source(recipe["control_image"]) if gallery else None
        if control is None:
            note += " Its control image is not in this gallery: drop it under ControlNet before generating."
    loras = list(recipe.get("loras") or [])
    if len(loras) > MAX_LORAS:
        note += f" It names {len(loras)} LoRAs; the panel holds {MAX_LORAS}: the rest are left out."
    missing = [item["name"] for item in loras[:MAX_LORAS] if item["name"] not in available_loras and "/" not in item["name"]]
    if missing:
        note += f" LoRA {', '.join(missing)} is not in the models folder: add it before generating."
    width, height = int(get("width")), int(get("height"))
    values = {
        "model": model,
        "prompt": get("prompt"),
        "negative_prompt": get("negative_prompt"),
        "size": size_name(width, height),
        "width": width,
        "height": height,
        "steps": int(get("steps")),
        "guidance": float(get("guidance")),
        "sampler": get("sampler"),
        "seed": int(get("seed")),
        "seed_mode": "fixed",
        "batch_count": 1,
        "batch_size": 1,
        "refiner": recipe.get("refiner") or NO_REFINER,
        "refiner_start": float(get("refiner_start")),
        "init_image": str(source) if source else None,  # none: a leftover start image would change the result
        "strength": float(get("strength")),
        "mask": editor_value(str(source) if source else None, str(mask) if mask else None),
        "mask_blur": int(get("mask_blur")),
        "inpaint_only_masked": bool(get("inpaint_only_masked")),
        "inpaint_padding": int(get("inpaint_padding")),
        "outpaint": list(get("outpaint")),
        "outpaint_pixels": int(get("outpaint_pixels")),
        "hires_scale": float(get("hires_scale")),
        "hires_upscaler": get("hires_upscaler"),
        "hires_strength": float(get("hires_strength")),
        "hires_steps": int(get("hires_steps")),
        "controlnet": recipe.get("controlnet") or NONE,
        "control_image": str(control) if control else None,
        "control_preprocessor": get("control_preprocessor"),
        "canny_low": int(get("canny_low")),
        "canny_high": int(get("canny_high")),
        "control_scale": float(get("control_scale")),
        "control_start": float(get("control_start")),
        "control_end": float(get("control_end")),
        "upscale": float(get("upscale")),
        "upscaler": get("upscaler"),
    }
    for i in range(MAX_LORAS):
        item = loras[i] if i < len(loras) else {"name": NONE, "weight": 1.0}
        values[f"lora_{i + 1}"], values[f"lora_weight_{i + 1}"] = item["name"], float(item.get("weight", 1.0))
    info = f"Restored the settings of `{Path(path).name}` (seed {values['seed']}).{note}"
    return tuple(values[name] for name in RESTORED) + (info,)


LORA_SLOTS = tuple(name for i in range(1, MAX_LORAS + 1) for name in (f"lora_{i}", f"lora_weight_{i}"))
EXTRAS = (
    *LORA_SLOTS, "mask", "mask_blur", "inpaint_only_masked", "inpaint_padding", "outpaint", "outpaint_pixels",
    "hires_scale", "hires_upscaler", "hires_strength", "hires_steps", "controlnet", "control_image",
    "control_preprocessor", "canny_low", "canny_high", "control_scale", "control_start", "control_end", "upscale", "upscaler",
)  # fmt: skip
RESTORED = (
    "model", "prompt", "negative_prompt", "size", "width", "height", "steps", "guidance", "sampler",
    "seed", "seed_mode", "batch_count", "batch_size", "refiner", "refiner_start", "init_image", "strength", *EXTRAS,
)  # fmt: skip
# What a preset sets beside the model and sampling: the add-ons, each "off" unless the preset names it.
PRESET_EXTRAS = (
    *LORA_SLOTS, "strength", "mask_blur", "inpaint_only_masked", "inpaint_padding", "outpaint_pixels", "hires_scale",
    "hires_upscaler", "hires_strength", "hires_steps", "controlnet", "control_preprocessor", "control_scale",
    "control_start", "control_end", "upscale", "upscaler",
)  # fmt: skip


def apply_preset(name: str, presets: list[ImagePreset]) -> tuple:
    preset = next(p for p in presets if p.name == name)
    return (
        preset.model if preset.model else gr.skip(),
        size_name(preset.width, preset.height),
        preset.width,
        preset.height,
        preset.steps,
        preset.guidance,
        preset.sampler,
        preset.negative_prompt,
        preset.refiner or NO_REFINER,
        preset.refiner_start,
        *preset_extras(preset),
    )


def preset_extras(preset: ImagePreset) -> tuple:
    """The add-on controls a preset sets, in the order of ``PRESET_EXTRAS``."""
    values = {name: getattr(preset, name) for name in PRESET_EXTRAS if hasattr(preset, name)}
    loras = list(preset.loras)
    for i in range(MAX_LORAS):
        item = loras[i] if i < len(loras) else None
        values[f"lora_{i + 1}"] = item.name if item else NONE
        values[f"lora_weight_{i + 1}"] = item.weight if item else 1.0
    values["controlnet"] = preset.controlnet or NONE
    return tuple(values[name] for name in PRESET_EXTRAS)


def build(
    engine: ImageEngine,
    presets: list[ImagePreset],
    images_dir: Path,
    profile: Profile | None = None,
    access: Access | None = None,
    blocks: gr.Blocks | None = None,
) -> None:
    """``images_dir``: the host's gallery, guests' below it (``access`` knows whose is where); ``blocks``: to
    show each person their own gallery, and the host's controls to the host only, when the page loads."""
    preset = presets[0]
    access = access or Access(images_dir.parent)
    galleries: dict[Principal, Gallery] = {}
    remember_file_hashes()

    def gallery_of(principal: Principal) -> Gallery:
        if principal not in galleries:
            galleries[principal] = Gallery(access.folder("images", principal), include_guests=principal.is_host)
        return galleries[principal]

    cancels: dict[str, threading.Event] = {}  # per browser session: Cancel stops only your own run
    models = engine.models()
    if engine.status().demo:
        gr.Markdown(DEMO_NOTICE, elem_id="image-demo-notice")
    model_info = gr.Markdown(model_line(engine))
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                preset_box = gr.Dropdown([p.name for p in presets], value=preset.name, label="Preset", elem_id="image-preset")
                model = gr.Dropdown(
                    models, value=preset.model or models[0], label="Model", allow_custom_value=True, elem_id="image-model",
                    info="From the models folder or the Hugging Face cache, or type a repo id (downloaded once).",
                )  # fmt: skip
            with gr.Group(elem_id="image-downloads-box") as downloads_box:
                image_downloads.build(engine, profile, model)
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="image-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1, value=preset.negative_prompt, elem_id="image-negative")
            size = gr.Radio([*SIZES, CUSTOM], value=size_name(preset.width, preset.height), label="Size", elem_id="image-size")
            with gr.Row():
                width = gr.Slider(64, 2048, value=preset.width, step=8, label="Width", elem_id="image-width")
                height = gr.Slider(64, 2048, value=preset.height, step=8, label="Height", elem_id="image-height")
            with gr.Row():
                steps = gr.Slider(1, 150, value=preset.steps, step=1, label="Steps", elem_id="image-steps")
                guidance = gr.Slider(0.0, 30.0, value=preset.guidance, step=0.5, label="Guidance (CFG)", elem_id="image-guidance")
                sampler = gr.Dropdown(list(engine.samplers), value=preset.sampler, label="Sampler", elem_id="image-sampler")
            with gr.Row():
                seed = gr.Number(value=-1, precision=None, label="Seed (-1: random)", elem_id="image-seed")
                seed_mode = gr.Radio(
                    list(SEED_MODES), value="fixed", label="Seed mode", elem_id="image-seed-mode",
                    info="fixed: seed, seed+1… each run · increment: the same, then the seed moves on · random: new each image",
                )  # fmt: skip
            with gr.Row():
                batch_count = gr.Slider(1, MAX_BATCH_COUNT, value=1, step=1, label="Batch count", elem_id="image-batch-count")
                batch_size = gr.Slider(1, MAX_BATCH_SIZE, value=1, step=1, label="Batch size", elem_id="image-batch-size")
            with gr.Accordion("Refiner", open=bool(preset.refiner), elem_id="image-refiner-settings") as refiner_settings:
                with gr.Row():
                    refiner = gr.Dropdown(
                        [NO_REFINER, *models], value=preset.refiner or NO_REFINER, label="Refiner model",
                        allow_custom_value=True, elem_id="image-refiner",
                    )  # fmt: skip
                    refiner_start = gr.Slider(
                        0.05, 0.95, value=preset.refiner_start, step=0.05, label="Refiner start", elem_id="image-refiner-start",
                        info="Fraction of the steps after which the refiner takes over",
                    )  # fmt: skip
            with gr.Accordion("Image to image", open=False):
                with gr.Row():
                    # image_mode=None: the uploaded file as it is. Gradio's default ("RGB") converts any other image (a
                    # grey mask, a PNG with transparency) and encodes it again on every run: 1.4-3.7 ms (256²-512²), and
                    # a painted mask lost its alpha. The engine reads any mode and turns photos upright (EXIF).
                    init_image = gr.Image(label="Start from this image", type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id="image-init")
                    strength = gr.Slider(0.05, 1.0, value=0.75, step=0.05, label="Strength", elem_id="image-strength",
                                         info="How much of the image is redrawn (1: all of it)")  # fmt: skip
            extras = build_extras(engine, preset)
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="image-generate")
                stop = gr.Button("Cancel", variant="stop", elem_id="image-cancel")
            recipe_drop = gr.File(
                label="Drop a PNG here to restore its settings", file_types=[".png"], type="filepath", elem_id="image-recipe"
            )
        with gr.Column(scale=3):
            with gr.Row():
                preview = gr.HTML(preview_html(None), label="Preview", show_label=True, container=True, elem_id="image-preview")
                image = gr.Image(label="Result", type="filepath", format="png", elem_id="image-result", interactive=False)
            info = gr.Markdown(elem_id="image-info")
            gallery = gr.Gallery(
                [] if blocks is not None else [str(p) for p in gallery_of(HOST).newest(GALLERY_SIZE)],
                label="Gallery (newest first)", columns=4, elem_id="image-gallery", format="png", show_label=True,
            )  # fmt: skip
            reuse = gr.Button("Use the selected image's settings", size="sm", elem_id="image-reuse")
            selected = gr.State(None)

    controls = [model, prompt, negative, width, height, steps, guidance, sampler, seed, seed_mode,
                batch_count, batch_size, refiner, refiner_start, init_image, strength,
                *(extras[name] for name in EXTRAS)]  # fmt: skip
    by_name = {
        "model": model, "prompt": prompt, "negative_prompt": negative, "size": size, "width": width, "height": height,
        "steps": steps, "guidance": guidance, "sampler": sampler, "seed": seed, "seed_mode": seed_mode,
        "batch_count": batch_count, "batch_size": batch_size, "refiner": refiner, "refiner_start": refiner_start,
        "init_image": init_image, "strength": strength, **{name: extras[name] for name in EXTRAS},
    }  # fmt: skip

    cancel_lock = threading.Lock()

    @contextmanager
    def own_cancel(request: gr.Request) -> Iterator[threading.Event]:
        """A Cancel event for this browser session's run: Cancel stops only your own."""
        key = request.session_hash
        event = threading.Event()
        with cancel_lock:
            cancels[key] = event
        try:
            yield event
        finally:
            event.set()  # a closed page or a finished run: nothing left to stop
            with cancel_lock:
                if cancels.get(key) is event:
                    del cancels[key]

    INIT_IMAGE, CONTROL_IMAGE, MASK = controls.index(init_image), controls.index(extras["control_image"]), controls.index(extras["mask"])

    def checked(request: gr.Request, values: tuple) -> tuple[Principal, tuple]:
        """The person, and the controls with every file in them checked to be theirs; a guest may use only the
        model that is running, and models, LoRAs and ControlNets already on this machine (switching and
        downloading are the host's), within the guest caps."""
        principal = principal_of(request)
        values = list(values)
        values[INIT_IMAGE] = access.checked_file(principal, values[INIT_IMAGE], "start image")
        values[CONTROL_IMAGE] = access.checked_file(principal, values[CONTROL_IMAGE], "control image")
        mask = values[MASK]
        if isinstance(mask, dict):
            for key in ("background", "composite"):
                access.checked_file(principal, mask.get(key), "mask")
            for layer in mask.get("layers") or []:
                access.checked_file(principal, layer, "mask")
        elif mask:
            values[MASK] = access.checked_file(principal, mask, "mask")
        request_ = read_controls(*values)
        p = request_.params
        if not principal.is_host:
            running = engine.status().model
            if p.model not in ("", running, models[0]) or p.refiner:
                raise gr.Error(f"Only the host can switch models; this panel runs {running}.", title=NOT_ALLOWED)
            local = set(engine.loras()) | set(engine.controlnets())
            wanted = [lora.name for lora in p.loras] + ([p.controlnet] if p.controlnet else [])
            if any(name not in local for name in wanted):
                raise gr.Error("Only the host can download LoRAs and ControlNets; pick one from the list.", title=NOT_ALLOWED)
        access.limits.check_image(principal, p.width, p.height, p.steps, request_.batch_count * request_.batch_size)
        return principal, tuple(values)

    # gr.Request comes first: Gradio fills it by position, and after *values it would never arrive.
    def handler(request: gr.Request, *values, progress=gr.Progress()):
        principal, values = checked(request, values)
        with own_cancel(request) as event:
            yield from generate(engine, gallery_of(principal), event, *values, progress=progress)

    def api_handler(request: gr.Request, *values, progress=gr.Progress()):
        principal, values = checked(request, values)
        with own_cancel(request) as event:
            yield from generate_for_api(engine, gallery_of(principal), event, *values, progress=progress)

    # Named like read_controls' parameters, with their defaults: scripts may leave every add-on out.
    api_handler.__signature__ = inspect.Signature(
        [
            *list(inspect.signature(api_handler).parameters.values())[:1],
            *inspect.signature(read_controls).parameters.values(),
            inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=gr.Progress()),
        ]
    )

    async def cancel(request: gr.Request):
        """Stop this session's run at its next step (what was drawn is kept); one still waiting leaves the queue."""
        key = request.session_hash
        with cancel_lock:
            event = cancels.get(key)
            if event is not None:
                event.set()
                return gr.skip()
        if blocks is not None and await withdraw(blocks, key, "image"):
            return "Cancelled before it started: nothing was drawn."
        return gr.skip()

    page_only = {"api_visibility": "private"}
    gr.on(
        [run.click, prompt.submit], handler, controls, [preview, image, info, gallery, seed],
        concurrency_id="image", **page_only,
    ).then(lambda: model_line(engine), None, model_info, **page_only)  # fmt: skip
    # The API's own endpoint (Gradio's hidden-button idiom): the same controls in, the PNGs and a summary out,
    # in the same queue as the page's runs. No step previews: encoding them for nobody slowed every image.
    api_images = gr.File(file_count="multiple", visible=False)
    api_summary = gr.JSON(visible=False)
    api_button = gr.Button(visible=False)
    # Scripts send a mask image (white or opaque: redraw) where the page has its mask editor; as sent (see init_image).
    api_mask = gr.Image(type="filepath", image_mode=None, visible=False, label="mask_image")
    api_controls = [api_mask if c is extras["mask"] else c for c in controls]
    api_button.click(api_handler, api_controls, [api_images, api_summary], concurrency_id="image", api_name="generate")
    stop.click(cancel, None, info, concurrency_limit=None, **page_only)
    size.change(lambda name: SIZES.get(name, (gr.skip(), gr.skip())), size, [width, height], **page_only)

    def on_recipe(request: gr.Request, path: str | None):
        principal = principal_of(request)
        return restore(access.checked_file(principal, path, "PNG"), engine.models(), gallery_of(principal), engine.loras())

    recipe_drop.upload(on_recipe, recipe_drop, [*(by_name[n] for n in RESTORED), info], **page_only)

    def on_select(request: gr.Request, evt: gr.SelectData):
        path = selected_image(evt.value, gallery_of(principal_of(request)))
        if path is None:
            return None, gr.skip()
        return str(path), f"Selected `{path.name}`: **Use the selected image's settings** puts its recipe back in the controls."

    def reuse_selected(request: gr.Request, path: str | None):
        if not path:
            raise gr.Error("Click an image in the gallery first.", title="No image selected")
        gallery_store = gallery_of(principal_of(request))
        found = gallery_store.find(path)
        if found is None:
            raise gr.Error("That image is no longer in your gallery.", title="Not found")
        return restore(str(found), engine.models(), gallery_store, engine.loras())

    gallery.select(on_select, None, [selected, info], **page_only)
    reuse.click(reuse_selected, selected, [*(by_name[n] for n in RESTORED), info], **page_only)
    preset_box.change(
        lambda name: apply_preset(name, presets), preset_box,
        [model, size, width, height, steps, guidance, sampler, negative, refiner, refiner_start,
         *(by_name[n] for n in PRESET_EXTRAS)], **page_only,
    )  # fmt: skip
    wire_extras(engine, extras, init_image, selected, image, gallery_of, gallery, info, access)

    if blocks is not None:

        def on_load(request: gr.Request):
            principal = principal_of(request)
            host_only = gr.update(visible=principal.is_host)
            return [str(p) for p in gallery_of(principal).newest(GALLERY_SIZE)], host_only, host_only, host_only

        blocks.load(on_load, None, [gallery, model, refiner_settings, downloads_box], **page_only)


# ---------------------------------------------------------------- LoRAs, inpainting, hi-res fix, ControlNet, upscale


def build_extras(engine: ImageEngine, preset: ImagePreset) -> dict:
    """The add-on accordions; returns their controls by the names in ``EXTRAS`` (and the upscale button)."""
    c: dict = {}
    loras = [NONE, *engine.loras()]
    with gr.Accordion("LoRA", open=bool(preset.loras), elem_id="image-loras"):
        for i in range(1, MAX_LORAS + 1):
            item = preset.loras[i - 1] if i <= len(preset.loras) else None
            with gr.Row():
                c[f"lora_{i}"] = gr.Dropdown(
                    loras, value=item.name if item else NONE, label=f"LoRA {i}", allow_custom_value=True, elem_id=f"image-lora-{i}",
                    info="A .safetensors LoRA from the models folder, or a Hugging Face id" if i == 1 else None,
                )  # fmt: skip
                c[f"lora_weight_{i}"] = gr.Slider(-2.0, 2.0, value=item.weight if item else 1.0, step=0.05, label="Weight", elem_id=f"image-lora-weight-{i}")
    with gr.Accordion("Inpaint and outpaint", open=False, elem_id="image-inpaint"):
        c["mask"] = gr.ImageEditor(
            type="filepath", label="Paint what to redraw over the start image", sources=["upload", "clipboard"],
            brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=32), layers=False, transforms=(),
            format="png", elem_id="image-mask",
        )  # fmt: skip
        with gr.Row():
            c["mask_blur"] = gr.Slider(0, 64, value=preset.mask_blur, step=1, label="Mask blur (px)", elem_id="image-mask-blur")
            c["inpaint_only_masked"] = gr.Checkbox(
                value=preset.inpaint_only_masked, label="Only the masked area, at full resolution", elem_id="image-only-masked",
                info="Redraws the mask's surroundings at Width×Height and pastes them back: detail on big images",
            )  # fmt: skip
            c["inpaint_padding"] = gr.Slider(0, 256, value=preset.inpaint_padding, step=8, label="Padding around the mask (px)", elem_id="image-inpaint-padding")
        with gr.Row():
            c["outpaint"] = gr.CheckboxGroup(list(OUTPAINT_DIRECTIONS), label="Outpaint: extend the canvas", elem_id="image-outpaint")
            c["outpaint_pixels"] = gr.Slider(8, 1024, value=preset.outpaint_pixels, step=8, label="Pixels to add", elem_id="image-outpaint-pixels")
        gr.Markdown("The start image is the one in **Image to image**; **Strength** there sets how much is redrawn (1 for outpainting).")
    with gr.Accordion("Hi-res fix", open=preset.hires_scale > 1, elem_id="image-hires"):
        with gr.Row():
            c["hires_scale"] = gr.Slider(1.0, 4.0, value=preset.hires_scale, step=0.05, label="Upscale by (1: off)", elem_id="image-hires-scale")
            c["hires_upscaler"] = gr.Radio(list(HIRES_UPSCALERS), value=preset.hires_upscaler, label="Upscaler", elem_id="image-hires-upscaler")
            c["hires_strength"] = gr.Slider(0.05, 1.0, value=preset.hires_strength, step=0.05, label="Strength of the second pass", elem_id="image-hires-strength")
            c["hires_steps"] = gr.Slider(0, 150, value=preset.hires_steps, step=1, label="Second-pass steps (0: same)", elem_id="image-hires-steps")
    with gr.Accordion("ControlNet", open=bool(preset.controlnet), elem_id="image-controlnet-box"):
        with gr.Row():
            c["controlnet"] = gr.Dropdown(
                [NONE, *engine.controlnets()], value=preset.controlnet or NONE, label="ControlNet model", allow_custom_value=True,
                elem_id="image-controlnet", info="From the models folder, or a Hugging Face id",
            )  # fmt: skip
            c["control_image"] = gr.Image(label="Control image", type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id="image-control-image")
        with gr.Row():
            c["control_preprocessor"] = gr.Radio(
                list(CONTROL_PREPROCESSORS), value=preset.control_preprocessor, label="Preprocessor", elem_id="image-control-preprocessor",
                info="canny: edges found with OpenCV · none: the image as given (a depth map, a pose…)",
            )  # fmt: skip
            c["canny_low"] = gr.Slider(0, 255, value=100, step=1, label="Canny low threshold", elem_id="image-canny-low")
            c["canny_high"] = gr.Slider(0, 255, value=200, step=1, label="Canny high threshold", elem_id="image-canny-high")
        with gr.Row():
            c["control_scale"] = gr.Slider(0.0, 2.0, value=preset.control_scale, step=0.05, label="Conditioning scale", elem_id="image-control-scale")
            c["control_start"] = gr.Slider(0.0, 1.0, value=preset.control_start, step=0.05, label="Start", elem_id="image-control-start")
            c["control_end"] = gr.Slider(0.0, 1.0, value=preset.control_end, step=0.05, label="End", elem_id="image-control-end")
    with gr.Accordion("Upscale", open=preset.upscale > 1, elem_id="image-upscale-box"):
        with gr.Row():
            c["upscale"] = gr.Slider(1.0, 4.0, value=preset.upscale, step=0.5, label="Upscale the result by (1: off)", elem_id="image-upscale")
            c["upscaler"] = gr.Dropdown(
                engine.upscalers(), value=preset.upscaler, label="Upscaler", elem_id="image-upscaler",
                info="Lanczos resampling, or a super-resolution model from the models folder",
            )  # fmt: skip
        c["upscale_button"] = gr.Button("Upscale the selected image (or the last result)", size="sm", elem_id="image-upscale-selected")
    return c


def upscale_finished(
    engine: ImageEngine, gallery: Gallery, chosen: str | None, result_value, factor, upscaler: str, progress=None
) -> tuple[str, str]:
    """The Upscale button: a gallery image made bigger, saved beside it with its recipe plus the upscale, so
    dropping the new PNG back restores everything and makes it again. Returns (path, info)."""
    from PIL import Image

    path = gallery.find(chosen) if chosen else selected_image(result_value, gallery)  # only the caller's own images
    if path is None or not path.is_file():
        raise gr.Error("Select an image in the gallery first, or generate one.", title="No image selected")
    with user_errors():
        recipe = read_recipe(path)
        if recipe is None:
            raise gr.Error(f"{path.name} carries no recipe, so its upscale could not be made again.", title="Nothing to upscale")
        params = params_from_recipe(recipe, gallery.source)
        if params.upscale > 1:
            raise gr.Error(f"{path.name} is upscaled already (×{params.upscale:g}): upscale the original.", title="Upscaled already")
        params = replace(params, upscale=number(factor, "Upscale factor"), upscaler=upscaler or PIXEL_UPSCALER)
        with Image.open(path) as im:
            original = im.convert("RGB")
        started = time.perf_counter()
        on_step = (lambda done, total: progress(done / total, desc=f"Upscaling · step {done}/{total}")) if progress else None
        bigger, digest = run_as_job(lambda: engine.upscale_image(original, params, on_step), "image-upscale")
    result = ImageResult(
        bigger, params, recipe.get("model", ""), time.perf_counter() - started, model_hash=recipe.get("model_hash", ""),
        refiner_hash=recipe.get("refiner_hash", ""), lora_hashes=tuple(item.get("hash", "") for item in recipe.get("loras") or ()),
        controlnet_hash=recipe.get("controlnet_hash", ""), upscaler_hash=digest,
    )  # fmt: skip
    saved = gallery.save(result)
    return str(saved), f"Upscaled `{path.name}` ×{params.upscale:g} with {params.upscaler} to {bigger.width}×{bigger.height} · saved as `{saved.name}`"


def wire_extras(engine: ImageEngine, c: dict, init_image, selected, result, gallery_of, gallery, info, access: Access) -> None:
    """The add-ons' own events: the mask editor follows the start image (and gives it one), Upscale. Every file
    they get is checked to be the caller's own (``access``), and each person upscales into their own gallery."""

    def start_to_editor(request: gr.Request, path):
        path = access.checked_file(principal_of(request), path, "start image")
        return editor_value(checked_upload(path, "start image"), None)

    def editor_to_start(request: gr.Request, value):
        if not isinstance(value, dict):
            return gr.skip()
        return checked_upload(access.checked_file(principal_of(request), value.get("background"), "start image"), "start image")

    init_image.upload(start_to_editor, init_image, c["mask"], api_visibility="private")
    init_image.clear(lambda: None, None, c["mask"], api_visibility="private")  # no start image left behind in the editor
    c["mask"].upload(editor_to_start, c["mask"], init_image, api_visibility="private")

    def upscale(request: gr.Request, chosen, result_value, factor, upscaler, progress=gr.Progress()):
        gallery_store = gallery_of(principal_of(request))
        path, text = upscale_finished(engine, gallery_store, chosen, result_value, factor, upscaler, progress)
        return path, text, [str(p) for p in gallery_store.newest(GALLERY_SIZE)]

    c["upscale_button"].click(
        upscale, [selected, result, c["upscale"], c["upscaler"]], [result, info, gallery], concurrency_id="image", api_visibility="private"
    )
