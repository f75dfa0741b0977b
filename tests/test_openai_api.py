"""The OpenAI-compatible ``/v1`` API through the official ``openai`` client over real HTTP: the real app in its
own process on this machine (no login: the host), the embedded models on CPU.

LAN mode (API keys, guests) is tests/test_openai_lan.py; the OpenAPI schema fuzzed is tests/test_openai_schema.py.
"""

from __future__ import annotations

import base64
import io
import json
import threading

import httpx
import numpy as np
import openai
import pytest
import requests
from gradio_client import Client
from PIL import Image

from tests import fixtures
from tests.app_server import STARTUP, AppServer, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("melange-v1"), "--device", "cpu", timeout=STARTUP)
    yield server
    server.stop()


def openai_client(server: AppServer, key: str = "any-key-on-localhost") -> openai.OpenAI:
    # No retries: a test must see the first answer. No proxies from the environment.
    http = httpx.Client(trust_env=False, timeout=600, verify=server.ssl_context())
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, http_client=http)


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return fixtures.speech_wav(tmp_path_factory.mktemp("audio"))


def ask(client, content: str, **kwargs):
    return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": content}], **kwargs)


# ---------------------------------------------------------------- models


def test_models_lists_what_each_panel_runs(client):
    models = {m.kind: m.id for m in client.models.list().data}
    assert set(models) == {"chat", "image", "speech", "embedding"}
    assert models["chat"].startswith("SmolLM2") and "Whisper" in models["speech"]
    assert client.models.retrieve(models["chat"]).id == models["chat"]
    assert client.models.retrieve("whisper-1").id == models["speech"], "OpenAI's transcription model name is an alias"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


# ---------------------------------------------------------------- embeddings


def test_embeddings_are_the_documents_model_unit_length_and_close_for_close_meanings(client):
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Quarterly revenue rose by four percent."]
    answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    vectors = np.array([d.embedding for d in sorted(answer.data, key=lambda d: d.index)])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2, "a cat on a mat is nearer a kitten than revenue"
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 3 * 5
    # The same text alone, as base64 float32 (what the openai client asks for by default), is the same vector.
    alone = client.embeddings.create(model=answer.model, input=texts[0], encoding_format="base64")
    assert np.allclose(np.frombuffer(base64.b64decode(alone.data[0].embedding), "<f4"), vectors[0], atol=1e-5)


@pytest.mark.parametrize(
    "body, status",
    [({"input": []}, 400), ({"input": [""]}, 400), ({"input": "hi", "dimensions": 1536}, 400), ({"input": [1, 2, 3]}, 400),
     ({"input": "hi", "model": "text-embedding-3-large"}, 404), ({"input": ["x"] * 2049}, 400)],
)  # fmt: skip
def test_bad_embedding_requests_are_openai_shaped_4xx(server, body, status):
    answer = requests.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
    assert answer.status_code == status and answer.json()["error"]["message"], answer.text


# ---------------------------------------------------------------- chat


