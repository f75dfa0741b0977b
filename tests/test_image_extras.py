"""LoRA, inpainting, outpainting, hi-res fix, ControlNet and upscaling on the real diffusers engine (CPU), with
tiny random-weight add-ons built locally like the demo pipeline: a peft LoRA, a 9-channel inpainting UNet,
a ControlNet and a ×4 super-resolution pipeline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.base import ImageParams, InputError, LoraWeight
from engines.image.diffusion import load_tiny_demo
from engines.image.tiny_pipeline import build_tiny_controlnet, build_tiny_lora, ensure_tiny_pipeline

SMALL = ImageParams(prompt="a lighthouse at dusk", width=64, height=64, steps=3, guidance=6.0, seed=7)
LORA = "tiny-lora.safetensors"


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    models = data / "models"
    models.mkdir()
    build_tiny_lora(models / LORA)
    build_tiny_lora(models / "tiny-lora-xl.safetensors", "sdxl")
    build_tiny_controlnet(models / "tiny-controlnet")
    build_tiny_controlnet(models / "tiny-controlnet-xl", "sdxl")
    for family in ("sd-inpaint", "sd-upscaler"):
        ensure_tiny_pipeline(data, family)
    return data


@pytest.fixture(scope="module")
def engine(data_dir):
    return load_tiny_demo(data_dir, "cpu")


@pytest.fixture(scope="module")
def files(engine, tmp_path_factory) -> dict[str, str]:
    """A start image (a real output of the engine), masks, and things that are not images."""
    folder = tmp_path_factory.mktemp("inputs")
    out = {"start": folder / "start.png", "mask": folder / "mask.png", "black": folder / "black.png", "white": folder / "white.png"}
    engine.generate(replace(SMALL, seed=1)).image.save(out["start"])
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    mask.save(out["mask"])
    Image.new("L", (64, 64), 0).save(out["black"])
    Image.new("L", (64, 64), 255).save(out["white"])
    Image.new("L", (48, 64), 255).save(folder / "small-mask.png")
    out["small-mask"] = folder / "small-mask.png"
    big = Image.open(out["start"]).resize((160, 128))
    big.save(folder / "big.png")
    out["big"] = folder / "big.png"
    big_mask = Image.new("RGBA", (160, 128), (0, 0, 0, 0))  # a painted layer: opaque where to redraw
    big_mask.paste((255, 255, 255, 255), (110, 30, 130, 50))
    big_mask.save(folder / "big-mask.png")
    out["big-mask"] = folder / "big-mask.png"
    (folder / "notes.png").write_text("not an image")
    out["text"] = folder / "notes.png"
    return {k: str(v) for k, v in out.items()}


def test_the_models_folder_tells_add_ons_apart(engine):
    assert sorted(engine.loras()) == sorted([LORA, "tiny-lora-xl.safetensors"])
    assert engine.controlnets() == ["tiny-controlnet", "tiny-controlnet-xl"]
    assert engine.upscalers() == ["Lanczos", "melange-tiny-upscaler-x4"]
    models = engine.models()
    assert "melange-tiny-sd-inpaint" in models
    assert not {LORA, "tiny-controlnet", "melange-tiny-upscaler-x4"} & set(models), "add-ons are not base models"


# ---------------------------------------------------------------- LoRA


def test_a_lora_changes_the_image_and_the_plain_model_comes_back_bit_for_bit(engine):
    plain = engine.generate(SMALL)
    with_lora = engine.generate(replace(SMALL, loras=(LoraWeight(LORA, 1.0),)))
    assert with_lora.lora_hashes == (with_lora.lora_hashes[0],) and len(with_lora.lora_hashes[0]) == 10
    assert np.abs(pixels(with_lora.image) - pixels(plain.image)).mean() > 0.05
    again = engine.generate(replace(SMALL, loras=(LoraWeight(LORA, 1.0),)))
    assert again.image.tobytes() == with_lora.image.tobytes(), "fused once, the same image each time"
    weaker = engine.generate(replace(SMALL, loras=(LoraWeight(LORA, 0.3),)))
    assert weaker.image.tobytes() != with_lora.image.tobytes(), "a new weight is fused anew"
    assert engine.generate(SMALL).image.tobytes() == plain.image.tobytes(), "unfused exactly: no drift from fusing"


def test_a_lora_for_another_family_or_unknown_is_refused_and_the_engine_keeps_serving(engine):
    with pytest.raises(InputError, match="LoRA tiny-lora-xl.safetensors was made for .* but .* pick a LoRA made for this model"):
        engine.generate(replace(SMALL, loras=(LoraWeight("tiny-lora-xl.safetensors"),)))
    with pytest.raises(InputError, match="Unknown LoRA"):
        engine.generate(replace(SMALL, loras=(LoraWeight("nowhere.safetensors"),)))
    with pytest.raises(InputError, match="Unknown LoRA"):
        engine.generate(replace(SMALL, loras=(LoraWeight("/etc/passwd"),)))
    assert engine.generate(SMALL).image.size == (64, 64)


def test_a_lora_still_applies_with_fused_qkv_projections(engine, data_dir):
    from engines.image.diffusion import SpeedOptions

    fast = load_tiny_demo(data_dir, "cpu", speed=SpeedOptions(fuse_qkv=True))
    lora = replace(SMALL, loras=(LoraWeight(LORA, 1.0),))
    fused, reference = pixels(fast.generate(lora).image), pixels(engine.generate(lora).image)
    assert np.abs(fused - reference).max() <= 3, "the LoRA reaches the fused q/k/v projections too"
    assert np.abs(pixels(fast.generate(SMALL).image) - pixels(engine.generate(SMALL).image)).max() <= 3, "and leaves them"


# ---------------------------------------------------------------- inpainting and outpainting


def test_inpainting_redraws_the_mask_and_keeps_the_rest(engine, files):
    start = pixels(Image.open(files["start"]))
    result = engine.generate(replace(SMALL, init_image=files["start"], mask_image=files["mask"], strength=1.0, mask_blur=2))
    out = pixels(result.image)
    assert result.image.size == (64, 64)
    assert np.array_equal(out[:16], start[:16]) and np.array_equal(out[:, 48:], start[:, 48:]), "outside the mask: untouched"
    assert np.abs(out[28:36, 28:36] - start[28:36, 28:36]).mean() > 10, "inside: redrawn"


def test_an_inpainting_checkpoint_with_nine_input_channels_inpaints(engine, files):
    params = replace(SMALL, model="melange-tiny-sd-inpaint", init_image=files["start"], mask_image=files["mask"], strength=1.0)
    result = engine.generate(params)
    assert engine._resident["melange-tiny-sd-inpaint"].pipe.unet.config.in_channels == 9
    assert result.image.size == (64, 64) and result.model == "melange-tiny-sd-inpaint"
    with pytest.raises(InputError, match="is an inpainting model"):
        engine.generate(replace(SMALL, model="melange-tiny-sd-inpaint"))


def test_only_the_masked_area_is_redrawn_at_full_resolution_into_the_big_image(engine, files):
    start = pixels(Image.open(files["big"]))
    params = replace(SMALL, init_image=files["big"], mask_image=files["big-mask"], inpaint_only_masked=True, inpaint_padding=8, strength=1.0, mask_blur=0)
    out = pixels(engine.generate(params).image)
    assert out.shape[:2] == (128, 160), "the start image keeps its own size"
    assert np.array_equal(out[:, :90], start[:, :90]), "far from the mask nothing changes"
    assert np.abs(out[32:48, 112:128] - start[32:48, 112:128]).mean() > 10


def test_a_photo_stored_sideways_is_read_upright_and_its_mask_fits(tmp_path):
    from engines.image.inpaint import ORIENTATION, open_mask, read_image

    stored = Image.new("RGB", (48, 64), (200, 10, 10))  # what the camera wrote: turned 90°
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90° clockwise to show"
    stored.save(tmp_path / "photo.jpg", exif=exif)
    photo = read_image(str(tmp_path / "photo.jpg"), "start image")
    assert photo.size == (64, 48)
    Image.new("L", (64, 48), 255).save(tmp_path / "mask.png")  # painted over the photo as the browser shows it
    assert open_mask(str(tmp_path / "mask.png"), photo.size).size == (64, 48)
    # The recipe's kept copy is upright too, so a restored recipe starts from the same picture.
    from engines.image.gallery import Gallery

    kept = Gallery(tmp_path / "gallery").keep_source(tmp_path / "photo.jpg")
    assert read_image(str(kept), "start image").size == (64, 48)


@pytest.mark.parametrize(
    "mask, message",
    [
        ("small-mask", "The mask is 48×64 but the start image is 64×64"),
        ("black", "The mask is empty"),
        ("white", "covers the whole image"),
        ("text", "The mask notes.png is not an image"),
    ],
)
def test_bad_masks_are_refused_with_a_clear_message(engine, files, mask, message):
    with pytest.raises(InputError, match=message):
        engine.generate(replace(SMALL, init_image=files["start"], mask_image=files[mask]))


def test_outpainting_extends_the_canvas_and_keeps_the_middle(engine, files):
    start = pixels(Image.open(files["start"]))
    params = replace(SMALL, init_image=files["start"], outpaint=("left", "down"), outpaint_pixels=32, strength=1.0, mask_blur=4)
    out = pixels(engine.generate(params).image)
    assert out.shape[:2] == (96, 96)
    assert np.array_equal(out[:40, 56:], start[:40, 24:]), "the old image, away from the seam, is kept"
    assert np.abs(out[:, :24].mean(axis=(0, 1)) - start[:, :1].mean(axis=(0, 1))).max() > 0, "the new strip is drawn"


def test_outpainting_past_the_family_limit_is_refused(engine, files):
    params = replace(SMALL, width=1024, height=1024, init_image=files["start"], outpaint=("left", "right"), outpaint_pixels=512)
    with pytest.raises(InputError, match="makes the image 2048×1024, past the 1024 px this model draws well"):
        engine.generate(params)
    with pytest.raises(InputError, match="Outpainting adds a multiple of 8 between 8 and 1024 pixels, got 9000"):
        engine.generate(replace(params, outpaint_pixels=9000))  # to 10,000 px wide
    assert engine.generate(SMALL).image.size == (64, 64)


# ---------------------------------------------------------------- hi-res fix, upscale


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_the_hi_res_fix_draws_small_then_refines_big(engine, upscaler):
    params = replace(SMALL, hires_scale=2.0, hires_upscaler=upscaler, hires_strength=0.5, hires_steps=4)
    result = engine.generate(params)
    assert result.image.size == (128, 128)
    plain = engine.generate(SMALL).image.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.abs(pixels(result.image) - pixels(plain)).mean() > 1, "the second pass redraws"
    steps = []
    engine.generate(params, on_step=lambda done, total: steps.append((done, total)))
    assert steps[-1] == (3 + 2, 3 + 2), "one progress over both passes: 3 steps, then 4 × 0.5"


def test_upscaling_with_lanczos_and_with_a_super_resolution_model(engine):
    lanczos = engine.generate(replace(SMALL, upscale=2.0))
    assert lanczos.image.size == (128, 128) and lanczos.upscaler_hash == ""
    plain = engine.generate(SMALL).image
    assert lanczos.image.tobytes() == plain.resize((128, 128), Image.Resampling.LANCZOS).tobytes()
    sr = engine.generate(replace(SMALL, upscale=3.0, upscaler="melange-tiny-upscaler-x4"))
    assert sr.image.size == (192, 192) and len(sr.upscaler_hash) == 10
    again, digest = engine.upscale_image(plain, replace(SMALL, upscale=3.0, upscaler="melange-tiny-upscaler-x4"))
    assert again.tobytes() == sr.image.tobytes() and digest == sr.upscaler_hash, "upscaling later gives the same image"
    with pytest.raises(InputError, match="Unknown upscaler"):
        engine.generate(replace(SMALL, upscale=2.0, upscaler="nothing-here"))
    with pytest.raises(InputError, match="super-resolution model: choose it as the upscaler"):
        engine.generate(replace(SMALL, model="melange-tiny-upscaler-x4"))


# ---------------------------------------------------------------- ControlNet


def test_controlnet_steers_the_image_with_canny_edges(engine, files):
    params = replace(SMALL, controlnet="tiny-controlnet", control_image=files["start"], control_preprocessor="canny")
    steered = engine.generate(params)
    assert len(steered.controlnet_hash) == 10
    assert np.abs(pixels(steered.image) - pixels(engine.generate(SMALL).image)).mean() > 0.5
    off = engine.generate(replace(params, control_scale=0.0))
    assert off.image.tobytes() == engine.generate(SMALL).image.tobytes(), "scale 0: as if there were none"
    late = engine.generate(replace(params, control_start=0.5, control_end=1.0))
    assert late.image.tobytes() != steered.image.tobytes(), "start and end bound when it steers"
    edges = engine.generate(replace(params, control_preprocessor="none"))
    assert edges.image.tobytes() != steered.image.tobytes(), "the preprocessor matters"


def test_controlnet_with_img2img_and_inpainting(engine, files):
    common = dict(controlnet="tiny-controlnet", control_image=files["start"], control_preprocessor="canny", init_image=files["start"])
    assert engine.generate(replace(SMALL, **common, strength=0.7)).image.size == (64, 64)
    assert engine.generate(replace(SMALL, **common, mask_image=files["mask"])).image.size == (64, 64)


def test_bad_controlnet_input_is_refused(engine, files):
    with pytest.raises(InputError, match="The control image notes.png is not an image"):
        engine.generate(replace(SMALL, controlnet="tiny-controlnet", control_image=files["text"]))
    with pytest.raises(InputError, match="ControlNet tiny-controlnet-xl was made for .* pick a ControlNet made for this model"):
        engine.generate(replace(SMALL, controlnet="tiny-controlnet-xl", control_image=files["start"]))
    with pytest.raises(InputError, match="Unknown ControlNet"):
        engine.generate(replace(SMALL, controlnet="../../etc", control_image=files["start"]))
    assert engine.generate(SMALL).image.size == (64, 64), "the engine keeps serving"


# ---------------------------------------------------------------- through the panel: recipe in, same image out


def panel_generate(engine, folder: Path, **values) -> str:
    import inspect
    import threading

    from engines.image.gallery import Gallery
    from ui import image

    signature = inspect.signature(image.read_controls).parameters
    defaults = {n: p.default for n, p in signature.items() if p.default is not inspect.Parameter.empty}
    base = dict(model="", prompt="a lighthouse at dusk", negative_prompt="fog", width=64, height=64, steps=3, guidance=6.0,
                sampler="Euler a", seed=11, seed_mode="fixed", batch_count=1, batch_size=1, refiner=image.NO_REFINER,
                refiner_start=0.8, init_image=None, strength=0.75)  # fmt: skip
    values = {**defaults, **base, **values}
    paths = [u[1] for u in image.generate(engine, Gallery(folder), threading.Event(), *(values[n] for n in signature)) if isinstance(u[1], str)]
    return paths[-1]


def restored_controls(png: str, engine, folder: Path) -> dict:
    from engines.image.gallery import Gallery
    from ui import image

    *values, info = image.restore(png, engine.models(), Gallery(folder), engine.loras())
    assert "not in" not in info, info
    return {k: v for k, v in zip(image.RESTORED, values) if k != "size"}


@pytest.mark.parametrize(
    "settings",
    [
        {"lora_1": LORA, "lora_weight_1": 0.7, "hires_scale": 1.5, "hires_upscaler": "Lanczos", "hires_strength": 0.6,
         "controlnet": "tiny-controlnet", "control_image": "start", "control_preprocessor": "canny", "control_scale": 0.8,
         "canny_low": 50, "upscale": 2.0},
        {"init_image": "start", "mask": "painted", "strength": 0.9, "mask_blur": 3, "outpaint": ["right"], "outpaint_pixels": 16,
         "upscale": 1.5, "upscaler": "melange-tiny-upscaler-x4"},
    ],
    ids=["lora-hires-controlnet-upscale", "inpaint-outpaint-sr"],
)
def test_drop_the_png_back_and_everything_comes_back_and_draws_the_same(engine, files, tmp_path, settings):
    from ui import image

    painted = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    painted.paste((255, 255, 255, 255), (10, 10, 30, 30))
    painted.save(tmp_path / "layer.png")
    inputs = {"start": files["start"], "painted": {"background": files["start"], "layers": [str(tmp_path / "layer.png")], "composite": None}}
    values = {k: inputs.get(v, v) if isinstance(v, str) else v for k, v in settings.items()}
    folder = tmp_path / "images"
    png = panel_generate(engine, folder, **values)
    restored = restored_controls(png, engine, folder)
    again = panel_generate(engine, tmp_path / "again", **restored)
    assert Path(again).read_bytes() == Path(png).read_bytes(), "the same image again, from the recipe alone"
    for key, value in settings.items():
        if key in ("control_image", "init_image"):
            assert Image.open(restored[key]).tobytes() == Image.open(files["start"]).tobytes(), key
        elif key == "mask":
            mask = Image.open(restored["mask"]["layers"][0]).getchannel("A")
            assert mask.tobytes() == painted.getchannel("A").tobytes()
        else:
            assert restored[key] == value, key
    sources = sorted(p.suffix for p in (folder / "sources").iterdir())
    assert sources and set(sources) == {".png"}, "kept inputs are re-encoded as PNG"
    assert image.read_recipe(png)["version"] == 1
