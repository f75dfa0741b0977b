"""Image panel handlers on the fake engine: fast checks of the glue."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from PIL import Image

from engines.fake import FakeImageEngine
from ui import image


def make_image(tmp_path, **overrides):
    args = dict(prompt="a red fox", negative_prompt="", steps=4, guidance=7.0, seed=42, width=64, height=64, sampler="Euler")
    args.update(overrides)
    return image.generate(FakeImageEngine(), tmp_path, **args)


def test_image_is_saved_as_png_with_its_recipe(tmp_path):
    path, info = make_image(tmp_path)
    with Image.open(path) as im:
        assert im.size == (64, 64)
        assert "a red fox" in im.info["parameters"]
        assert "Seed: 42" in im.info["parameters"]
        recipe = json.loads(im.info["melange"])
    assert recipe["seed"] == 42 and recipe["steps"] == 4 and recipe["model"] == "fake-colour"
    assert "Seed 42" in info


def test_same_seed_same_image_and_a_random_seed_is_reported(tmp_path):
    first, _ = make_image(tmp_path)
    second, _ = make_image(tmp_path)
    assert first != second, "every image gets its own file"
    assert Image.open(first).tobytes() == Image.open(second).tobytes()
    _, info = make_image(tmp_path, seed=-1)
    assert "Seed -1" not in info and "Seed " in info


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"width": 100}, "multiple of 8"),
        ({"steps": 0}, "Steps"),
        ({"steps": 10**6}, "Steps"),
        ({"guidance": -1.0}, "Guidance"),
        ({"seed": 1.5}, "whole number"),
        ({"seed": None}, "whole number"),
        ({"sampler": "Nonsense"}, "Unknown sampler"),
    ],
)
def test_bad_image_input_gets_a_clear_message(tmp_path, overrides, message):
    with pytest.raises(gr.Error, match=message):
        make_image(tmp_path, **overrides)
    assert list(tmp_path.iterdir()) == []
