"""server/inline_values.py: a plain value (slider, number, dropdown, text…) is processed on the event loop with
the same result and the same errors as in Gradio's worker thread; files and handlers keep their thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import gradio as gr
import pytest
from gradio.state_holder import SessionState

from server import inline_values
from ui.common import name_input_errors


def run(coroutine):
    """The coroutine's result, on an event loop of its own (a browser test before may leave one running here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def blocks():
    with gr.Blocks() as demo:
        inputs = [
            gr.Slider(1, 10, step=1, label="Steps"),
            gr.Number(minimum=0, label="Guidance"),
            gr.Dropdown(["Euler", "DPM++ 2M"], label="Sampler"),
            gr.Textbox(label="Prompt"),
            gr.Checkbox(label="Only masked"),
            gr.Image(type="filepath", label="Start image"),
        ]
        out = gr.Number()
        gr.Button().click(lambda *values: 1, inputs, out, api_name="go")
    name_input_errors(demo)  # as the app does: each control's errors carry its label
    return demo


def preprocess(demo, values):
    fn = next(iter(demo.fns.values()))
    return run(demo.preprocess_data(fn, list(values), SessionState(demo)))


@pytest.fixture
def hook():
    return inline_values.install()


def test_plain_values_are_processed_in_place_with_gradios_result(hook, monkeypatch):
    values = [4, 2.5, "DPM++ 2M", "a red fox", True, None]
    before = hook.inlined
    inline = preprocess(blocks(), values)
    assert hook.inlined - before == 6, "five plain inputs and an empty image in place"
    monkeypatch.setattr(hook, "inline", {})  # Gradio's own way: every input in a worker thread
    monkeypatch.setattr(hook, "inline_empty", frozenset())
    threaded = preprocess(blocks(), values)
    assert inline == threaded == [4, 2.5, "DPM++ 2M", "a red fox", True, None]


def test_a_sent_image_keeps_its_thread(hook, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "start.png")
    sent = {"path": str(tmp_path / "start.png"), "orig_name": "start.png", "meta": {"_type": "gradio.FileData"}}
    demo = blocks()
    before = hook.inlined
    fn = next(iter(demo.fns.values()))
    out = run(demo.preprocess_data(fn, [4, 2.5, "Euler", "", False, sent], SessionState(demo), explicit_call=True))
    assert hook.inlined - before == 5, "the image was read in a worker thread"
    assert Image.open(out[5]).size == (8, 8)


@pytest.mark.parametrize(
    "index, value, message",
    [
        (0, 11, "Steps"),  # past the slider's maximum
        (1, -1, "Guidance"),  # under the number's minimum
        (2, "Heun", "Sampler"),  # not one of the choices
    ],
)
def test_a_bad_value_is_the_same_clear_error_in_place(hook, index, value, message):
    values = [4, 2.5, "Euler", "", False, None]
    values[index] = value
    before = hook.inlined
    with pytest.raises(gr.Error, match=message):
        preprocess(blocks(), values)
    assert hook.inlined > before


def test_plain_outputs_are_processed_in_place_with_gradios_result(hook, monkeypatch):
    with gr.Blocks() as demo:
        outputs = [gr.HTML(), gr.Number(), gr.Markdown(), gr.Slider(0, 10)]
        gr.Button().click(lambda: None, None, outputs, api_name="out")
    fn = next(iter(demo.fns.values()))
    values = ['<img src="data:image/jpeg;base64,AAAA" alt="Preview">', 3, "**done**", 7]
    before = hook.inlined
    inline = run(demo.postprocess_data(fn, list(values), SessionState(demo)))
    assert hook.inlined - before == 3, "HTML, Number and Slider in place; Markdown (text of any length) in a thread"
    monkeypatch.setattr(hook, "inline", {})
    assert run(demo.postprocess_data(fn, list(values), SessionState(demo))) == inline


def test_handlers_and_other_work_still_run_in_a_worker_thread(hook):
    import gradio.blocks

    here = threading.get_ident()

    async def ask():
        return await gradio.blocks.anyio.to_thread.run_sync(threading.get_ident)

    assert run(ask()) != here
    with gr.Blocks():
        image = gr.Image(type="filepath")
    assert type(image) not in hook.inline["preprocess"]
