"""Each panel does its round trip in a real browser, on the real embedded models."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests import fixtures

pytestmark = pytest.mark.browser


def bot_text(page) -> str:
    bots = page.locator('#chatbot [data-testid="bot"]')
    return bots.last.inner_text() if bots.count() else ""


def watch_reply(page, until, timeout: float = 120) -> list[str]:
    """Poll the last bot message and return every distinct text it showed until `until(texts)`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = bot_text(page)
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        if until(seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the reply did not get there in {timeout} s; saw {seen[-3:]}")


def test_chat_reply_streams_in(real_app, page):
    page.goto(real_app.url)
    page.fill("#chat-input textarea", "Write a short poem about the sea.")
    page.press("#chat-input textarea", "Enter")
    expect(page.locator('#chatbot [data-testid="user"]').last).to_have_text("Write a short poem about the sea.")
    expect(page.locator("#chat-stats")).to_contain_text("tok/s", timeout=120_000)
    watch_reply(page, lambda texts: bool(texts))
    final = bot_text(page)
    assert len(final.split()) >= 5
    assert "<|im_" not in final
    assert real_app.health()["engines"]["chat"]["loaded"] is True


def test_chat_tokens_arrive_one_by_one_and_stop_keeps_the_partial_reply(real_app, page):
    page.goto(real_app.url)
    page.fill("#chat-input textarea", "Tell me a long story about a dragon who learns to bake bread.")
    page.press("#chat-input textarea", "Enter")
    seen = watch_reply(page, lambda texts: len(texts) >= 4)
    assert all(len(a) < len(b) for a, b in zip(seen, seen[1:])), "the reply should only grow while streaming"
    page.click("#chat-stop")
    time.sleep(1.0)
    stopped = bot_text(page)
    time.sleep(1.5)
    assert bot_text(page) == stopped, "nothing more arrives after Stop"
    assert stopped.startswith(seen[0]) and stopped, "the partial reply stays on the page"
    # After a reload the conversation is in the sidebar, partial reply included.
    page.reload()
    page.get_by_label("Tell me a long story about a dragon").check()
    expect(page.locator('#chatbot [data-testid="bot"]').last).to_contain_text(stopped[:40])
    # The engine is free again: a new message gets a reply.
    page.fill("#chat-input textarea", "What is the capital of France?")
    page.press("#chat-input textarea", "Enter")
    expect(page.locator('#chatbot [data-testid="bot"]').last).to_contain_text("Paris", timeout=120_000)


def test_empty_chat_message_gets_a_clear_message(real_app, page):
    page.goto(real_app.url)
    page.fill("#chat-input textarea", "   ")
    page.click("#chat-send")
    expect(page.locator(".toast-body").first).to_contain_text("The message is empty")
    assert page.locator('#chatbot [data-testid="user"]').count() == 0


def test_image_appears_with_its_recipe(real_app, page):
    page.goto(real_app.url)
    page.get_by_role("tab", name="Image").click()
    expect(page.locator("#image-demo-notice")).to_contain_text("Demo pipeline")
    page.fill("#image-prompt textarea", "a lighthouse at dusk")
    page.fill("#image-seed input", "1234")
    page.click("#image-generate")
    expect(page.locator("#image-result img")).to_be_visible(timeout=120_000)
    expect(page.locator("#image-info")).to_contain_text("Seed 1234")
    src = page.locator("#image-result img").get_attribute("src")
    assert src and re.search(r"\.png", src)
    image = page.request.get(src)
    assert image.ok and image.body()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"a lighthouse at dusk" in image.body(), "the PNG carries its recipe"
    assert real_app.health()["engines"]["image"]["demo"] is True


def test_empty_image_prompt_gets_a_clear_message(real_app, page):
    page.goto(real_app.url)
    page.get_by_role("tab", name="Image").click()
    page.click("#image-generate")
    expect(page.locator(".toast-body").first).to_contain_text("The prompt is empty")


def upload_and_transcribe(page, url, path):
    page.goto(url)
    page.get_by_role("tab", name="Transcribe").click()
    page.locator("#transcribe-audio input[type=file]").set_input_files(str(path))
    page.click("#transcribe-run")


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_uploaded_speech_is_transcribed(real_app, page, tmp_path, fmt):
    wav = fixtures.speech_wav(tmp_path)
    audio = wav if fmt == "wav" else fixtures.to_format(wav, fmt)
    upload_and_transcribe(page, real_app.url, audio)
    expect(page.locator("#transcribe-info")).to_contain_text("done in", timeout=120_000)
    text = page.locator("#transcript textarea").input_value()
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, text) <= 0.25, text
    assert "[00:0" in page.locator("#transcript-timed textarea").input_value()


def test_a_file_that_is_not_audio_gets_a_clear_message_and_the_app_keeps_serving(real_app, page, tmp_path):
    bogus = fixtures.not_audio_file(tmp_path, ".mp3")
    upload_and_transcribe(page, real_app.url, bogus)
    expect(page.locator(".toast-body").first).to_contain_text("audio", timeout=60_000)
    assert real_app.health()["app"] == "melange"
