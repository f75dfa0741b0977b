"""server/static_files.py: Gradio's "is this file static?" kept per file, with the same answers as Gradio's own,
asked again when the path comes to lead elsewhere; and what it saves on the page's gallery update."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

import gradio as gr
import pytest
from gradio import utils
from gradio.data_classes import FileData, _StaticFiles
from gradio.state_holder import SessionState
from PIL import Image

from server import skips, static_files


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Gradio's answer with a count of how often it is computed, and a static folder (both undone after)."""
    real, calls = utils.is_static_file, []
    monkeypatch.setattr(utils, "is_static_file", lambda f: calls.append(f) or real(f))
    monkeypatch.setattr(_StaticFiles, "all_paths", [*_StaticFiles.all_paths])
    static = tmp_path / "static"
    static.mkdir()
    gr.set_static_paths([static])
    static_files.install()
    return static, calls, real


def test_the_answers_are_gradios(counted, tmp_path):
    static, calls, real = counted
    inside, outside = static / "a.png", tmp_path / "b.png"
    inside.write_bytes(b"x")
    outside.write_bytes(b"x")
    (static / "link.png").symlink_to(outside)
    cases = [str(inside), inside, FileData(path=str(inside)), str(outside), str(static / "link.png"),
             str(static / "missing.png"), None, 3, "bad\0path"]  # fmt: skip
    for case in cases:
        assert utils.is_static_file(case) == real(case), case
        assert utils.is_static_file(case) == real(case), case  # asked again: the kept answer


def test_an_answer_is_computed_once_per_file_and_again_when_the_path_leads_elsewhere(counted, tmp_path):
    static, calls, _ = counted
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"secret")
    (static / "x.png").write_bytes(b"x")
    for _ in range(5):
        assert utils.is_static_file(str(static / "x.png"))
    assert len(calls) == 1
    # The folder on the path becomes a symlink out of the static folder: the path now opens another file.
    sub = static / "sub"
    sub.mkdir()
    (sub / "x.png").write_bytes(b"y")
    assert utils.is_static_file(str(sub / "x.png"))
    (sub / "x.png").unlink()
    sub.rmdir()
    sub.symlink_to(outside)
    assert not utils.is_static_file(str(sub / "x.png"))
    # A new static folder: every answer is asked again.
    calls.clear()
    gr.set_static_paths([outside])
    assert utils.is_static_file(str(sub / "x.png")) and len(calls) == 1


def test_the_gallery_update_resolves_each_file_once_not_at_every_send(counted, monkeypatch):
    """The page's final update after an image: the result, its info and the 48 newest PNGs. Gradio resolved
    every file's path against every static folder twice an update (an lstat per path component; about 9 ms of
    the event loop on the 2-core VM); now once per file, whatever the number of updates."""
    static, _, _ = counted
    Image.new("RGB", (64, 64)).save(static / "00000-0.png")
    for i in range(1, 48):
        os.link(static / "00000-0.png", static / f"{i:05d}-{i}.png")
    paths = sorted(str(p) for p in static.glob("*.png"))
    resolved = []
    real = utils.is_in_or_equal
    monkeypatch.setattr(utils, "is_in_or_equal", lambda a, b: resolved.append(a) or real(a, b))
    with gr.Blocks() as demo:
        outputs = [gr.HTML(), gr.Image(type="filepath"), gr.Markdown(), gr.Gallery(format="png"), gr.Number()]
        gr.Button().click(lambda: None, None, outputs)
    skips.install(demo)
    fn = next(iter(demo.fns.values()))

    async def final_updates(n: int) -> list:
        state = SessionState(demo)
        return [await demo.postprocess_data(fn, [gr.skip(), paths[-1], "info", list(paths), gr.skip()], state) for _ in range(n)]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(asyncio.run, final_updates(1)).result()
        after_one = len(resolved)
        later = pool.submit(asyncio.run, final_updates(20)).result()
    assert after_one and len(resolved) == after_one, "files resolved again at later updates"
    assert {p.endswith(".png") for p in map(str, resolved)} == {True}
    gallery = first[0][3]
    assert later[-1][3] == gallery  # the same gallery sent, each PNG served in place
    assert len(gallery) == 48 and all(item["image"]["path"].startswith(str(static)) for item in gallery), gallery[0]
