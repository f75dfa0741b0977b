"""The panel's handlers on the real diffusers engine (tiny pipeline, CPU): bytes, recipes, gallery."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import pytest

from engines.image.gallery import Gallery
from engines.image.diffusion import TINY_DEMO_NAME, load_tiny_demo
from engines.image.recipe import read_recipe
from ui import image

CONTROLS = list(inspect.signature(image.read_controls).parameters)
# The add-ons' controls (LoRAs, mask, hi-res fix, ControlNet, upscale) default to off.
OFF = {n: p.default for n, p in inspect.signature(image.read_controls).parameters.items() if p.default is not inspect.Parameter.empty}
DEFAULTS = dict(**OFF, **dict(
    model=TINY_DEMO_NAME, prompt="a lighthouse at dusk", negative_prompt="fog", width=64, height=64, steps=3,
    guidance=6.5, sampler="DPM++ 2M Karras", seed=1234, seed_mode="fixed", batch_count=1, batch_size=1,
    refiner=image.NO_REFINER, refiner_start=0.8, init_image=None, strength=0.75,
))  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def engine(data_dir):
    return load_tiny_demo(data_dir, "cpu")


def generate(engine, folder: Path, **overrides) -> list[str]:
    values = {**DEFAULTS, **overrides}
    paths = []
    for update in image.generate(engine, Gallery(folder), threading.Event(), *(values[n] for n in CONTROLS)):
        if isinstance(update[1], str):
            paths.append(update[1])
    return paths


def test_same_seed_and_parameters_give_byte_identical_pngs(engine, tmp_path):
    first, second = generate(engine, tmp_path / "a")[0], generate(engine, tmp_path / "b")[0]
    assert Path(first).read_bytes() == Path(second).read_bytes()
    third = generate(engine, tmp_path / "c", seed=1235)[0]
    assert Path(third).read_bytes() != Path(first).read_bytes()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"sampler": "LCM", "guidance": 1.5, "width": 96},
        {"refiner": TINY_DEMO_NAME, "refiner_start": 0.5, "steps": 4},
        {"model": "melange-tiny-sdxl", "refiner": "melange-tiny-sdxl", "refiner_start": 0.5, "steps": 4, "sampler": "Euler a"},
    ],
    ids=["plain", "lcm", "sd-refiner", "sdxl-refiner"],
)
def test_recipe_round_trip(engine, data_dir, tmp_path, settings):
    """Generate, drop the PNG on the panel, get the same controls, generate the same image."""
    if settings.get("model") == "melange-tiny-sdxl":
        from engines.image.tiny_pipeline import ensure_tiny_pipeline

        ensure_tiny_pipeline(data_dir, "sdxl")
    png = generate(engine, tmp_path / "first", **settings)[0]
    recipe = read_recipe(png)
    assert recipe["model_hash"] and len(recipe["model_hash"]) == 10
    if settings.get("refiner"):
        assert recipe["refiner"] == settings["refiner"] and recipe["refiner_hash"]
    *values, info = image.restore(png, engine.models())
    restored = dict(zip(image.RESTORED, values))
    expected = {**DEFAULTS, **settings}
    for key in image.RESTORED:
        if key in expected:
            assert restored[key] == (list(expected[key]) if isinstance(expected[key], tuple) else expected[key]), key
    again = generate(engine, tmp_path / "again", **{k: restored.get(k, expected[k]) for k in CONTROLS})[0]
    assert Path(again).read_bytes() == Path(png).read_bytes()


def test_img2img_round_trip_keeps_its_starting_image(engine, tmp_path):
    """The upload an img2img run starts from is a temporary file: the gallery keeps a copy the recipe names,
    so dropping the PNG back restores the starting image too and makes the same image again."""
    start = tmp_path / "upload.png"
    Path(generate(engine, tmp_path / "start", width=96, height=96)[0]).replace(start)
    folder = tmp_path / "images"
    out = generate(engine, folder, init_image=str(start), strength=0.7, steps=4)[0]
    recipe = read_recipe(out)
    kept = folder / "sources" / recipe["init_image"]
    from PIL import Image

    assert recipe["strength"] == 0.7 and Image.open(kept).tobytes() == Image.open(start).tobytes()
    assert kept.suffix == ".png" and "melange" not in Image.open(kept).info, "kept as plain pixels, re-encoded"
    assert "Denoising strength: 0.7" in Image.open(out).info["parameters"]
    start.unlink()  # the upload is gone, as Gradio's temporary files go
    generate(engine, folder, init_image=str(kept), strength=0.7, steps=4, seed=99)  # same source: kept once
    assert len(list((folder / "sources").iterdir())) == 1

    restored = dict(zip(image.RESTORED, image.restore(out, engine.models(), Gallery(folder))))
    assert restored["init_image"] == str(kept) and restored["strength"] == 0.7
    again = generate(engine, tmp_path / "again", **{k: restored.get(k, DEFAULTS[k]) for k in CONTROLS})[0]
    assert Path(again).read_bytes() == Path(out).read_bytes()

    *values, info = image.restore(out, engine.models(), Gallery(tmp_path / "empty"))
    assert dict(zip(image.RESTORED, values))["init_image"] is None
    assert "starting image is not in this gallery" in info


def test_gallery_survives_a_restart(engine, data_dir, tmp_path):
    folder = tmp_path / "images"
    made = [p for _ in range(2) for p in generate(engine, folder, seed_mode="increment", batch_size=2)]
    # A new engine and a new gallery over the same folder: what a restarted app sees.
    restarted = Gallery(folder)
    newest = [str(p) for p in restarted.newest()]
    assert newest == list(reversed(sorted(newest))) and len(newest) == 4
    assert newest[0] == made[-1]
    more = generate(load_tiny_demo(data_dir, "cpu"), folder)[0]
    assert str(Gallery(folder).newest()[0]) == more and Path(more).name.startswith("00004-")
