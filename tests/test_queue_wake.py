"""Gradio's queue sleeps while idle and is woken by work (server/queue_wake.py): in-process, fake engines."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

import app
from server import queue_wake
from settings import Settings

LOCAL = "http://127.0.0.1:7860"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    melange = app.create_app(Settings(data_dir=tmp_path_factory.mktemp("wake"), engines="fake"))
    with TestClient(melange, base_url=LOCAL) as client:  # the lifespan starts Gradio's queue
        client.get("/config").raise_for_status()
        yield client


def chat(client: TestClient, message: str) -> str:
    info = client.get("/gradio_api/info").json()["named_endpoints"]["/chat"]["parameters"]
    data = [message if p["parameter_name"] == "message" else p.get("parameter_default") for p in info]
    event = client.post("/gradio_api/call/chat", json={"data": data}).json()["event_id"]
    with client.stream("GET", f"/gradio_api/call/chat/{event}") as stream:
        lines = list(stream.iter_lines())
    assert "event: complete" in lines, lines[-4:]
    return json.loads(lines[lines.index("event: complete") + 1][5:])[0]["reply"]


def test_an_idle_queue_sleeps(client):
    wake = client.app.state.queue_wake
    before = wake.woken + wake.timeouts
    time.sleep(1.0)  # idle: Gradio's own loops would look 1,100 times in this second
    # Each of the two loops wakes at most once per SAFETY while nothing happens (fewer on a busy machine).
    assert wake.woken + wake.timeouts - before <= 2 * (1.0 / queue_wake.SAFETY + 1)


def test_a_job_wakes_the_queue_and_runs(client):
    wake = client.app.state.queue_wake
    woken = wake.woken
    assert chat(client, "hello there")
    assert wake.woken > woken, "the job was started by a wake, not found by a timed look"


def test_jobs_one_after_another_all_run(client):
    replies = [chat(client, f"message {i}") for i in range(5)]
    assert all(replies)
