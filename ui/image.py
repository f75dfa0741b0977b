"""Image panel: model, prompt, sampler, seed mode, batches, refiner and img2img; previews while it draws.

Every image is saved with its recipe in the gallery folder; dropping such a PNG on the panel puts every
control back as it was.
"""

from __future__ import annotations

import base64
import io
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from engines.base import (
    MAX_BATCH_COUNT,
    MAX_BATCH_SIZE,
    SEED_MODES,
    Cancelled,
    ImageEngine,
    ImageParams,
    ImageResult,
    check_batch,
    seeds_for,
)
from engines.gallery import Gallery
from engines.recipe import read_recipe
from server.principal import HOST, Principal
from server.queue_status import withdraw
from ui.access import NOT_ALLOWED, Access, principal_of
from ui.common import model_line, progress_callback, user_errors
from ui.presets import ImagePreset

DEMO_NOTICE = (
    "**Demo pipeline.** The active image model is Melange's tiny built-in pipeline with random weights: "
    "it exercises the whole path offline but draws abstract noise, not your prompt. "
    "Start with `--image-model` pointing at a diffusers folder, a `.safetensors` checkpoint or a "
    "Hugging Face repo id for real images, or pick or type one in **Model**."
)
NO_REFINER = "None"
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


def size_name(width: int, height: int) -> str:
    return next((name for name, size in SIZES.items() if size == (width, height)), CUSTOM)


@dataclass(frozen=True)
class Request:
    """What one press of Generate asks for: a recipe, and how many images of it with which seeds."""

    params: ImageParams
    seed_mode: str
    batch_count: int
    batch_size: int


def whole(value, name: str, hint: str = "") -> int:
    if value is None or value == "" or float(value) != int(float(value)):
        raise gr.Error(f"{name} must be a whole number{hint}, got {value!r}.", title="Check your input")
    return int(float(value))


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
) -> Request:
    """The controls' values as a checked request; anything wrong is a gr.Error naming the control."""
    if guidance is None:
        raise gr.Error("Guidance (CFG) must be a number.", title="Check your input")
    params = ImageParams(
        prompt=(prompt or "").strip(),
        negative_prompt=(negative_prompt or "").strip(),
        width=whole(width, "Width"),
        height=whole(height, "Height"),
        steps=whole(steps, "Steps"),
        guidance=float(guidance),
        seed=whole(seed, "The seed", " (-1 for a random one)"),
        sampler=sampler,
        model=(model or "").strip(),
        refiner="" if refiner in (None, "", NO_REFINER) else refiner.strip(),
        refiner_start=float(refiner_start if refiner_start is not None else 0.8),
        init_image=init_image or None,
        strength=float(strength if strength is not None else 0.75),
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
    if p.init_image:
        parts.append(f"img2img strength {p.strength:g}")
    parts.append(f"{sum(r.seconds for r in results) / len(results):.2f} s/image")
    saved = f"`{paths[0].name}`" if len(paths) == 1 else f"`{paths[0].name}` … `{paths[-1].name}`"
    return " · ".join(parts) + f" · saved as {saved}"


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
        engine.prepare(params, progress_callback(progress))

    results: list[ImageResult] = []
    paths: list[Path] = []
    for first in range(0, total_images, size):
        batch = [replace(params, seed=s) for s in seeds[first : first + size]]
        events: queue.Queue = queue.Queue()
        on_preview = (lambda im: events.put(("preview", im))) if previews else None

        def on_step(done: int, total: int) -> None:
            events.put(("step", done, total))

        def work(batch=batch, on_preview=on_preview) -> None:
            try:
                events.put(("done", engine.generate_batch(batch, on_step, on_preview=on_preview, cancel=cancel)))
            except BaseException as e:  # handed to the handler's thread, which raises it there
                events.put(("error", e))

        threading.Thread(target=work, daemon=True, name="image-generate").start()
        last_preview_at, pending_preview = 0.0, None
        label = f"Image {first + 1}/{total_images}" if size == 1 else f"Images {first + 1}–{first + len(batch)} of {total_images}"
        while True:
            try:
                event = events.get(timeout=PREVIEW_INTERVAL)
            except queue.Empty:
                event = ("tick",)
            if event[0] == "step":
                _, done, total = event
                if progress is not None:
                    progress((first / size + done / total) / request.batch_count, desc=f"{label} · step {done}/{total}")
            elif event[0] == "preview":
                pending_preview = event[1]
            elif event[0] == "error":
                if isinstance(event[1], Cancelled):
                    raise Cancelled(f"{event[1]} " + (describe(results, paths) if results else "No image was saved."))
                with user_errors():
                    raise event[1]
            elif event[0] == "done":
                break
            if pending_preview is not None and time.monotonic() - last_preview_at >= PREVIEW_INTERVAL:
                yield pending_preview
                last_preview_at, pending_preview = time.monotonic(), None
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


def generate_for_api(engine: ImageEngine, gallery: Gallery, cancel: threading.Event, *controls, progress=None) -> tuple[list[str], dict]:
    """The API's ``/generate``: the same request, without step previews (nobody watches them), answered with
    the saved PNGs and a summary: ``{"info", "seeds", "images": [recipe, …]}``."""
    request = read_controls(*controls)
    saved = None
    try:
        for event in run_request(engine, gallery, cancel, request, progress, previews=False):
            if isinstance(event, Saved):
                saved = event
    except Cancelled as stopped:
        raise gr.Error(str(stopped), title="Cancelled") from None
    assert saved is not None
    recipes = [{"file": p.name, "seed": r.params.seed, "model": r.model, "model_hash": r.model_hash} for r, p in zip(saved.results, saved.paths)]
    summary = {"info": describe(saved.results, saved.paths), "seeds": [r.params.seed for r in saved.results], "images": recipes}
    return [str(p) for p in saved.paths], summary


def selected_image(value, gallery: Gallery | Path) -> Path | None:
    """The gallery file a select event points at, looked up in the gallery's own folders only: the event
    comes from the page, so its path is not trusted."""
    gallery = gallery if isinstance(gallery, Gallery) else Gallery(gallery)
    image = value.get("image", value) if isinstance(value, dict) else value
    where = (image.get("path") or image.get("url") or "") if isinstance(image, dict) else str(image or "")
    return gallery.find(where) if where else None


def restore(path: str | None, models: list[str], gallery: Gallery | None = None) -> tuple:
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
    }
    info = f"Restored the settings of `{Path(path).name}` (seed {values['seed']}).{note}"
    return tuple(values[name] for name in RESTORED) + (info,)


