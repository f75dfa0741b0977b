"""Remote engines, each against a real server on loopback: chat against llama-cpp-python's own OpenAI-compatible
server (``python -m llama_cpp.server``) with the embedded GGUF and an API key; speech and images against a second
Melange with the embedded models, shared on the LAN as a team's GPU box would be (https with its self-signed
certificate, an API key made on its page). Then a Melange whose three panels all run remotely, used as a person
and a script would: the page's API endpoints and ``/v1``.
"""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import openai
import pytest
import requests
from gradio_client import Client, handle_file
from PIL import Image

from engines.base import Cancelled, ChatMessage, ChatParams, EngineError, ImageParams, InputError, LoraWeight, TranscribeOptions
from engines.chat.remote import OpenAIChatEngine
from engines.image.remote import RemoteImageEngine
from engines.speech.remote import OpenAISpeechEngine
from tests import fixtures
from tests.app_server import STARTUP, AppServer, free_port, wait_for
from tests.llama_server import LlamaServer

KEY = "sk-test-remote-key-0123456789abcdef"
ADMIN_PASSWORD = "host-password-for-tests"
GREEDY = ChatParams(temperature=0.0, max_tokens=32, seed=1)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "llama.log", api_key=KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """The shared GPU box of a team, played by a second Melange on this machine, shared as on a LAN."""
    server = AppServer(
        tmp_path_factory.mktemp("backend"), "--lan", "--host", "127.0.0.1", "--device", "cpu", "--no-loopback-is-host",
        env={"MELANGE_ADMIN_PASSWORD": ADMIN_PASSWORD}, timeout=STARTUP,
    )  # fmt: skip
    server.key = server.api_key("admin", ADMIN_PASSWORD)  # what its host makes for the front-ends
    yield server
    server.stop()


def remote(cls, backend: AppServer):
    return cls(f"{backend.url}/v1", backend.key, ca_file=backend.verify)


def backend_health(backend: AppServer) -> dict:
    return requests.get(f"{backend.url}/health", headers={"authorization": f"Bearer {backend.key}"}, verify=backend.verify, timeout=30).json()


@pytest.fixture(scope="module")
def chat(llama):
    return OpenAIChatEngine(llama.url, KEY)


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory):
    return fixtures.speech_wav(tmp_path_factory.mktemp("audio"))



# ---------------------------------------------------------------- chat against llama_cpp.server


def test_the_model_list_comes_from_the_server(chat, llama):
    assert chat.models() == [llama.model()]
    chat.load()
    assert chat.status().model == llama.model() and chat.status().loaded and chat.status().device == "remote"


def test_a_reply_streams_with_its_stats(chat):
    deltas = list(chat.stream([ChatMessage("user", "What is the capital of France? Answer in one sentence.")], GREEDY))
    text = "".join(d.text for d in deltas)
    assert "Paris" in text and sum(1 for d in deltas if d.text) >= 3
    stats = deltas[-1].stats
    assert stats.completion_tokens >= 3 and stats.finish_reason in ("stop", "length")
    assert 0 < stats.first_token_seconds <= stats.seconds


def test_stop_strings_and_plain_completion(chat):
    deltas = list(chat.stream([ChatMessage("user", "List the numbers from 1 to 10, separated by commas.")], ChatParams(temperature=0.0, max_tokens=40, stop=(",",))))
    assert "," not in "".join(d.text for d in deltas) and deltas[-1].stats.finish_reason == "stop"
    completed = list(chat.complete("The capital of France is", ChatParams(temperature=0.0, max_tokens=6)))
    assert "".join(d.text for d in completed).strip() and completed[-1].stats.completion_tokens <= 6


def test_closing_the_stream_stops_the_server(chat, llama):
    stream = chat.stream([ChatMessage("user", "Write a very long story about a lighthouse keeper.")], ChatParams(temperature=0.0, max_tokens=2000))
    assert [next(stream).text for _ in range(3)]
    stream.close()
    wait_for(lambda: "Disconnected from client" in llama.log.read_text(), "llama_cpp.server to see the caller leave and stop")


def test_a_wrong_key_an_unknown_model_and_no_server_are_engine_errors(llama):
    with pytest.raises(EngineError, match="refused Melange's API key") as raised:
        OpenAIChatEngine(llama.url, "sk-wrong").load()
    assert "sk-wrong" not in str(raised.value)
    with pytest.raises(EngineError, match="has no model 'nope'"):
        OpenAIChatEngine(llama.url, KEY, "nope").load()
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineError, match="Cannot reach the chat server at " + nowhere):
        OpenAIChatEngine(nowhere, KEY).load()


