"""A slider's number or a dropdown's choice is checked where it arrives, not in a worker thread of its own.

Gradio preprocesses each input of an event, and postprocesses each output, in a worker thread
(``anyio.to_thread.run_sync``, one hand-off per component): right for an image or a file, read from disk,
but a plain value is checked in microseconds and then waits for a thread to be scheduled and to hand back.
The image panel's ``/generate`` has 44 inputs: its preprocessing took 5.2 ms a request, almost all of it
hand-offs (measured in-process with the fake engines), and 6-7 ms in the running app before the handler
started, on the cores the engines use.

Here the components whose processing is a plain value check (exactly the classes below: a subclass may do
more) are processed on the event loop, inputs (``PREPROCESS_INLINE``) and outputs (``POSTPROCESS_INLINE``), and so
is a file input left empty (``EMPTY_INLINE``: the image panel's start, mask and control images, most runs).
Text that may be long (a transcript in a Textbox or Markdown) is not among the outputs. Every other component keeps its thread. Gradio's
``gradio.blocks`` module calls ``anyio.to_thread.run_sync`` for these and for a handler that is a plain
function, which also keeps its thread.
"""

from __future__ import annotations

import inspect
import types

import anyio
import anyio.to_thread

PREPROCESS_INLINE = ("Slider", "Number", "Dropdown", "Radio", "Checkbox", "CheckboxGroup", "Textbox")
EMPTY_INLINE = ("Image", "ImageEditor", "File", "Audio")  # ...and these when nothing was sent: None stays None
# HTML: returned as it is after one regex search for a <script> tag (the image panel's step previews, ~3 KB).
POSTPROCESS_INLINE = ("Slider", "Number", "Dropdown", "Radio", "Checkbox", "CheckboxGroup", "HTML")


def _classes(names: tuple[str, ...]) -> frozenset[type]:
    import gradio as gr

    return frozenset(getattr(gr, name) for name in names)


class _ToThread(types.ModuleType):
    """``anyio.to_thread`` whose ``run_sync`` runs a plain value's processing in place."""

    def __init__(self) -> None:
        super().__init__("anyio.to_thread")
        self.inline = {"preprocess": _classes(PREPROCESS_INLINE), "postprocess": _classes(POSTPROCESS_INLINE)}
        self.inline_empty = _classes(EMPTY_INLINE)
        self.inlined = 0  # for the tests

    def __getattr__(self, name):
        return getattr(anyio.to_thread, name)

    async def run_sync(self, func, *args, **kwargs):
        # A component's own method, or a wrapper of one (functools.wraps: ui.common names a control's errors).
        owner = getattr(inspect.unwrap(func), "__self__", None)
        name = getattr(func, "__name__", "")
        if type(owner) in self.inline.get(name, ()) or (name == "preprocess" and args == (None,) and type(owner) in self.inline_empty):
            self.inlined += 1
            return func(*args)
        return await anyio.to_thread.run_sync(func, *args, **kwargs)


class _AnyioForBlocks(types.ModuleType):
    """``anyio`` as ``gradio.blocks`` sees it: the same, but for ``to_thread``."""

    def __init__(self) -> None:
        super().__init__("anyio")
        self.to_thread = _ToThread()

    def __getattr__(self, name):
        return getattr(anyio, name)


def install() -> _ToThread:
    """Before the app serves: Gradio's Blocks process plain values in place. Idempotent; returns the hook."""
    import gradio.blocks

    if not isinstance(gradio.blocks.anyio, _AnyioForBlocks):
        gradio.blocks.anyio = _AnyioForBlocks()
    return gradio.blocks.anyio.to_thread
