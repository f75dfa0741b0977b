"""``/v1`` in LAN mode: the real app over https with the certificate it made, real sign-ins, and API keys made the
way a person makes one (the API keys tab's button), used with the official ``openai`` client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import requests

from tests.app_server import ADMIN_PASSWORD, ROOT, STARTUP, AppServer

OTHER_MODEL = "another-tiny-model"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("lan-v1")
    # A second image model in the models folder: the host may ask for it, a guest may not.
    subprocess.run([sys.executable, "-m", "engines.image.tiny_pipeline", str(data / "models" / OTHER_MODEL)], cwd=ROOT, check=True, capture_output=True)
    server = AppServer.lan(data, "--no-loopback-is-host", timeout=STARTUP)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def passcode(server) -> str:
    return server.passcode


@pytest.fixture(scope="module")
def alice_key(server, passcode):
    return server.api_key("Alice", passcode)


@pytest.fixture(scope="module")
def bob_key(server, passcode):
    return server.api_key("Bob", passcode)


@pytest.fixture(scope="module")
def host_key(server):
    return server.api_key("admin", ADMIN_PASSWORD)


def client_for(server: AppServer, key: str) -> openai.OpenAI:
    http = httpx.Client(trust_env=False, timeout=600, verify=server.ssl_context())  # the certificate Melange made for itself
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, http_client=http)


@pytest.fixture(scope="module")
def alice(server, alice_key):
    return client_for(server, alice_key)


@pytest.fixture(scope="module")
def host(server, host_key):
    return client_for(server, host_key)


def test_no_key_or_a_wrong_key_is_a_401_and_the_key_is_not_logged(server):
    answer = requests.post(f"{server.url}/v1/chat/completions", json={}, verify=server.verify, timeout=30)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    wrong = "mel-" + "w" * 43
    with pytest.raises(openai.AuthenticationError):
        client_for(server, wrong).models.list()
    assert wrong not in server.log.read_text()


def test_a_guest_chats_with_their_key(alice):
    answer = alice.chat.completions.create(model="chat", messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0, max_tokens=32)
    # The key works and the real model answers (what a 135M model's greedy reply says depends on the CPU's
    # kernels: on an AVX-512 machine this one names no city, so the words themselves are not the test).
    assert answer.choices[0].message.content.strip() and answer.usage.completion_tokens > 0
    assert "fake" not in answer.model, "the LAN server runs the real engines"
    assert alice.api_key not in json.dumps(answer.model_dump())


def test_guest_caps_apply_to_the_api(alice):
    with pytest.raises(openai.BadRequestError, match="guests may ask for at most 1024"):
        alice.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2000)
    with pytest.raises(openai.BadRequestError, match="megapixel-steps"):
        alice.images.generate(prompt="a boat", size="1024x1024", n=4, extra_body={"steps": 50})


def test_a_guests_image_url_is_theirs_and_the_hosts_only(server, alice, alice_key, bob_key, host_key):
    url = alice.images.generate(prompt="a lighthouse", size="64x64", extra_body={"steps": 2, "seed": 3}).data[0].url
    assert "/images/guests/alice/" in url

    def fetch(key):
        return requests.get(url, headers={"authorization": f"Bearer {key}"}, verify=server.verify, timeout=30)

    assert fetch(alice_key).content.startswith(b"\x89PNG")
    assert fetch(bob_key).status_code == 404
    assert fetch(host_key).status_code == 200
    assert requests.get(url, verify=server.verify, timeout=30).status_code == 401


def test_switching_the_image_model_is_the_hosts(alice, host):
    with pytest.raises(openai.PermissionDeniedError, match="Only the host can switch models"):
        alice.images.generate(prompt="a boat", model=OTHER_MODEL, size="64x64", extra_body={"steps": 2})
    made = host.images.generate(prompt="a boat", model=OTHER_MODEL, size="64x64", response_format="b64_json", extra_body={"steps": 2})
    assert made.data[0].b64_json
    with pytest.raises(openai.NotFoundError):
        host.images.generate(prompt="a boat", model="no-such-model", size="64x64")


def test_a_guest_has_one_job_per_engine_at_a_time(alice):
    stream = alice.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper."}], temperature=0, max_tokens=1000, stream=True
    )
    chunks = iter(stream)
    next(chunks)  # the first job is running
    with pytest.raises(openai.RateLimitError, match="already have a job"):
        alice.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    stream.close()
    # Once the first job has let go of the engine (at its next token), the next one is taken.
    for _ in range(600):
        try:
            answer = alice.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
            break
        except openai.RateLimitError:
            time.sleep(0.1)
    else:
        raise AssertionError("the closed job never let go of the engine")
    assert answer.choices[0].message.content


def test_a_guests_v1_job_shows_in_their_queue_line(server, passcode, alice, host):
    session = server.login("Alice", passcode)
    long_story = host.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Write a long story about the sea."}], temperature=0, max_tokens=800, stream=True
    )
    chunks = iter(long_story)
    next(chunks)  # the host's job holds the chat engine
    waiting = threading.Thread(target=lambda: alice.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4))
    waiting.start()
    line = ""
    for _ in range(600):
        line = session.get(f"{server.url}/melange/queue").json()["text"]
        if line:
            break
        time.sleep(0.1)
    assert line.startswith("1st in line for Chat"), line
    list(chunks)
    waiting.join(300)
    assert session.get(f"{server.url}/melange/queue").json()["text"] == ""
