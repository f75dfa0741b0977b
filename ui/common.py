"""What the panels share: engine errors become gr.Error, engine progress becomes gr.Progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from engines.base import Engine, EngineError, InputError, ProgressCallback


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
