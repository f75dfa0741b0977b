"""The Image panel in a real browser on the real tiny pipeline: previews, gallery, restore from a dropped PNG."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def open_image_tab(page, url):
    page.goto(url)
    page.get_by_role("tab", name="Image").click()


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_generate_shows_previews_and_a_gallery_then_a_dropped_png_restores_everything(real_app, page, tmp_path):
    open_image_tab(page, real_app.url)
    page.fill("#image-prompt textarea", "a harbour in the rain")
    page.fill("#image-negative textarea", "people")
    set_number(page, "image-steps", 24)  # the default preset is 256²
    page.fill("#image-seed input", "777")
    page.click("#image-generate")
    # The preview appears while it draws, before the finished image and its recipe line.
    expect(page.locator("#image-preview img")).to_be_visible(timeout=120_000)
    expect(page.locator("#image-info")).to_contain_text("Seed 777", timeout=120_000)
    expect(page.locator("#image-gallery img").first).to_be_visible()
    src = page.locator("#image-result img").get_attribute("src")
    png = page.request.get(src).body()
    assert b"a harbour in the rain" in png and b"Model hash: " in png

    # Change everything, then drop the PNG: every control comes back.
    page.reload()
    page.get_by_role("tab", name="Image").click()
    page.fill("#image-prompt textarea", "something else")
    page.fill("#image-seed input", "5")
    set_number(page, "image-steps", 3)
    page.get_by_label("512²").check()
    dropped = tmp_path / "dropped.png"
    dropped.write_bytes(png)
    page.locator("#image-recipe input[type=file]").set_input_files(str(dropped))
    expect(page.locator("#image-prompt textarea")).to_have_value("a harbour in the rain", timeout=30_000)
    expect(page.locator("#image-negative textarea")).to_have_value("people")
    expect(page.locator("#image-seed input")).to_have_value("777")
    expect(page.locator("#image-steps input[type=number]")).to_have_value("24")
    expect(page.locator("#image-width input[type=number]")).to_have_value("256")
    expect(page.locator("#image-info")).to_contain_text("Restored the settings")
    # ...and generating again makes the very same PNG.
    page.click("#image-generate")
    expect(page.locator("#image-info")).to_contain_text("Seed 777", timeout=120_000)
    again = page.request.get(page.locator("#image-result img").get_attribute("src")).body()
    assert again == png


def test_cancel_stops_a_long_run_and_the_panel_keeps_working(real_app, page):
    open_image_tab(page, real_app.url)
    page.fill("#image-prompt textarea", "a very long run")
    page.get_by_label("1024²").check()
    set_number(page, "image-steps", 150)
    set_number(page, "image-batch-count", 5)
    page.click("#image-generate")
    expect(page.locator("#image-preview img")).to_be_visible(timeout=120_000)
    page.click("#image-cancel")
    expect(page.locator("#image-info")).to_contain_text("Cancelled after step", timeout=30_000)
    page.fill("#image-seed input", "42")
    set_number(page, "image-batch-count", 1)
    page.get_by_label("256²").check()
    set_number(page, "image-steps", 4)
    page.click("#image-generate")
    expect(page.locator("#image-info")).to_contain_text("Seed 42", timeout=120_000)


def test_a_file_that_is_not_a_png_recipe_gets_a_clear_message(real_app, page, tmp_path):
    open_image_tab(page, real_app.url)
    bogus = tmp_path / "fake.png"
    bogus.write_bytes(b"definitely not a png")
    page.locator("#image-recipe input[type=file]").set_input_files(str(bogus))
    expect(page.locator(".toast-body").first).to_contain_text("not an image", timeout=30_000)
    assert real_app.health()["app"] == "melange"


def test_a_gallery_image_gives_back_its_settings(real_app, page):
    open_image_tab(page, real_app.url)
    page.fill("#image-prompt textarea", "a windmill at noon")
    page.fill("#image-seed input", "4242")
    page.click("#image-generate")
    expect(page.locator("#image-info")).to_contain_text("Seed 4242", timeout=120_000)
    page.fill("#image-prompt textarea", "something else")
    page.fill("#image-seed input", "1")
    page.locator("#image-gallery img").first.click()
    expect(page.locator("#image-info")).to_contain_text("Selected", timeout=30_000)
    page.click("#image-reuse")
    expect(page.locator("#image-prompt textarea")).to_have_value("a windmill at noon", timeout=30_000)
    expect(page.locator("#image-seed input")).to_have_value("4242")


def test_paint_a_mask_over_the_start_image_and_inpaint_it(real_app, page, tmp_path):
    """Drop a start image, paint over part of it in the mask editor, Generate: only the painted part changes, and
    the PNG's recipe keeps the mask."""
    import io
    import json

    from PIL import Image

    start = tmp_path / "start.png"
    Image.linear_gradient("L").resize((256, 256)).convert("RGB").save(start)  # the default preset is 256²
    open_image_tab(page, real_app.url)
    page.fill("#image-prompt textarea", "a red door")
    page.fill("#image-seed input", "31")
    page.get_by_text("Image to image").click()
    page.locator("#image-init input[type=file]").set_input_files(str(start))
    set_number(page, "image-strength", 1)
    page.get_by_text("Inpaint and outpaint").click()
    canvas = page.locator("#image-mask canvas").first
    expect(canvas).to_be_visible(timeout=30_000)
    page.locator("#image-mask button[aria-label='Brush']").click()
    box = canvas.bounding_box()
    # A horizontal stroke across the middle of the picture, which fills the canvas's centre.
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * (0.4 + 0.02 * step), y, steps=2)
    page.mouse.up()
    page.click("#image-generate")
    expect(page.locator("#image-info")).to_contain_text("inpainted", timeout=120_000)
    expect(page.locator("#image-info")).to_contain_text("Seed 31")
    png = page.request.get(page.locator("#image-result img").get_attribute("src")).body()
    recipe = json.loads(Image.open(io.BytesIO(png)).text["melange"])
    assert recipe["mask_image"] and recipe["init_image"] and recipe["strength"] == 1.0
    mask = Image.open(real_app.data_dir / "images" / "sources" / recipe["mask_image"]).getchannel("A")
    assert mask.size == (256, 256)
    painted = mask.getbbox()
    assert painted and painted[0] > 20 and painted[2] < 236 and painted[1] > 60 and painted[3] < 200, f"a band across the middle: {painted}"
    out = Image.open(io.BytesIO(png)).convert("RGB")
    original = Image.open(start)
    assert out.crop((0, 0, 256, 40)).tobytes() == original.crop((0, 0, 256, 40)).tobytes(), "unpainted: untouched"
    assert out.crop(painted).tobytes() != original.crop(painted).tobytes(), "painted: redrawn"
    assert real_app.health()["app"] == "melange"
