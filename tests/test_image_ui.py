"""Image panel handlers on the fake engine: fast checks of the glue (the real-engine ones are in test_image_recipe.py)."""

from __future__ import annotations

import base64
import inspect
import io
import json
import threading

import gradio as gr
import pytest
from PIL import Image

from engines.fake import FakeImageEngine
from engines.image.gallery import Gallery
from ui import image

CONTROLS = list(inspect.signature(image.read_controls).parameters)
# The add-ons' controls (LoRAs, mask, hi-res fix, ControlNet, upscale) default to off.
OFF = {n: p.default for n, p in inspect.signature(image.read_controls).parameters.items() if p.default is not inspect.Parameter.empty}
DEFAULTS = dict(**OFF, **dict(
    model="fake-colour", prompt="a red fox", negative_prompt="", width=64, height=64, steps=4, guidance=7.0,
    sampler="Euler", seed=42, seed_mode="fixed", batch_count=1, batch_size=1, refiner=image.NO_REFINER,
    refiner_start=0.8, init_image=None, strength=0.75,
))  # fmt: skip


def run(tmp_path, engine=None, cancel=None, **overrides) -> list[tuple]:
    values = {**DEFAULTS, **overrides}
    engine = engine or FakeImageEngine()
    return list(image.generate(engine, Gallery(tmp_path), cancel or threading.Event(), *(values[n] for n in CONTROLS)))


def final(updates: list[tuple]) -> dict:
    """The last real value each output got: preview, result, info, gallery, seed."""
    out = {}
    for update in updates:
        for name, value in zip(("preview", "result", "info", "gallery", "seed"), update):
            if not (isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1):
                out[name] = value
    return out


def test_image_is_saved_as_png_with_its_recipe(tmp_path):
    out = final(run(tmp_path, negative_prompt="blurry"))
    with Image.open(out["result"]) as im:
        assert im.size == (64, 64)
        assert im.info["parameters"].startswith("a red fox\nNegative prompt: blurry\nSteps: 4, Sampler: Euler")
        assert "Seed: 42" in im.info["parameters"] and "Model hash: " in im.info["parameters"]
        recipe = json.loads(im.info["melange"])
    assert recipe["seed"] == 42 and recipe["steps"] == 4 and recipe["model"] == "fake-colour"
    assert recipe["negative_prompt"] == "blurry" and len(recipe["model_hash"]) == 10
    assert "Seed 42" in out["info"]
    assert out["gallery"] == [out["result"]]


def test_same_seed_same_image_and_a_random_seed_is_reported(tmp_path):
    first = final(run(tmp_path))["result"]
    second = final(run(tmp_path))["result"]
    assert first != second, "every image gets its own file"
    assert Image.open(first).tobytes() == Image.open(second).tobytes()
    info = final(run(tmp_path, seed=-1))["info"]
    assert "Seed -1" not in info and "Seed " in info


def test_batches_and_seed_modes(tmp_path):
    out = final(run(tmp_path / "fixed", seed=10, batch_count=2, batch_size=3))
    assert "6 images · seeds 10…15" in out["info"]
    assert "seed" not in out, "fixed mode leaves the seed box alone"
    assert [p.rsplit("-", 1)[1] for p in out["gallery"]] == [f"{s}.png" for s in (15, 14, 13, 12, 11, 10)], "newest first"
    out = final(run(tmp_path / "inc", seed=10, seed_mode="increment", batch_count=2))
    assert out["seed"] == 12, "increment moves the seed box past the last seed used"
    out = final(run(tmp_path / "random", seed=10, seed_mode="random", batch_size=4))
    seeds = [int(p.rsplit("-", 1)[1][:-4]) for p in out["gallery"]]
    assert len(set(seeds)) == 4 and 10 not in seeds


def test_previews_are_sent_while_generating(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "PREVIEW_INTERVAL", 0.0)
    updates = run(tmp_path, engine=FakeImageEngine(delay=0.02), steps=5)
    previews = [u[0] for u in updates if isinstance(u[0], str) and u[0].startswith("<img")]
    assert len(previews) >= 2, "previews arrive step by step"
    data = previews[0].split("base64,")[1].split('"')[0]
    picture = Image.open(io.BytesIO(base64.b64decode(data)))
    assert picture.format == "JPEG" and picture.size[0] > 0, "inlined as a small JPEG: no file, no second request"