def test_a_prompt_too_long_for_the_server_is_an_error_not_an_empty_reply(chat):
    with pytest.raises((EngineError, InputError)):
        list(chat.stream([ChatMessage("user", "lighthouse " * 6000)], GREEDY))


def test_the_chat_panel_lists_the_servers_models(chat, llama, tmp_path):
    from conversations import ConversationStore
    from ui.chat import ChatPanel

    panel = ChatPanel(chat, ConversationStore(tmp_path / "c.db"), tmp_path, [], tmp_path)
    assert panel.model_choices() == [(llama.model(), llama.model())]


# ---------------------------------------------------------------- speech and images against another Melange


def test_remote_transcription_has_segments_and_words(backend, speech_file):
    engine = remote(OpenAISpeechEngine, backend)
    info, segments = engine.transcribe(str(speech_file), TranscribeOptions(word_timestamps=True))
    segments = list(segments)
    text = " ".join(s.text for s in segments)
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, text) < 0.2, text
    assert info.language == "en" and 8 < info.duration < 20 and engine.status().model.startswith("Whisper")
    words = [w for s in segments for w in s.words]
    assert len(words) >= 15 and all(s.start <= w.start <= s.end + 0.5 for s in segments for w in s.words)


def test_remote_transcription_refusals_are_input_errors(backend, speech_file, tmp_path):
    engine = remote(OpenAISpeechEngine, backend)
    with pytest.raises(InputError, match="multilingual"):
        engine.transcribe(str(speech_file), TranscribeOptions(task="translate"))
    with pytest.raises(InputError):
        engine.transcribe(str(fixtures.not_audio_file(tmp_path)), TranscribeOptions())


def test_remote_images_follow_their_seeds_and_repeat(backend):
    engine = remote(RemoteImageEngine, backend)
    params = ImageParams("a lighthouse at dusk", width=64, height=64, steps=3, seed=5)
    steps = []
    results = engine.generate_batch([params, ImageParams(**{**params.__dict__, "seed": 6})], lambda done, total: steps.append((done, total)))
    assert [r.params.seed for r in results] == [5, 6] and steps[-1] == (6, 6)
    assert results[0].model == engine.status().model and len(results[0].model_hash) == 10
    again = engine.generate(params)
    assert again.image.tobytes() == results[0].image.tobytes()


def test_cancelling_a_remote_image_stops_the_server(backend):
    engine = remote(RemoteImageEngine, backend)
    before = set((backend.data_dir / "images").glob("*.png"))
    cancel = threading.Event()
    big = ImageParams("a storm over the sea", width=1024, height=1024, steps=150, seed=1)
    outcome = {}

    def run():
        try:
            engine.generate(big, cancel=cancel)
        except Cancelled as e:
            outcome["cancelled"] = str(e)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)  # the request is on its way (it may still wait in the server's line: that is stopped too)
    cancel.set()
    worker.join(60)
    assert "cancelled" in outcome
    small = engine.generate(ImageParams("a small boat", width=64, height=64, steps=2, seed=3))
    assert small.params.seed == 3
    made = set((backend.data_dir / "images").glob("*.png")) - before
    assert len(made) == 1, "the big image was never finished: the small one, queued after it, was the only one made"


# ---------------------------------------------------------------- a Melange whose panels all run remotely


@pytest.fixture(scope="module")
def front(tmp_path_factory, llama, backend):
    server = AppServer(
        tmp_path_factory.mktemp("front"), "--chat-backend", "openai", "--chat-base-url", llama.url,
        "--speech-backend", "openai", "--speech-base-url", f"{backend.url}/v1",
        "--image-backend", "melange", "--image-base-url", f"{backend.url}/v1", "--remote-ca-file", str(backend.verify),
        env={"MELANGE_CHAT_API_KEY": KEY, "MELANGE_SPEECH_API_KEY": backend.key, "MELANGE_IMAGE_API_KEY": backend.key}, timeout=STARTUP,
    )  # fmt: skip
    yield server
    server.stop()


def test_the_front_reports_remote_engines(front):
    engines = front.health()["engines"]
    assert {kind: e["device"] for kind, e in engines.items()} == {"chat": "remote", "image": "remote", "speech": "remote"}
    assert engines["chat"]["backend"] == "openai" and engines["image"]["backend"] == "melange"


