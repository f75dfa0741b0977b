"""What the panels share: engine errors become gr.Error, engine progress becomes gr.Progress."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from engines.base import MAX_INPUT_PIXELS, Engine, EngineError, InputError, ProgressCallback


def shown(value) -> str:
    """A value as a message may quote it: never a whole 10 MB paste."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def number(value, name: str) -> float:
    """A control's value as a finite number; text, NaN, infinity, a list or nothing is a gr.Error naming it."""
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        result = math.nan
    if isinstance(value, bool) or not math.isfinite(result):
        raise gr.Error(f"{name} must be a number, got {shown(value)}.", title="Check your input")
    return result


def whole(value, name: str, hint: str = "") -> int:
    """A control's value as a whole number; anything else is a gr.Error naming it (``hint`` says what fits)."""
    try:
        result = number(value, name)
    except gr.Error:
        result = math.nan
    if not math.isfinite(result) or result != int(result):
        raise gr.Error(f"{name} must be a whole number{hint}, got {shown(value)}.", title="Check your input")
    return int(result)


@contextmanager
def user_errors() -> Iterator[None]:
    """Show engine errors as a clear message in the page instead of a stack trace."""
    try:
        yield
    except InputError as e:
        raise gr.Error(str(e), title="Check your input") from e
    except EngineError as e:
        raise gr.Error(str(e), title="The engine could not do that") from e


def progress_callback(progress: gr.Progress | None) -> ProgressCallback:
    def report(fraction: float | None, description: str) -> None:
        if progress is None:  # an API call: nobody watches a bar
            return
        # Gradio hides the bar for None; an unknown fraction still deserves a visible "Loading…".
        progress(0.0 if fraction is None else fraction, desc=description)

    return report


def ensure_loaded(engine: Engine, progress: gr.Progress | None) -> None:
    """Load the engine's model on first use, with the progress bar saying so."""
    if not engine.status().loaded:
        with user_errors():
            evicted = engine.load(progress_callback(progress))
        if evicted:  # the memory manager made room
            gr.Info(f"Unloaded {', '.join(evicted)} to make room for {engine.status().model}.")


def model_line(engine: Engine) -> str:
    s = engine.status()
    state = "loaded" if s.loaded else "loads on first use"
    line = f"**Model:** {s.model} · {s.backend} on {s.device} · {state}"
    return f"{line}  \n⚠️ {s.note}" if s.note else line


def name_input_errors(blocks: gr.Blocks) -> None:
    """Gradio's own checks of a value (a Number's bounds, a Dropdown's choices) answer "Value 5.0 is greater than
    maximum value 1.0." without naming the control, and a value of the wrong type a long developer's report: a
    script sending thirty values cannot tell which was wrong. Every labelled input names itself."""
    for block in blocks.blocks.values():
        label = getattr(block, "label", None)
        if label and callable(getattr(block, "preprocess", None)):
            block.preprocess = _named_preprocess(block.preprocess, str(label), isinstance(block, (gr.Image, gr.ImageEditor)))


def field(payload, key: str):
    """A field of what Gradio hands a component: a dict, or one of its FileData, ImageData or EditorData models."""
    return payload.get(key) if isinstance(payload, dict) else getattr(payload, key, None)


def file_name(payload) -> str | None:
    """The name of a file as Gradio hands it to a component, else None."""
    name, path = field(payload, "orig_name"), field(payload, "path")
    return name or (Path(str(path)).name if path else None)


def image_files(payload) -> list:
    """The files an image input carries: one for gr.Image, the background, layers and composite for gr.ImageEditor."""
    if payload is None:
        return []
    if field(payload, "path"):
        return [payload]
    parts = (field(payload, "background"), *(field(payload, "layers") or []), field(payload, "composite"))
    return [f for f in parts if f is not None and file_name(f) is not None]


def check_image_size(payload) -> None:
    """An image claiming more than MAX_INPUT_PIXELS is refused from its header, before Gradio decodes it to
    convert it: a 300 KB PNG can claim 100 megapixels."""
    from PIL import Image

    from engines.image.inpaint import check_pixels

    for item in image_files(payload):
        try:
            with Image.open(field(item, "path")) as im:
                size = im.size
        except Image.DecompressionBombError:  # PIL's own limit, twice its warning: far past ours
            raise gr.Error(
                f"{file_name(item)} claims more pixels than any image that is read "
                f"(up to {MAX_INPUT_PIXELS // 1_000_000} megapixels).", title="Check your input",
            ) from None
        except Exception:  # noqa: BLE001 -- not an image at all: the component's own reading says so
            continue
        with user_errors():
            check_pixels(size, file_name(item))


def _named_preprocess(preprocess, label: str, is_image: bool):
    @functools.wraps(preprocess)
    def named(payload):
        try:
            if is_image:
                check_image_size(payload)
            return preprocess(payload)
        except gr.Error as e:
            raise gr.Error(f"{label}: {e.message}", title=e.title if e.title not in (None, "Error") else "Check your input") from e
        except Exception as e:  # noqa: BLE001 -- whatever a component's own reading raises is the input's fault
            name = file_name(payload)
            kind = "an image that can be read (PNG, JPEG, WebP…)" if is_image else "a file this control can read"
            what = f"the file {name!r} is not {kind}" if name else f"{shown(payload)} is not a value this control takes"
            raise gr.Error(f"{label}: {what}.", title="Check your input") from e

    return named
