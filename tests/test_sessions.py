"""Gradio's memory of sessions stays bounded: API callers' sessions are forgotten once idle, a page's never
while it is open (nor for an hour after). The real app over real HTTP, with fake engines."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.app_server import AppServer, wait_for

IDLE_MINUTES = 0.01  # an API caller's session is forgotten 0.6 s after its last call


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = AppServer(tmp_path_factory.mktemp("sessions"), "--engines", "fake", "--api-session-minutes", str(IDLE_MINUTES))
    yield app
    app.stop()


def call_chat(http: httpx.Client, server: AppServer, message: str) -> None:
    """One API call (Gradio gives each its own session), to its end."""
    event = http.post("/gradio_api/call/chat", json={"data": server.inputs("chat", message=message)}).json()["event_id"]
    with http.stream("GET", f"/gradio_api/call/chat/{event}") as stream:
        assert any(line.startswith("event: complete") for line in stream.iter_lines())


def page_event(http: httpx.Client, server: AppServer, session: str) -> None:
    """The chat endpoint run as the page runs its events: joined to the queue under the page's session."""
    info = http.get("/config").json()
    fn_index = next(d["id"] for d in info["dependencies"] if d.get("api_name") == "chat")
    body = {"data": server.inputs("chat", message="from the page"), "fn_index": fn_index, "session_hash": session}
    http.post("/gradio_api/queue/join", json=body).raise_for_status()
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed":
                return
    raise AssertionError("the page's event never completed")


def sessions(http: httpx.Client) -> dict:
    return http.get("/health").json()["sessions"]


def test_api_sessions_are_forgotten_and_an_open_page_keeps_its_own(server):
    page = "page-" + "a" * 12
    # The page's heartbeat, as a browser holds it: a plain socket, so closing the tab is closing it.
    heartbeat = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    heartbeat.sendall(f"GET /gradio_api/heartbeat/{page} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    received = b""
    while b"ALIVE" not in received:
        chunk = heartbeat.recv(4096)
        assert chunk, f"the heartbeat closed: {received!r}"
        received += chunk
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
        page_event(http, server, page)
        before = sessions(http)
        for i in range(5):
            call_chat(http, server, f"api call {i}")
        # Each API call was a session of its own; idle, they go, and the open page's stays.
        after = wait_for(lambda: (s := sessions(http))["forgotten"] >= before["forgotten"] + 5 and s, "API sessions to be forgotten")
        assert after["pages_open"] == 1
        assert after["kept"] == 1, after  # the page's, not forgotten though it idled as long as they did

        heartbeat.close()  # the tab closes
        wait_for(lambda: sessions(http)["pages_open"] == 0, "the page to close")
        # A closed tab's state is kept for Gradio's hour, so a reload finds it: another API session is
        # forgotten meanwhile (a sweep ran after the close), the page's is not.
        forgotten = sessions(http)["forgotten"]
        call_chat(http, server, "one more")
        final = wait_for(lambda: (s := sessions(http))["forgotten"] > forgotten and s, "the last API session to be forgotten")
        assert final["kept"] == 1, final