def test_the_chat_panels_api_answers_from_the_remote_model(front):
    client = Client(front.url, verbose=False)
    updates = list(client.submit("What is the capital of France? Answer in one sentence.", max_tokens=32, temperature=0.0, seed=1, api_name="/chat"))
    final = updates[-1]
    assert "Paris" in final["reply"] and "You said" not in final["reply"]
    assert final["stats"]["completion_tokens"] >= 3 and len(updates) >= 2


def test_v1_on_the_front_streams_from_the_remote_model(front, llama):
    question = [ChatMessage("user", "What is the capital of France?")]
    direct = OpenAIChatEngine(llama.url, KEY)
    params = ChatParams(temperature=0.0, max_tokens=24)  # what the front's /v1 makes of the request below

    def straight() -> str:
        return "".join(d.text for d in direct.stream(question, params))

    # llama.cpp reuses the prompt it evaluated last, and logits from another batch shape can turn a greedy
    # reply: once the server holds this very prompt, the same request gets the same reply every time.
    straight()
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="local", max_retries=0, http_client=httpx.Client(trust_env=False, timeout=300))
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": question[0].content}], temperature=0, max_tokens=24, stream=True
    )
    chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(chunks) >= 2, "streamed as it came, not sent whole"
    assert "".join(chunks) == straight(), "the remote model's own reply, token for token"


def test_the_panels_transcribe_and_draw_through_the_other_melange(front, backend, speech_file):
    client = Client(front.url, verbose=False)
    transcript = client.predict(handle_file(str(speech_file)), "Auto-detect", "transcribe", 5, True, True, "", "", False, False, 0, api_name="/transcribe")
    assert "market" in transcript[0]
    files, summary = client.predict("", "a red boat", "", 64, 64, 3, 5.0, "Euler", 21, "fixed", 1, 1, "None", 0.8, None, 0.75, api_name="/generate")
    assert summary["seeds"] == [21]
    with Image.open(files[0]) as image:
        recipe = json.loads(image.text["melange"])
        front_pixels = image.convert("RGB").tobytes()
    assert recipe["seed"] == 21 and recipe["prompt"] == "a red boat" and recipe["model"] == backend_health(backend)["engines"]["image"]["model"]
    body = {"prompt": "a red boat", "size": "64x64", "steps": 3, "guidance": 5.0, "seed": 21, "response_format": "b64_json"}
    auth = {"authorization": f"Bearer {backend.key}"}
    direct = requests.post(f"{backend.url}/v1/images/generations", json=body, headers=auth, verify=backend.verify, timeout=300)
    import base64

    with Image.open(io.BytesIO(base64.b64decode(direct.json()["data"][0]["b64_json"]))) as image:
        assert image.convert("RGB").tobytes() == front_pixels, "the same recipe makes the same image, here or there"


def test_the_remote_keys_reach_no_log_and_no_answer(front, backend):
    for key in (KEY, backend.key):
        assert key not in front.log.read_text() and key not in backend.log.read_text()
        assert key not in json.dumps(front.health())


def test_a_remote_engine_takes_several_jobs_at_once_and_no_memory_here(tmp_path):
    from fastapi.testclient import TestClient

    import app
    from settings import Settings

    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # never asked while the app is built
    settings = Settings(data_dir=tmp_path, engines="fake", chat_backend="openai", chat_base_url=nowhere, remote_concurrency=3)
    made = app.create_app(settings)
    fns = made.state.blocks.fns.values()
    assert {fn.concurrency_limit for fn in fns if fn.concurrency_id == "chat"} == {3}
    assert 3 not in {fn.concurrency_limit for fn in fns if fn.concurrency_id == "image"}, "local engines: one at a time"
    with TestClient(made, base_url="http://127.0.0.1:7860") as client:
        health = client.get("/health").json()
    assert health["engines"]["chat"]["device"] == "remote" and "remote" not in health["memory"]


@pytest.mark.parametrize(
    "extra",
    [dict(loras=(LoraWeight("detail", 0.8),)), dict(controlnet="canny"), dict(hires_scale=2.0), dict(upscale=2.0), dict(outpaint=("left",))],
)
def test_add_ons_a_remote_image_server_cannot_do_are_refused_before_any_request(extra):
    engine = RemoteImageEngine("http://127.0.0.1:9")  # nothing listens there: a request would fail otherwise
    with pytest.raises(InputError, match="not available with a remote image server"):
        engine.prepare(ImageParams("a boat", **extra))
    assert engine.upscalers() == ["Lanczos"] and engine.loras() == [] and engine.controlnets() == []
