"""The add-ons' handlers on the fake engine: the mask editor's value, Upscale, presets, one-click downloads."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from engines.fake import FakeImageEngine
from engines.image.gallery import Gallery
from engines.image.recipe import read_recipe
from ui import image, image_downloads
from ui.presets import ImagePreset, load_presets
from tests.fake_hub import FakeHub, calling

CONTROLS = list(inspect.signature(image.read_controls).parameters)
OFF = {n: p.default for n, p in inspect.signature(image.read_controls).parameters.items() if p.default is not inspect.Parameter.empty}
BASE = dict(model="fake-colour", prompt="a red fox", negative_prompt="", width=64, height=64, steps=4, guidance=7.0,
            sampler="Euler", seed=42, seed_mode="fixed", batch_count=1, batch_size=1, refiner=image.NO_REFINER,
            refiner_start=0.8, init_image=None, strength=0.75)  # fmt: skip


def layer(path: Path, box, size=(64, 64)) -> str:
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), box)  # any colour: the stroke's opacity is the mask
    im.save(path)
    return str(path)


def test_the_editors_painted_layers_become_one_mask(tmp_path):
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(start)
    value = {"background": str(start), "layers": [layer(tmp_path / "a.png", (0, 0, 10, 10)), layer(tmp_path / "b.png", (50, 50, 64, 64))], "composite": None}
    mask_path, background = image.read_mask(value)
    assert background == str(start)
    alpha = Image.open(mask_path).getchannel("A")
    assert alpha.getpixel((5, 5)) == 255 and alpha.getpixel((55, 55)) == 255 and alpha.getpixel((30, 30)) == 0
    assert image.read_mask(value)[0] == mask_path, "the same strokes, the same file"
    assert image.read_mask({**value, "layers": []}) == (None, str(start)), "nothing painted: no inpainting"
    assert image.read_mask(str(start)) == (str(start), None), "the API sends a mask image as it is"
    shown = image.editor_value(str(start), mask_path)
    assert shown["background"] == str(start) and Image.open(shown["layers"][0]).getchannel("A").tobytes() == alpha.tobytes()


def test_a_mask_painted_with_the_editor_inpaints_and_is_kept_with_the_recipe(tmp_path):
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(start)
    value = {"background": str(start), "layers": [layer(tmp_path / "a.png", (0, 0, 10, 10))], "composite": None}
    values = {**OFF, **BASE, "mask": value, "strength": 1.0}
    updates = list(image.generate(FakeImageEngine(), Gallery(tmp_path / "images"), threading.Event(), *(values[n] for n in CONTROLS)))
    png = [u[1] for u in updates if isinstance(u[1], str)][-1]
    recipe = read_recipe(png)
    assert recipe["init_image"].endswith(".png") and recipe["mask_image"].endswith(".png") and recipe["mask_blur"] == 4
    restored = dict(zip(image.RESTORED, image.restore(png, ["fake-colour"], Gallery(tmp_path / "images"))))
    assert Image.open(restored["mask"]["layers"][0]).getchannel("A").getpixel((5, 5)) == 255
    assert restored["init_image"] == restored["mask"]["background"]


def test_a_layer_that_is_not_an_image_is_refused(tmp_path):
    bogus = tmp_path / "layer.png"
    bogus.write_text("<svg/>")
    with pytest.raises(gr.Error, match="painted layer .* is not an image"):
        image.read_mask({"background": None, "layers": [str(bogus)], "composite": None})
    with pytest.raises(gr.Error, match="must be an uploaded image file"):
        image.checked_upload({"path": "/etc/passwd"}, "start image")


def test_upscale_saves_a_bigger_copy_whose_recipe_makes_it_again(tmp_path):
    engine, gallery = FakeImageEngine(), Gallery(tmp_path)
    values = {**OFF, **BASE}
    png = [u[1] for u in image.generate(engine, gallery, threading.Event(), *(values[n] for n in CONTROLS)) if isinstance(u[1], str)][-1]
    path, info = image.upscale_finished(engine, gallery, png, None, 2.0, "Lanczos")
    assert Image.open(path).size == (128, 128) and "Upscaled" in info and Path(path).name != Path(png).name
    recipe = read_recipe(path)
    assert recipe["upscale"] == 2.0 and recipe["upscaler"] == "Lanczos" and recipe["seed"] == 42
    with pytest.raises(gr.Error, match="upscaled already"):
        image.upscale_finished(engine, gallery, path, None, 2.0, "Lanczos")
    # The result box's value comes from the page: looked up by name in the images folder only.
    again, _ = image.upscale_finished(engine, gallery, None, {"path": f"{tmp_path}/../{Path(png).name}"}, 1.5, "Lanczos")
    assert Image.open(again).size == (96, 96)
    with pytest.raises(gr.Error, match="Select an image"):
        image.upscale_finished(engine, gallery, None, {"path": "/etc/passwd"}, 2.0, "Lanczos")


def test_presets_set_the_add_ons_and_switch_them_off_again():
    hires = ImagePreset(name="h", hires_scale=2.0, hires_strength=0.4, upscale=2.0, loras=[{"name": "x.safetensors", "weight": 0.5}])
    plain = ImagePreset(name="p")
    on = dict(zip(image.PRESET_EXTRAS, image.preset_extras(hires)))
    off = dict(zip(image.PRESET_EXTRAS, image.preset_extras(plain)))
    assert (on["hires_scale"], on["hires_strength"], on["upscale"], on["lora_1"], on["lora_weight_1"]) == (2.0, 0.4, 2.0, "x.safetensors", 0.5)
    assert (off["hires_scale"], off["upscale"], off["lora_1"], off["controlnet"]) == (1.0, 1.0, image.NONE, image.NONE)
    shipped = load_presets().image
    assert any(p.hires_scale > 1 for p in shipped), "a shipped preset shows the hi-res fix"
    for preset in shipped:
        assert len(image.apply_preset(preset.name, shipped)) == 10 + len(image.PRESET_EXTRAS)


# ---------------------------------------------------------------- one-click downloads


def test_each_machine_is_offered_the_models_its_profile_names():
    profiles = {p.name: p for p in load_presets().profiles}
    catalog = image_downloads.load_catalog()
    assert [i.repo for i in image_downloads.suggested(profiles["CPU laptop"], catalog)] == ["stabilityai/sd-turbo"]
    assert [i.repo for i in image_downloads.suggested(profiles["24 GB GPU"], catalog)] == [
        "stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/stable-diffusion-xl-refiner-1.0",
    ]  # fmt: skip
    turbo = catalog["stabilityai/sd-turbo"]
    text = image_downloads.table([turbo], "cpu", set())
    assert "5.2 GB" in text and "Community License" in text
    assert "2.6 GB" in image_downloads.table([turbo], "cuda", {turbo.repo}) and "✓ downloaded" in image_downloads.table([turbo], "cuda", {turbo.repo})


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from engines.image.tiny_pipeline import ensure_tiny_pipeline

    folder = ensure_tiny_pipeline(tmp_path_factory.mktemp("data"))
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    hub = FakeHub({"stabilityai/sd-turbo": files})
    yield hub
    hub.close()


def test_one_click_download_fetches_the_model_with_progress_and_offline_says_so(hub, tmp_path):
    code = (
        "import json\n"
        "from ui.image_downloads import fetch\n"
        "seen = []\n"
        "class Bar:\n"
        "    def __call__(self, fraction, desc=''): seen.append((fraction, desc))\n"
        "fetch('stabilityai/sd-turbo', 'cpu', Bar())\n"
        "from engines.image.models import cached_hub_models\n"
        "print(json.dumps({'cached': cached_hub_models(), 'last': seen[-1]}))\n"
    )
    result = hub.run(code, tmp_path / "hf")
    assert result["cached"] == ["stabilityai/sd-turbo"], "the picker lists it from the cache from now on"
    fraction, desc = result["last"]
    assert fraction == 1.0 and desc.startswith("Downloading stabilityai/sd-turbo")
    missing = hub.run(calling("__import__('ui.image_downloads', fromlist=['x']).fetch('stabilityai/sdxl-turbo', 'cpu')"), tmp_path / "hf")
    assert missing["error"] == "Error" and "sdxl-turbo" in missing["message"]