def test_only_the_previews_the_page_shows_are_drawn(tmp_path):
    engine, offered, drawn = FakeImageEngine(), [], []
    original = engine.generate_batch

    def generate_batch(batch, on_step=None, on_preview=None, **kw):
        def counted(draw):
            offered.append(draw)
            on_preview(lambda: (drawn.append(1), draw())[1])

        return original(batch, on_step, on_preview=counted, **kw)

    engine.generate_batch = generate_batch
    updates = run(tmp_path, engine=engine, steps=50)
    assert len(offered) == 50, "every step offers one"
    # 50 steps of the fake engine take milliseconds: the first step's preview, and more only as time passes.
    assert 1 <= len(drawn) < 10, "each drawn preview is torch work on the engine's thread"
    assert any(isinstance(u[0], str) and u[0].startswith("<img") for u in updates), "the drawn one is shown"


def test_cancel_stops_the_run_and_says_so(tmp_path):
    cancel = threading.Event()
    engine = FakeImageEngine(delay=0.01)
    steps = []
    original = engine.generate_batch

    def generate_batch(batch, on_step=None, **kw):
        def step(done, total):
            steps.append(done)
            if done == 3:
                cancel.set()
            on_step(done, total)

        return original(batch, step, **kw)

    engine.generate_batch = generate_batch
    out = final(run(tmp_path, engine=engine, cancel=cancel, steps=100, batch_count=3))
    assert steps == [1, 2, 3]
    assert "Cancelled after step 3 of 100" in out["info"] and "No image was saved" in out["info"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"width": 100}, "multiple of 8"),
        ({"height": 4096}, "multiple of 8 between 64 and 2048"),
        ({"width": 64.5}, "Width must be a whole number"),
        ({"steps": 0}, "Steps"),
        ({"steps": 10**6}, "Steps"),
        ({"guidance": -1.0}, "Guidance"),
        ({"guidance": None}, "Guidance"),
        ({"seed": 1.5}, "whole number"),
        ({"seed": None}, "whole number"),
        ({"seed": 2**40}, "below 2\\^32"),
        ({"sampler": "Nonsense"}, "Unknown sampler"),
        ({"batch_size": 1000}, "Batch size"),
        ({"batch_count": 0}, "Batch count"),
        ({"seed_mode": "sometimes"}, "Seed mode"),
        ({"model": "no-such-model"}, "Unknown image model"),
        ({"refiner": "fake-refiner", "refiner_start": 1.0}, "Refiner start"),
        ({"init_image": "START", "strength": 0.0}, "Strength"),
        # The add-ons: LoRA, mask, outpainting, hi-res fix, ControlNet, upscale.
        ({"lora_1": "fake-lora.safetensors", "lora_weight_1": 9.0}, "LoRA weights must be between -4 and 4"),
        ({"lora_1": "a.safetensors", "lora_2": "a.safetensors"}, "named once"),
        ({"mask": "START"}, "needs a start image"),
        ({"mask": "NOT_AN_IMAGE", "init_image": "START"}, "The mask .* is not an image"),
        ({"init_image": "START", "outpaint": ["left", "right"], "outpaint_pixels": 1024, "width": 2048}, "past the 2048 px"),
        ({"init_image": "START", "outpaint": ["sideways"]}, "Outpaint directions"),
        ({"init_image": "START", "outpaint": ["up"], "outpaint_pixels": 12}, "multiple of 8"),
        ({"hires_scale": 2.0, "init_image": "START"}, "hi-res fix is for text to image"),
        ({"hires_scale": 8.0}, "at most 4"),
        ({"hires_scale": 2.0, "width": 1536}, "makes 3072×128, past the 2048 px"),
        ({"hires_scale": 2.0, "refiner": "fake-refiner", "steps": 10}, "Refiner to None"),
        ({"controlnet": "fake-controlnet"}, "needs a control image"),
        ({"controlnet": "fake-controlnet", "control_image": "NOT_AN_IMAGE"}, "The control image .* is not an image"),
        ({"controlnet": "fake-controlnet", "control_image": "START", "control_start": 0.9, "control_end": 0.2}, "start < end"),
        ({"upscale": 5.0}, "at most 4"),
        ({"init_image": "NOT_AN_IMAGE"}, "The start image .* is not an image"),
        ({"init_image": "/etc/passwd"}, "is not an image"),
    ],
)
def test_bad_image_input_gets_a_clear_message(tmp_path, overrides, message):
    files = {"START": tmp_path / "start.png", "NOT_AN_IMAGE": tmp_path / "notes.png"}
    Image.new("RGB", (64, 64), (9, 9, 9)).save(files["START"])
    files["NOT_AN_IMAGE"].write_text("not an image")
    overrides = {k: str(files[v]) if isinstance(v, str) and v in files else v for k, v in overrides.items()}
    out = tmp_path / "gallery"
    with pytest.raises(gr.Error, match=message):
        run(out, **overrides)
    assert not out.exists(), "nothing is saved"