def test_chat_answers_with_usage_and_a_finish_reason(client):
    answer = ask(client, "What is the capital of France? Answer in one sentence.", temperature=0, max_tokens=48)
    choice = answer.choices[0]
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert "<|im_" not in choice.message.content, "the model's chat template was applied"
    assert choice.finish_reason in ("stop", "length")
    assert answer.model.startswith("SmolLM2") and answer.id.startswith("chatcmpl-")
    usage = answer.usage
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 49
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_streams_token_by_token_with_usage_last(client):
    stream = ask(client, "Count from one to ten in words.", temperature=0, max_tokens=40, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 5, "the reply arrives in pieces"
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 5
    text = "".join(pieces).lower()
    assert "one" in text or "1" in text, text


def test_the_system_prompt_and_earlier_turns_reach_the_model(client):
    system = {"role": "system", "content": "You are a helpful assistant who remembers names."}
    question = {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}
    alone = client.chat.completions.create(model="chat", messages=[system, question], temperature=0, max_tokens=4)
    history = [
        {"role": "developer", "content": "Answer briefly, in one short sentence."},
        {"role": "user", "content": "My name is Zanzibar, and I keep the lighthouse."},
        {"role": "assistant", "content": "Nice to meet you, Zanzibar the lighthouse keeper."},
    ]
    full = client.chat.completions.create(model="chat", messages=[system, *history, question], temperature=0, max_tokens=4)
    # The three earlier messages hold about 30 tokens of text, plus the template's markers.
    assert full.usage.prompt_tokens - alone.usage.prompt_tokens >= 30, (alone.usage, full.usage)


def test_stop_strings_end_the_reply_before_them(client):
    answer = ask(client, "List the numbers from 1 to 10, separated by commas.", temperature=0, max_tokens=64, stop=[","])
    text = answer.choices[0].message.content
    assert "," not in text and text.strip(), text
    assert answer.choices[0].finish_reason == "stop"


def test_max_tokens_cuts_the_reply(client):
    answer = ask(client, "Write a long story about the sea.", temperature=0, max_tokens=6)
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens <= 7


def test_the_same_seed_gives_the_same_reply(client):
    # llama.cpp reuses what it computed for the previous prompt, and its numbers differ slightly from a fresh
    # start: the same other request goes before each try, so both start from the same state.
    def sample(seed):
        ask(client, "Say one word.", temperature=0, max_tokens=2)
        return ask(client, "Invent a name for a cat.", temperature=1.0, top_p=1.0, seed=seed, max_tokens=12).choices[0].message.content

    assert sample(42) == sample(42)


def test_text_completion_continues_plain_text(client):
    answer = client.completions.create(model="chat", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert answer.choices[0].text.strip() and answer.object == "text_completion"
    assert answer.usage.completion_tokens <= 9
    streamed = list(client.completions.create(model="chat", prompt="One, two, three,", max_tokens=8, temperature=0, stream=True))
    assert sum(1 for c in streamed if c.choices and c.choices[0].text) >= 2


def test_closing_a_stream_stops_the_engine(client):
    stream = ask(client, "Write a very long story about a lighthouse keeper.", temperature=0, max_tokens=3000, stream=True)
    seen = 0
    for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen >= 3:
            break
    stream.close()
    # 3,000 tokens would hold the engine for half a minute and more; stopped, the next job starts at once.
    assert ask(client.with_options(timeout=60), "Say hi.", max_tokens=4).choices[0].message.content


# ---------------------------------------------------------------- images


def recipe(png: bytes) -> dict:
    with Image.open(io.BytesIO(png)) as image:
        return json.loads(image.text["melange"])


def test_images_as_base64_carry_their_recipe_and_repeat_from_a_seed(server, client):
    extra = {"negative_prompt": "fog", "steps": 3, "guidance": 5.0, "sampler": "DPM++ 2M", "seed": 11}
    answer = client.images.generate(prompt="a lighthouse at dusk", n=2, size="64x64", response_format="b64_json", extra_body=extra)
    assert [d.model_extra["seed"] for d in answer.data] == [11, 12]
    first = base64.b64decode(answer.data[0].b64_json)
    made = recipe(first)
    assert (made["prompt"], made["negative_prompt"], made["steps"], made["sampler"], made["seed"]) == ("a lighthouse at dusk", "fog", 3, "DPM++ 2M", 11)
    assert (made["width"], made["height"], made["guidance"]) == (64, 64, 5.0)
    assert {p.read_bytes() for p in (server.data_dir / "images").glob("*.png")} >= {first}, "saved in the gallery"
    again = client.images.generate(prompt="a lighthouse at dusk", size="64x64", response_format="b64_json", extra_body=extra)
    assert base64.b64decode(again.data[0].b64_json) == first


def test_images_as_urls_are_served_from_the_gallery(server, client):
    answer = client.images.generate(prompt="a red boat", size="64x64", extra_body={"steps": 2, "seed": 5})
    url = answer.data[0].url
    assert url.startswith(f"{server.url}/gradio_api/file=") and "/images/" in url
    png = requests.get(url, timeout=30).content
    assert png.startswith(b"\x89PNG") and recipe(png)["seed"] == 5


# ---------------------------------------------------------------- audio


def transcribe(client, path, **kwargs):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, **kwargs)


def test_transcription_as_json_and_text(client, speech):
    text = transcribe(client, speech).text
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, text) < 0.2, text
    plain = transcribe(client, speech, response_format="text")
    assert isinstance(plain, str) and "market" in plain


def test_transcription_as_subtitles(client, speech):
    srt = transcribe(client, speech, response_format="srt")
    assert srt.startswith("1\n00:00:0") and " --> " in srt and "market" in srt
    vtt = transcribe(client, speech, response_format="vtt")
    assert vtt.startswith("WEBVTT") and "market" in vtt


def test_verbose_transcription_has_segments_and_words(client, speech):
    answer = transcribe(client, speech, response_format="verbose_json", timestamp_granularities=["word", "segment"], language="en")
    assert answer.language == "en" and 8 < answer.duration < 20
    assert answer.segments and answer.segments[0].start < answer.segments[-1].end <= answer.duration + 0.5
    words = [w.word.strip(".,").lower() for w in answer.words]
    assert "market" in words and all(w.start <= w.end for w in answer.words)
    only_segments = transcribe(client, speech, response_format="verbose_json")
    assert only_segments.segments and not getattr(only_segments, "words", None)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the openai client marks this endpoint so; it is still OpenAI's