RESTORED = (
    "model", "prompt", "negative_prompt", "size", "width", "height", "steps", "guidance", "sampler",
    "seed", "seed_mode", "batch_count", "batch_size", "refiner", "refiner_start", "init_image", "strength",
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
    )


def build(
    engine: ImageEngine,
    presets: list[ImagePreset],
    images_dir: Path,
    access: Access | None = None,
    blocks: gr.Blocks | None = None,
) -> None:
    """``images_dir``: the host's gallery, guests' below it (``access`` knows whose is where); ``blocks``: to
    show each person their own gallery when the page loads."""
    preset = presets[0]
    access = access or Access(images_dir.parent)

    def gallery_of(principal: Principal) -> Gallery:
        return Gallery(access.folder("images", principal), include_guests=principal.is_host)

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
                    init_image = gr.Image(label="Start from this image", type="filepath", sources=["upload", "clipboard"], elem_id="image-init")
                    strength = gr.Slider(0.05, 1.0, value=0.75, step=0.05, label="Strength", elem_id="image-strength",
                                         info="How much of the image is redrawn (1: all of it)")  # fmt: skip
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
                batch_count, batch_size, refiner, refiner_start, init_image, strength]  # fmt: skip
    by_name = {
        "model": model, "prompt": prompt, "negative_prompt": negative, "size": size, "width": width, "height": height,
        "steps": steps, "guidance": guidance, "sampler": sampler, "seed": seed, "seed_mode": seed_mode,
        "batch_count": batch_count, "batch_size": batch_size, "refiner": refiner, "refiner_start": refiner_start,
        "init_image": init_image, "strength": strength,
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

    INIT_IMAGE = controls.index(init_image)

    def checked(request: gr.Request, values: tuple) -> tuple[Principal, tuple]:
        """The person, and the controls with the start image checked to be theirs; a guest may use only the
        model that is running (switching is the host's) and must stay within the guest caps."""
        principal = principal_of(request)
        values = list(values)
        values[INIT_IMAGE] = access.checked_file(principal, values[INIT_IMAGE], "start image")
        request_ = read_controls(*values)
        if not principal.is_host:
            running = engine.status().model
            if request_.params.model not in ("", running, models[0]) or request_.params.refiner:
                raise gr.Error(f"Only the host can switch models; this panel runs {running}.", title=NOT_ALLOWED)
        p = request_.params
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
            return generate_for_api(engine, gallery_of(principal), event, *values, progress=progress)

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
    api_button.click(api_handler, controls, [api_images, api_summary], concurrency_id="image", api_name="generate")
    stop.click(cancel, None, info, concurrency_limit=None, **page_only)
    size.change(lambda name: SIZES.get(name, (gr.skip(), gr.skip())), size, [width, height], **page_only)

    def on_recipe(request: gr.Request, path: str | None):
        principal = principal_of(request)
        return restore(access.checked_file(principal, path, "PNG"), engine.models(), gallery_of(principal))

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
        return restore(str(found), engine.models(), gallery_store)

    gallery.select(on_select, None, [selected, info], **page_only)
    reuse.click(reuse_selected, selected, [*(by_name[n] for n in RESTORED), info], **page_only)
    preset_box.change(
        lambda name: apply_preset(name, presets), preset_box,
        [model, size, width, height, steps, guidance, sampler, negative, refiner, refiner_start], **page_only,
    )  # fmt: skip

    if blocks is not None:

        def on_load(request: gr.Request):
            principal = principal_of(request)
            host_only = gr.update(visible=principal.is_host)
            return [str(p) for p in gallery_of(principal).newest(GALLERY_SIZE)], host_only, host_only

        blocks.load(on_load, None, [gallery, model, refiner_settings], **page_only)
