"""The app's API through gradio_client, as a script would use it: the real app in its own process with the
embedded SmolLM2 on CPU."""

from __future__ import annotations

import sqlite3

import pytest
from gradio_client import Client

from tests.app_server import AppServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("melange-api"), "--device", "cpu")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


MESSAGES = "SELECT m.role, m.content, m.stats FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.uid = ? ORDER BY m.id"


def stored_messages(server: AppServer, conversation_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(server.data_dir / "melange.db") as db:
        return [(role, content) for role, content, _ in db.execute(MESSAGES, (conversation_id,)).fetchall()]


def test_chat_streams_the_reply_and_keeps_the_conversation(server, client):
    updates = list(client.submit("What is the capital of France?", max_tokens=48, temperature=0.0, seed=1, api_name="/chat"))
    assert len(updates) >= 2, "the reply streams in several updates"
    final = updates[-1]
    assert "Paris" in final["reply"]
    assert "<|im_" not in final["reply"], "the chat template was applied, not echoed"
    assert final["stats"]["completion_tokens"] > 0 and final["stats"]["finish_reason"] in ("stop", "length")
    assert all(final["reply"].startswith(u["reply"]) for u in updates), "each update extends the last"
    conversation_id = final["conversation_id"]
    assert stored_messages(server, conversation_id) == [("user", "What is the capital of France?"), ("assistant", final["reply"])]

    again = client.predict("And of Italy?", max_tokens=24, temperature=0.0, seed=1, conversation_id=conversation_id, api_name="/chat")
    assert again["conversation_id"] == conversation_id
    assert [role for role, _ in stored_messages(server, conversation_id)] == ["user", "assistant", "user", "assistant"]


def test_same_seed_at_temperature_zero_gives_the_same_reply(client):
    replies = {client.predict("Name a colour.", max_tokens=16, temperature=0.0, seed=7, api_name="/chat")["reply"] for _ in range(2)}
    assert len(replies) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"message": "   "}, "empty"),
        ({"message": "hi", "temperature": -1.0}, "emperature"),
        ({"message": "hi", "max_tokens": 10**9}, "ax"),
        ({"message": "hi", "conversation_id": "no-such-conversation"}, "no conversation"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_app_keeps_serving(server, client, kwargs, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/chat")
    assert server.health()["app"] == "melange"


def generate(client, seed: int, **overrides):
    values = dict(
        model="", prompt="a lighthouse at dusk", negative_prompt="", width=64, height=64, steps=3, guidance=5.0,
        sampler="Euler", seed=seed, seed_mode="fixed", batch_count=1, batch_size=2, refiner="None", refiner_start=0.8,
        init_image=None, strength=0.75,
    )  # fmt: skip
    values.update(overrides)
    return client.predict(*values.values(), api_name="/generate")


def test_generate_answers_pngs_with_their_recipe_and_a_seed_repeats_exactly(server, client):
    from PIL import Image

    files, summary = generate(client, seed=11)
    assert summary["seeds"] == [11, 12] and len(files) == 2
    recipe = Image.open(files[0]).text
    assert "Seed: 11" in recipe["parameters"] and '"seed": 11' in recipe["melange"]
    saved = {p.name for p in (server.data_dir / "images").iterdir()}
    assert {i["file"] for i in summary["images"]} <= saved, "the API's images are in the gallery too"
    again, _ = generate(client, seed=11, batch_size=1)
    assert open(again[0], "rb").read() == open(files[0], "rb").read()


def test_generate_refuses_bad_input_clearly(server, client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="multiple of 8"):
        generate(client, seed=1, width=100)
    assert server.health()["app"] == "melange"


def test_cancelling_a_chat_stops_generation_and_keeps_the_partial_reply(server, client):
    import json
    import time

    job = client.submit("Write a long story about a lighthouse keeper.", max_tokens=2048, temperature=0.0, seed=3, api_name="/chat")
    seen = next(iter(job))
    while not (seen.get("reply") or "").strip():
        seen = next(iter(job))
    conversation_id = seen["conversation_id"]
    job.cancel()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(server.data_dir / "melange.db") as db:
            row = next(((c, st) for r, c, st in db.execute(MESSAGES, (conversation_id,)).fetchall() if r == "assistant"), None)
        if row and row[1] and json.loads(row[1]).get("finish_reason") == "cancelled":
            break
        time.sleep(0.2)
    assert row and json.loads(row[1]) == {"finish_reason": "cancelled"}, row
    assert row[0].startswith(seen["reply"]) and len(row[0].split()) < 1000, "stopped early, the partial reply kept"
    assert server.health()["app"] == "melange"
