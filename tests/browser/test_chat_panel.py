"""Chat panel behaviours beyond the round trip, in a real browser on the embedded model."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

LONG_PROMPT = "Write a very long story, at least two thousand words, about a lighthouse keeper."


def start_long_reply(page, url: str) -> None:
    page.goto(url)
    page.get_by_text("Sampling and presets", exact=True).click()
    tokens = page.locator("#chat-max-tokens input[type=number]")
    tokens.fill("4096")
    tokens.press("Enter")
    # A fixed seed: a random one now and then gives a reply of a few words, over before the tab is closed.
    seed = page.get_by_label("Seed (-1: random)")
    seed.fill("7")
    seed.press("Enter")
    page.fill("#chat-input textarea", LONG_PROMPT)
    page.press("#chat-input textarea", "Enter")
    expect(page.locator('#chatbot [data-testid="bot"]').last).not_to_be_empty(timeout=120_000)


def test_closing_the_tab_mid_reply_stops_generation_and_keeps_the_partial_reply(real_app, browser):
    context = browser.new_context()
    page = context.new_page()
    start_long_reply(page, real_app.url)
    # A few words in, the person closes the tab mid-stream.
    page.wait_for_function(
        "() => { const bots = document.querySelectorAll('#chatbot [data-testid=\"bot\"]');"
        " return bots.length > 0 && bots[bots.length - 1].innerText.split(/\\s+/).filter(Boolean).length >= 5; }",
        timeout=120_000,
    )
    context.close()

    # A second visitor finds the conversation with the partial reply marked as stopped, and the
    # engine answers them instead of finishing 4096 tokens for nobody.
    other = browser.new_context().new_page()
    other.goto(real_app.url)
    other.get_by_label(LONG_PROMPT[:40], exact=False).check()
    last_reply = other.locator('#chatbot [data-testid="bot"]').last
    expect(last_reply).to_contain_text("stopped", timeout=120_000)
    partial = last_reply.inner_text()
    assert len(partial.split()) >= 3
    other.click("#chat-new")
    other.fill("#chat-input textarea", "What is the capital of France?")
    other.press("#chat-input textarea", "Enter")
    expect(last_reply).to_contain_text("Paris", timeout=120_000)
    # The engine runs one reply at a time: had the long one gone on for nobody, this answer would have come
    # after it, and the stored reply would be the finished story. It is still the stopped partial.
    other.get_by_label(LONG_PROMPT[:40], exact=False).check()
    expect(last_reply).to_contain_text("stopped", timeout=30_000)
    assert last_reply.inner_text() == partial
    other.context.close()


def test_regenerate_edit_export_and_presets_in_the_page(real_app, page, tmp_path):
    page.goto(real_app.url)
    page.fill("#chat-input textarea", "Name one fruit.")
    page.press("#chat-input textarea", "Enter")
    expect(page.locator("#chat-stats")).to_contain_text("tok/s", timeout=120_000)
    # Export both formats.
    page.click("#chat-export")
    expect(page.locator("#chat-exported")).to_contain_text(".json", timeout=30_000)
    expect(page.locator("#chat-exported")).to_contain_text(".md")
    # Rename in the sidebar.
    page.fill("#chat-title input", "Fruit talk")
    page.click("#chat-rename")
    expect(page.locator("#chat-history")).to_contain_text("Fruit talk")


def test_conversations_survive_an_app_restart(browser, tmp_path):
    from tests.app_server import AppServer

    data = tmp_path / "data"
    server = AppServer(data, "--device", "cpu")
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.fill("#chat-input textarea", "What is the capital of France?")
        page.press("#chat-input textarea", "Enter")
        expect(page.locator("#chat-stats")).to_contain_text("tok/s", timeout=120_000)
        reply = page.locator('#chatbot [data-testid="bot"]').last.inner_text()
        page.close()
    finally:
        server.stop()

    server = AppServer(data, "--device", "cpu")
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.get_by_label("What is the capital of France?").check()
        expect(page.locator('#chatbot [data-testid="bot"]').last).to_have_text(reply)
        # ...and it goes on where it stopped.
        page.fill("#chat-input textarea", "And of Italy?")
        page.press("#chat-input textarea", "Enter")
        expect(page.locator('#chatbot [data-testid="user"]')).to_have_count(2)
        expect(page.locator("#chat-stats")).to_contain_text("tok/s", timeout=120_000)
        page.close()
    finally:
        server.stop()
