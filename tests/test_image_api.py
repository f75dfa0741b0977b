"""/generate with the add-ons, as a script sends them: the real app in its own process, tiny add-ons in its
models folder."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from engines.image.recipe import read_recipe
from engines.image.tiny_pipeline import build_tiny_controlnet, build_tiny_lora
from tests.app_server import AppServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("melange-image-api")
    (data / "models").mkdir()
    build_tiny_lora(data / "models" / "tiny-lora.safetensors")
    build_tiny_lora(data / "models" / "xl-lora.safetensors", "sdxl")
    build_tiny_controlnet(data / "models" / "tiny-controlnet")
    server = AppServer(data, "--device", "cpu")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    start = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    start.save(folder / "start.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 44, 44))
    mask.save(folder / "mask.png")
    Image.new("L", (64, 64), 255).save(folder / "white.png")
    Image.new("L", (64, 64), 0).save(folder / "black.png")
    # A painted layer: white everywhere, opaque only where to redraw (its brightness alone says "everything").
    layer = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    layer.paste((255, 255, 255, 255), (20, 20, 44, 44))
    layer.save(folder / "layer.png")
    mask.convert("RGBA").save(folder / "opaque-rgba.png")  # black and white, with an alpha channel that is all opaque
    (folder / "notes.png").write_text("not an image")
    names = ("start", "mask", "layer", "opaque-rgba", "notes", "white", "black")
    return {name: str(folder / f"{name}.png") for name in names}


def generate(client, **values):
    base = dict(model="", prompt="a lighthouse at dusk", negative_prompt="", width=64, height=64, steps=3, guidance=5.0,
                sampler="Euler", seed=5, seed_mode="fixed", batch_count=1, batch_size=1, refiner="None", refiner_start=0.8,
                init_image=None, strength=0.75)  # fmt: skip
    return client.predict(**{**base, **values}, api_name="/generate")


def test_inpainting_through_the_api_with_a_mask_image(client, pictures):
    files, summary = generate(client, init_image=handle_file(pictures["start"]), mask=handle_file(pictures["mask"]), strength=1.0, mask_blur=0)
    out = Image.open(files[0]).convert("RGB")
    start = Image.open(pictures["start"])
    assert out.crop((0, 0, 64, 16)).tobytes() == start.crop((0, 0, 64, 16)).tobytes(), "outside the mask: kept"
    assert out.crop((24, 24, 40, 40)).tobytes() != start.crop((24, 24, 40, 40)).tobytes()
    recipe = read_recipe(files[0])
    assert recipe["mask_image"] and recipe["init_image"] and "inpainted" in summary["info"]


@pytest.mark.parametrize("mask", ["layer", "opaque-rgba"])
def test_a_mask_with_an_alpha_channel_reaches_the_engine_as_sent(client, pictures, mask):
    # Gradio's Image input turns other modes into RGB by default, re-encoding the file: a painted layer lost the
    # transparency that is its mask and read as all white ("covers the whole image").
    files, _ = generate(client, init_image=handle_file(pictures["start"]), mask=handle_file(pictures[mask]), strength=1.0, mask_blur=0)
    out, start = Image.open(files[0]).convert("RGB"), Image.open(pictures["start"])
    assert out.crop((0, 0, 64, 16)).tobytes() == start.crop((0, 0, 64, 16)).tobytes(), "outside the mask: kept"
    assert out.crop((24, 24, 40, 40)).tobytes() != start.crop((24, 24, 40, 40)).tobytes(), "inside the mask: redrawn"


def test_lora_hires_controlnet_and_upscale_through_the_api(client, pictures):
    files, summary = generate(
        client, lora_1="tiny-lora.safetensors", lora_weight_1=0.8, hires_scale=1.5, hires_upscaler="Lanczos",
        controlnet="tiny-controlnet", control_image=handle_file(pictures["start"]), control_preprocessor="canny", upscale=2.0,
    )  # fmt: skip
    assert Image.open(files[0]).size == (192, 192)
    recipe = read_recipe(files[0])
    assert recipe["loras"][0]["name"] == "tiny-lora.safetensors" and len(recipe["loras"][0]["hash"]) == 10
    assert recipe["hires_scale"] == 1.5 and recipe["controlnet"] == "tiny-controlnet" and recipe["upscale"] == 2.0


@pytest.mark.parametrize(
    "values, message",
    [
        # Gradio's Image component refuses a file that is not an image before the handler sees it: the control and
        # the file are named (ui.common.name_input_errors), not PIL's own complaint.
        ({"controlnet": "tiny-controlnet", "control_image": "notes"}, "Control image: the file 'notes.png' is not an image that can be read"),
        ({"lora_1": "xl-lora.safetensors"}, "was made for"),
        # Outpainting to 10,000 px: the slider's own bound answers first.
        ({"init_image": "start", "outpaint": ["left", "right"], "outpaint_pixels": 4992}, "4992 is greater than maximum value 1024"),
        ({"init_image": "start", "mask": "white"}, "covers the whole image"),
        ({"init_image": "start", "mask": "black"}, "The mask is empty"),
        ({"init_image": "start", "mask": "notes"}, "mask_image: the file 'notes.png' is not an image that can be read"),
    ],
)
def test_bad_add_on_input_gets_a_clear_message_and_the_app_keeps_serving(server, client, pictures, values, message):
    values = {k: handle_file(pictures[v]) if isinstance(v, str) and v in pictures else v for k, v in values.items()}
    with pytest.raises(AppError, match=message):
        generate(client, **values)
    assert server.health()["app"] == "melange"
    files, _ = generate(client)
    assert Image.open(files[0]).size == (64, 64)