def test_restore_puts_every_control_back(tmp_path):
    settings = dict(negative_prompt="blurry", width=96, height=64, steps=7, guidance=3.5, sampler="DPM++ 2M Karras",
                    seed=99, refiner="fake-refiner", refiner_start=0.6)  # fmt: skip
    path = final(run(tmp_path, **settings))["result"]
    *values, info = image.restore(path, ["fake-colour", "fake-refiner"])
    restored = dict(zip(image.RESTORED, values))
    for key, value in {**DEFAULTS, **settings}.items():
        if key in restored:
            assert restored[key] == (list(value) if isinstance(value, tuple) else value), key
    assert restored["size"] == image.CUSTOM and "seed 99" in info
    # ...and they make the same image again.
    again = final(run(tmp_path, **{k: restored.get(k, DEFAULTS[k]) for k in CONTROLS}))["result"]
    assert Image.open(again).tobytes() == Image.open(path).tobytes()


def test_restore_reads_a1111_pngs_and_refuses_others(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a castle\nNegative prompt: fog\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, "
                                "CFG scale: 6.5, Seed: 7, Size: 768x512, Model hash: abc, Model: sd_xl_base_1.0")  # fmt: skip
    a1111 = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(a1111, pnginfo=info)
    restored = dict(zip(image.RESTORED, image.restore(str(a1111), ["fake-colour"])))
    assert (restored["prompt"], restored["negative_prompt"], restored["steps"], restored["sampler"]) == ("a castle", "fog", 30, "DPM++ 2M Karras")
    assert (restored["guidance"], restored["seed"], restored["width"], restored["height"]) == (6.5, 7, 768, 512)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(gr.Error, match="no recipe"):
        image.restore(str(plain), [])
    bogus = tmp_path / "bogus.png"
    bogus.write_bytes(b"not a png")
    with pytest.raises(gr.Error, match="not an image"):
        image.restore(str(bogus), [])


def test_presets_fill_the_controls():
    from ui.presets import load_presets

    presets = load_presets().image
    for preset in presets:
        values = image.apply_preset(preset.name, presets)
        assert values[2:5] == (preset.width, preset.height, preset.steps)


# ---------------------------------------------------------------- the /generate API's handler


def run_api(tmp_path, engine=None, cancel=None, **overrides):
    values = {**DEFAULTS, **overrides}
    engine = engine or FakeImageEngine()
    *_, answer = image.generate_for_api(engine, Gallery(tmp_path), cancel or threading.Event(), *(values[n] for n in CONTROLS))
    return answer


def test_the_api_answers_every_saved_png_and_their_seeds(tmp_path):
    files, summary = run_api(tmp_path, batch_count=2, batch_size=2, seed=7, seed_mode="fixed")
    assert summary["seeds"] == [7, 8, 9, 10]
    assert [f.split("/")[-1] for f in files] == [i["file"] for i in summary["images"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(i["file"] for i in summary["images"])
    assert json.loads(Image.open(files[0]).text["melange"])["seed"] == 7, "the PNG carries its recipe"
    assert "4 images" in summary["info"]


def test_the_api_sends_no_previews(tmp_path):
    seen = []
    engine = FakeImageEngine()
    original = engine.generate_batch
    engine.generate_batch = lambda batch, on_step=None, **kw: (seen.append(kw.get("on_preview")), original(batch, on_step, **kw))[1]
    run_api(tmp_path, engine=engine)
    assert seen == [None], "previews are computed only for a page that shows them"


def test_the_api_refuses_bad_input_and_a_cancel_says_what_was_kept(tmp_path):
    with pytest.raises(gr.Error, match="multiple of 8"):
        run_api(tmp_path, width=100)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(gr.Error, match="Cancelled"):
        run_api(tmp_path, engine=FakeImageEngine(delay=0.01), cancel=cancel, steps=50)
    assert list(tmp_path.iterdir()) == []


def test_a_gallery_selection_is_looked_up_in_the_images_folder_only(tmp_path):
    saved = tmp_path / "00001-7.png"
    Image.new("RGB", (8, 8)).save(saved)
    outside = tmp_path.parent / "secret.png"
    assert image.selected_image({"image": {"path": str(saved), "url": "x"}, "caption": None}, tmp_path) == saved
    assert image.selected_image({"image": {"path": None, "url": f"http://h/gradio_api/file={saved}?t=1"}}, tmp_path) == saved
    assert image.selected_image({"image": {"path": f"{tmp_path}/../{outside.name}"}}, tmp_path) is None
    assert image.selected_image({"image": {"path": str(tmp_path / "missing.png")}}, tmp_path) is None
    assert image.selected_image(None, tmp_path) is None
