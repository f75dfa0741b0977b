"""An open page keeps its session (its conversation, its transcript) however many API callers come and go."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from playwright.sync_api import expect

from tests.app_server import AppServer, wait_for

pytestmark = pytest.mark.browser


def api_call(url: str, server: AppServer) -> None:
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
        event = http.post("/gradio_api/call/chat", json={"data": server.inputs("chat", message="from a script")}).json()["event_id"]
        with http.stream("GET", f"/gradio_api/call/chat/{event}") as stream:
            assert any(line.startswith("event: complete") for line in stream.iter_lines())


def test_an_open_page_keeps_its_conversation_while_api_sessions_are_forgotten(browser, tmp_path):
    server = AppServer(tmp_path / "data", "--engines", "fake", "--api-session-minutes", "0.01")
    try:
        page = browser.new_context().new_page()
        page.goto(server.url)
        wait_for(lambda: server.health()["sessions"]["pages_open"] == 1, "the page's heartbeat")
        page.fill("#chat-input textarea", "First message from the page.")
        page.press("#chat-input textarea", "Enter")
        expect(page.locator('#chatbot [data-testid="bot"]')).to_have_count(1, timeout=60_000)
        # API callers come and go; their sessions are forgotten (a sweep has run), the page's is not.
        forgotten = server.health()["sessions"]["forgotten"]
        api_call(server.url, server)
        wait_for(lambda: server.health()["sessions"]["forgotten"] > forgotten, "a sweep after the API call")
        page.fill("#chat-input textarea", "Second message from the page.")
        page.press("#chat-input textarea", "Enter")
        expect(page.locator('#chatbot [data-testid="bot"]')).to_have_count(2, timeout=60_000)
        with sqlite3.connect(server.data_dir / "melange.db") as db:
            rows = db.execute(
                "SELECT c.id, m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.role = 'user'"
            ).fetchall()
        page_rows = [r for r in rows if r[1].endswith("from the page.")]
        assert len(page_rows) == 2 and page_rows[0][0] == page_rows[1][0], f"one conversation, both messages: {rows}"
        page.context.close()
        wait_for(lambda: server.health()["sessions"]["pages_open"] == 0, "the closed tab to be noticed")
    finally:
        server.stop()
