"""server/skips.py: a bare gr.skip() goes to the page as Gradio itself would send it, without rebuilding the
component, and every other output (a value, a skip that sets a property, a gr.State) is still Gradio's."""

from __future__ import annotations

import asyncio
import concurrent.futures

import gradio as gr
import pytest
from gradio.state_holder import SessionState

from server import skips


def run(coroutine):
    """The coroutine's result, on an event loop of its own (a browser test before may leave one running here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def blocks():
    with gr.Blocks() as demo:
        files = gr.File(file_count="multiple", visible=False)
        summary = gr.JSON(visible=False)
        gallery = gr.Gallery(columns=6)
        text = gr.Markdown()
        number = gr.Number()
        kept = gr.State([])
        button = gr.Button()
        button.click(lambda: None, None, [files, summary, gallery, text, number, kept], api_name="all")
        button.click(lambda: None, None, [text], api_name="one")
    return demo


def cases():  # made anew for each run: Gradio takes updates apart as it reads them
    return [
        [gr.skip()] * 6,
        [gr.skip(), {"a": 1}, gr.skip(), "**hi**", gr.skip(), gr.skip()],
        [gr.skip(), gr.skip(), gr.skip(), gr.update(visible=False), gr.skip(), gr.skip()],
        [gr.skip(), gr.skip(), gr.skip(), gr.skip(), 3, [1, 2]],
        [gr.skip(), gr.skip(), gr.skip(), gr.update(value="set", visible=True), gr.update(value=5), gr.update(value=[3])],
        gr.skip(),  # one skip standing for every output, as Gradio allows
    ]


def test_a_value_that_compares_oddly_with_a_dict_is_a_value():
    import pandas as pd

    with gr.Blocks() as demo:
        table, text = gr.DataFrame(), gr.Markdown()
        gr.Button().click(lambda: None, None, [table, text], api_name="t")
    skips.install(demo)
    fn = next(iter(demo.fns.values()))
    answer = run(demo.postprocess_data(fn, [pd.DataFrame({"a": [1, 2]}), gr.skip()], SessionState(demo)))
    assert answer[1] == {"__type__": "update"} and "a" in str(answer[0])


def dumped(values):
    return [v.model_dump() if hasattr(v, "model_dump") else v for v in values]


@pytest.mark.parametrize("case", range(len(cases())))
def test_the_answer_and_the_session_state_are_gradios(case):
    async def answer(install: bool):
        demo = blocks()
        if install:
            skips.install(demo)
        fn = next(f for f in demo.fns.values() if f.api_name == "all")
        state = SessionState(demo)
        out = await demo.postprocess_data(fn, cases()[case], state)
        kept = state[[o for o in fn.outputs if o.stateful][0]._id] if any(o._id in state.state_data for o in fn.outputs) else None
        props = {type(o).__name__: state.config_values.get(o._id, {}).get("props", {}) for o in fn.outputs}
        shown = {(name, k): p.get(k) for name, p in props.items() for k in ("visible", "value")}
        return dumped(out), kept, shown

    gradio, ours = run(answer(False)), run(answer(True))
    assert ours[0] == gradio[0]
    assert ours[1] == gradio[1]  # a gr.State output keeps Gradio's handling
    # A property a skip sets (and a value) lands in the session's config as with Gradio alone.
    assert {k: v for k, v in ours[2].items() if v is not None} == {k: v for k, v in gradio[2].items() if v is not None}


def test_a_bare_skip_rebuilds_no_component(monkeypatch):
    demo = blocks()
    skips.install(demo)
    fn = next(f for f in demo.fns.values() if f.api_name == "all")
    built = []
    monkeypatch.setattr(gr.Gallery, "__init__", lambda self, *a, **k: built.append(k) or (_ for _ in ()).throw(AssertionError("rebuilt")))
    answer = run(demo.postprocess_data(fn, [gr.skip()] * 5 + [[1]], SessionState(demo)))
    assert answer[:5] == [{"__type__": "update"}] * 5 and built == []


def test_one_output_is_gradios_own_path():
    demo = blocks()
    skips.install(demo)
    fn = next(f for f in demo.fns.values() if f.api_name == "one")
    assert run(demo.postprocess_data(fn, "**hi**", SessionState(demo))) == ["**hi**"]
    assert run(demo.postprocess_data(fn, gr.skip(), SessionState(demo))) == [{"__type__": "update"}]