def test_translation_needs_a_multilingual_model(client, speech):
    with open(speech, "rb") as f, pytest.raises(openai.BadRequestError, match="multilingual"):
        client.audio.translations.create(model="whisper-1", file=f)


# ---------------------------------------------------------------- the page's queue


def queue_text(server) -> str:
    return requests.get(f"{server.url}/melange/queue", timeout=10).json()["text"]



def test_a_v1_job_waits_its_turn_behind_a_page_job_and_shows_in_the_line(server, client):
    events: list[str] = []
    gradio = Client(server.url, verbose=False)
    page_job = gradio.submit("Write a long story about a lighthouse keeper.", max_tokens=600, temperature=0.0, seed=1, api_name="/chat")
    next(iter(page_job))  # the page's job is generating
    page_job_done = threading.Event()

    def v1_job():
        answer = ask(client, "Say hello.", max_tokens=4)
        events.append("v1 done" + (" after the page job" if page_job_done.is_set() else " BEFORE the page job"))
        assert answer.choices[0].message.content

    thread = threading.Thread(target=v1_job)
    thread.start()
    wait_for(lambda: "1st in line for Chat" in queue_text(server), "the /v1 job to be 1st in line")
    assert not page_job_done.is_set()
    page_job.result()
    page_job_done.set()
    thread.join(300)
    assert events == ["v1 done after the page job"]
    assert queue_text(server) == ""


def test_a_page_job_waits_behind_a_streaming_v1_job(server, client):
    stream = ask(client, "Write a long story about the sea.", temperature=0, max_tokens=600, stream=True)
    chunks = iter(stream)
    next(chunks)  # the /v1 job holds the chat engine now
    gradio = Client(server.url, verbose=False)
    page_job = gradio.submit("Say hello.", max_tokens=4, api_name="/chat")
    wait_for(lambda: "1st in line for Chat" in queue_text(server), "the page job to wait in line")
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason in ("stop", "length")
    assert page_job.result()["reply"], "its turn came once the /v1 job was done"


# ---------------------------------------------------------------- bad input


def raw(server, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{server.url}/v1{path}", timeout=120, verify=server.verify, **kwargs)


def error_of(answer: requests.Response) -> dict:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_malformed_json_is_a_400(server):
    answer = raw(server, "POST", "/chat/completions", data=b'{"model": "chat", "messages": [', headers={"content-type": "application/json"})
    assert answer.status_code == 400 and error_of(answer)["code"] == "invalid_json"


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found" and "SmolLM2" in raised.value.message


@pytest.mark.parametrize("role", ["tool", "robot", ""])
def test_a_wrong_role_is_a_400(client, role):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="chat", messages=[{"role": role, "content": "hi"}])
    assert raised.value.param == "messages.0.role"


def test_a_ten_megabyte_prompt_is_refused_and_the_server_keeps_serving(server, client):
    with pytest.raises(openai.APIStatusError) as raised:
        ask(client, "lighthouse " * (10 * 2**20 // 11))
    assert raised.value.status_code == 413
    assert ask(client, "Say hi.", max_tokens=4).choices[0].message.content


def test_a_prompt_longer_than_the_context_is_a_400(client):
    with pytest.raises(openai.BadRequestError, match="context"):
        ask(client, "lighthouse " * 20_000, stream=True)


def test_a_hundred_images_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a boat", n=100)
    assert raised.value.param == "n"


def test_size_banana_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a boat", size="banana")
    assert raised.value.param == "size" and "WIDTHxHEIGHT" in raised.value.message


@pytest.mark.parametrize("make", [fixtures.not_audio_file, fixtures.empty_file, fixtures.corrupt_mp3, fixtures.video_only_file])
def test_audio_that_is_not_audio_is_a_400(client, tmp_path, make):
    with pytest.raises(openai.BadRequestError):
        transcribe(client, make(tmp_path))


@pytest.mark.parametrize(
    "body",
    [
        {"model": "chat", "messages": []},
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "n": 2},
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": -1},
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "seed": 2**40},
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]},
        {"model": "chat", "messages": [{"role": "assistant", "content": "hi"}]},
        {"model": "chat", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        [1, 2, 3],
    ],
)
def test_other_invalid_chat_requests_are_400s(server, body):
    answer = raw(server, "POST", "/chat/completions", json=body)
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["type"] == "invalid_request_error"


def test_unknown_urls_and_methods(server):
    assert raw(server, "GET", "/engines").status_code == 404
    assert error_of(raw(server, "GET", "/chat/completions"))["code"] == "method_not_allowed"
    assert server.health()["status"] == "ok"
