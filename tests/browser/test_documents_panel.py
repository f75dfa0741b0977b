"""Documents in a real browser on the real models: add a PDF, choose it in Chat, ask, and open the cited passage."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests import docs_fixtures as make
from tests.browser.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def test_add_a_document_ask_about_it_and_open_the_cited_passage(real_app, page, tmp_path):
    pdf = make.pdf(tmp_path / "lighthouse.pdf", [
        "Kerr Point Lighthouse. A short history written for visitors to the island.",
        "The tower was designed by the engineer Alan Stevenson and first lit in 1871. Its lamp is visible for "
        "23 nautical miles in clear weather.",
    ])  # fmt: skip
    page.goto(real_app.url)
    page.get_by_role("tab", name="Documents").click()
    page.locator("#docs-files input[type=file]").set_input_files(str(pdf))
    table = page.locator("#docs-files-table")
    expect(table).to_contain_text("lighthouse.pdf", timeout=60_000)
    expect(table).to_contain_text("indexed", timeout=180_000)  # the embedding model loads on first use
    expect(page.locator("#docs-progress")).to_contain_text("1 file(s) indexed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "documents-tab.png"), full_page=True)

    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-documents input").click()
    page.get_by_role("option", name="My documents").click()
    page.keyboard.press("Escape")
    page.fill("#chat-input textarea", "Who designed the Kerr Point lighthouse?")
    page.press("#chat-input textarea", "Enter")
    reply = page.locator('#chatbot [data-testid="bot"]').last
    expect(page.locator("#chat-stats")).to_contain_text("tok/s", timeout=180_000)
    sources = reply.locator(".melange-sources details")
    expect(sources.first.locator("summary")).to_contain_text("lighthouse.pdf, page")
    source = sources.filter(has_text="lighthouse.pdf, page 2")  # the page that holds the answer is cited
    expect(source).to_have_count(1)
    passage = source.locator(".passage")
    expect(passage).to_be_hidden()
    source.locator("summary").click()
    expect(passage).to_be_visible()
    expect(passage).to_contain_text("designed by the engineer Alan Stevenson")

    # A question the document does not cover is answered with that, not with an invention.
    page.fill("#chat-input textarea", "What is the capital of Peru?")
    page.press("#chat-input textarea", "Enter")
    expect(page.locator('#chatbot [data-testid="bot"]').last).to_contain_text("I found nothing about this in “My documents”", timeout=60_000)


def test_a_transcript_added_from_the_transcribe_panel_is_cited_by_its_time(real_app, page, tmp_path):
    from tests import fixtures

    wav = fixtures.speech_wav(tmp_path, text="The river market opens on Monday. Apples and bread are sold at the north gate.")
    page.goto(real_app.url)
    page.get_by_role("tab", name="Transcribe").click()
    page.locator("#transcribe-audio input[type=file]").set_input_files(str(wav))
    page.locator("#transcribe-run").click()
    expect(page.locator("#transcribe-info")).to_contain_text("done in", timeout=120_000)
    page.locator("#transcript-to-documents").click()
    expect(page.locator(".toast-body").first).to_contain_text("collection 'Transcripts'")

    page.get_by_role("tab", name="Documents").click()
    page.get_by_label("Transcripts").check()
    expect(page.locator("#docs-files-table")).to_contain_text("transcript", timeout=180_000)
    expect(page.locator("#docs-files-table")).to_contain_text("indexed")

    page.get_by_role("tab", name="Chat").click()
    page.click("#chat-new")
    page.locator("#chat-documents input").click()
    page.get_by_role("option", name="Transcripts").click()
    page.keyboard.press("Escape")
    page.fill("#chat-input textarea", "Where are apples and bread sold at the river market?")
    page.press("#chat-input textarea", "Enter")
    source = page.locator('#chatbot [data-testid="bot"]').last.locator(".melange-sources summary").first
    expect(source).to_contain_text(".json, 00:0", timeout=180_000)  # the transcript's file and its time
