"""Faults through the real app in its own process (embedded SmolLM2 and the demo image pipeline, on CPU): the same
seed gives the same reply whatever ran before, kill -9 loses nothing finished, and a client that leaves mid-stream
frees the engine for the next job."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from bench.common import find_event
from tests.app_server import AppServer, wait_for

# Greedy replies that turned when the prompt ran right after itself, before the fix, and one that did not.
A, B, C = "What is 12 times 7?", "Write a limerick about a dog.", "Name a colour."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("melange-faults"), "--device", "cpu")
    yield server
    server.stop()


def db_rows(data_dir: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(data_dir / "melange.db") as db:
        return db.execute(sql, args).fetchall()


def assistant_row(data_dir: Path, conversation_id: str) -> tuple[str, dict | None] | None:
    rows = db_rows(
        data_dir,
        "SELECT m.content, m.stats FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.uid = ? AND m.role = 'assistant' ORDER BY m.id",
        conversation_id,
    )
    return (rows[-1][0], json.loads(rows[-1][1]) if rows[-1][1] else None) if rows else None



def test_same_seed_same_reply_with_twelve_queued_calls(server):
    client = Client(server.url, verbose=False)
    schedule = [A, A, A, B, A, C, C, B, A, B, C, A]  # each prompt after itself, after others, in one queue
    jobs = [(prompt, client.submit(prompt, temperature=0.0, seed=7, max_tokens=64, api_name="/chat")) for prompt in schedule]
    replies: dict[str, set[str]] = {}
    for prompt, job in jobs:
        replies.setdefault(prompt, set()).add(job.result(timeout=600)["reply"])
    assert {prompt: len(r) for prompt, r in replies.items()} == {A: 1, B: 1, C: 1}, replies


def image_controls(server: AppServer, **overrides) -> list:
    """The page's Generate inputs in order: these values by name, the rest at the defaults the endpoint declares."""
    values = dict(prompt="a lighthouse at dusk", width=128, height=128, steps=8, guidance=5.0, sampler="Euler", seed=1,
                  seed_mode="fixed", batch_count=1, batch_size=1)  # fmt: skip
    return server.inputs("generate", **{**values, **overrides})


def leave_mid_stream(http: httpx.Client, event: int, data: list, enough) -> list:
    """Send an event as the page does, read its stream until ``enough(outputs)``, then drop the connection."""
    from gradio_client.utils import apply_diff

    session = uuid.uuid4().hex
    http.post("/gradio_api/queue/join", json={"data": data, "fn_index": event, "session_hash": session}).raise_for_status()
    outputs = None
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            assert message.get("msg") != "process_completed", f"the job ended before the client left: {message}"
            if message.get("msg") == "process_generating":
                changes = message["output"]["data"]
                outputs = list(changes) if outputs is None else [apply_diff(o, c) for o, c in zip(outputs, changes)]
                if enough(outputs):
                    return outputs  # leaving the with-block closes the connection
    raise AssertionError("the stream ended early")


def test_a_client_that_leaves_mid_stream_frees_the_engine_for_the_next_job(server):
    chat_event, _ = find_event(server.url, api_name="chat")
    generate_event, _ = find_event(server.url, elem_id="image-generate")
    client = Client(server.url, verbose=False)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        # Chat: a long reply, abandoned once it streams.
        data = ["Write a long story about a lighthouse keeper.", "", 0.0, 0.9, 40, 1.1, 4096, 3, None]
        seen = leave_mid_stream(http, chat_event, data, lambda out: len(out[0]["reply"].split()) > 10)[0]
        # The next job runs, and the abandoned reply was stopped and kept, not finished for nobody.
        assert client.predict("Name a colour.", max_tokens=16, temperature=0.0, seed=1, api_name="/chat")["reply"]
        content, stats = wait_for(lambda: (row := assistant_row(server.data_dir, seen["conversation_id"])) and row[1] and row, "the reply's end")
        assert stats == {"finish_reason": "cancelled"} and content.startswith(seen["reply"])
        assert len(content.split()) < 1000, "stopped when the client left, not at 4096 tokens"

        # Image: the page's Generate, 4 images of 150 steps each (seconds per image), abandoned at its first preview.
        data = image_controls(server, steps=150, seed=4242, batch_count=4, width=512, height=512)
        leave_mid_stream(http, generate_event, data, lambda out: out[0] is not None)
        # The /generate API (no previews, the answer at the end): abandoned once it runs.
        api_event, _ = find_event(server.url, api_name="generate")
        data = image_controls(server, steps=150, seed=4343, batch_count=4, width=512, height=512)
        leave_mid_stream(http, api_event, data, lambda out: True)
    files, summary = client.predict(*image_controls(server, seed=7), api_name="/generate")
    assert summary["seeds"] == [7] and Path(files[0]).is_file()
    for seed in (4242, 4343):
        abandoned = list((server.data_dir / "images").glob(f"*-{seed}.png"))
        assert abandoned == [], "the abandoned run stopped within its first image: it saved nothing for nobody"


def test_kill_9_mid_reply_and_mid_batch_loses_nothing_finished(tmp_path):
    from PIL import Image

    data_dir = tmp_path / "data"
    server = AppServer(data_dir, "--device", "cpu")
    try:
        client = Client(server.url, verbose=False)
        chat = client.submit("Write a long story about a lighthouse keeper.", max_tokens=4096, temperature=0.0, seed=3, api_name="/chat")
        _images = client.submit(*image_controls(server, batch_count=100, seed=100), api_name="/generate")
        seen = wait_for(lambda: chat.outputs() and len(chat.outputs()[-1]["reply"].split()) > 30 and chat.outputs()[-1], "a reply")
        conversation_id, reply = seen["conversation_id"], seen["reply"]
        # The reply is saved as it streams (twice a second): kill once what the client saw is on disk.
        wait_for(lambda: (row := assistant_row(data_dir, conversation_id)) and row[0].startswith(reply), "the reply saved")
        wait_for(lambda: len(list((data_dir / "images").glob("*.png"))) >= 3, "three images")
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    finally:
        server.stop()

    server = AppServer(data_dir, "--device", "cpu")
    try:
        assert db_rows(data_dir, "PRAGMA integrity_check") == [("ok",)]
        user, = db_rows(
        data_dir,
        "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.uid = ? AND m.role = 'user'",
        conversation_id,
    )
        assert user[0] == "Write a long story about a lighthouse keeper."
        content, _ = assistant_row(data_dir, conversation_id)
        assert content.startswith(reply), "the reply up to the kill is there"
        pngs = sorted((data_dir / "images").glob("*.png"))
        assert len(pngs) >= 3
        for png in pngs:
            with Image.open(png) as image:
                image.verify()
            assert '"seed"' in Image.open(png).text["melange"]
        # The conversation goes on after the restart.
        client = Client(server.url, verbose=False)
        again = client.predict("Now in one sentence.", max_tokens=24, temperature=0.0, seed=3, conversation_id=conversation_id, api_name="/chat")
        assert again["conversation_id"] == conversation_id and again["reply"]
    finally:
        server.stop()
