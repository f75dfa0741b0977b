"""Gradio's queue, in-process with fake engines: it sleeps while idle and is woken by work (server/queue_wake.py),
and it builds no pandas summary of past events after each one nor keeps a growing record of them, for a
monitoring dashboard Melange refuses (server/queue_analytics.py)."""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest
from fastapi.testclient import TestClient
from gradio.queueing import Queue

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


def test_events_end_without_a_summary_of_past_events(client, monkeypatch):
    frames = []
    monkeypatch.setattr(Queue, "_get_df", staticmethod(lambda records: frames.append(len(records))))
    queue = client.app.state.blocks._queue
    replies = [chat(client, f"message {i}") for i in range(6)]
    assert all(replies)
    assert frames == [], "Gradio's queue built its analytics DataFrame"
    assert len(queue.event_analytics) <= 1, "past events are still kept for the dashboard"


def test_the_monitoring_dashboard_stays_refused(client):
    for path in ("/monitoring", "/monitoring/summary", "/gradio_api/monitoring"):
        assert client.get(path).status_code in (403, 404), path


def test_other_work_given_to_the_queue_module_still_runs_in_a_thread(client):
    import threading

    import anyio
    import gradio.queueing

    from server import queue_analytics

    assert gradio.queueing.run_sync is queue_analytics._run_sync
    # On a thread of its own: a browser test before may leave an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        caller, ran_in = pool.submit(lambda: (threading.get_ident(), anyio.run(gradio.queueing.run_sync, threading.get_ident))).result()
    assert ran_in != caller
