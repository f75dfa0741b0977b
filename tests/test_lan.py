"""LAN mode end to end: the real app with its embedded models in LAN mode on loopback, over https with the
certificate it made itself (verified against it), real sign-ins, two guests and the host.

Loopback-is-host is switched off, so a request from this machine counts as whoever it signs in as; one test
starts the default (the host at the machine itself needs no sign-in).
"""

from __future__ import annotations

import html
import json
import threading
import uuid
from pathlib import Path

import pytest
import requests

from tests import fixtures
from tests.app_server import ADMIN_PASSWORD, AppServer, wait_for

CHAT = ["", 0.0, 0.9, 40, 1.1, 32, 7]  # system prompt, temperature, top-p, top-k, repeat penalty, max tokens, seed


def start(tmp_path_factory, *args: str) -> AppServer:
    return AppServer.lan(tmp_path_factory.mktemp("lan"), *args)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start(tmp_path_factory, "--no-loopback-is-host")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def passcode(server) -> str:
    return server.passcode


@pytest.fixture(scope="module")
def alice(server, passcode):
    return server.login("Alice", passcode)


@pytest.fixture(scope="module")
def bob(server, passcode):
    return server.login("Bob", passcode)


@pytest.fixture(scope="module")
def host(server):
    return server.login("admin", ADMIN_PASSWORD)


def call(server: AppServer, session: requests.Session, api: str, data: list) -> tuple[str, object]:
    """A named endpoint through Gradio's plain HTTP API: ('complete', outputs) or ('error', message)."""
    answer = session.post(f"{server.url}/gradio_api/call/{api}", json={"data": data})
    if answer.status_code != 200:
        return str(answer.status_code), answer.text
    event_id = answer.json()["event_id"]
    with session.get(f"{server.url}/gradio_api/call/{api}/{event_id}", stream=True, timeout=300) as stream:
        kind = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                payload = json.loads(line.removeprefix("data:").strip())
                return kind, payload.get("error") if kind == "error" and isinstance(payload, dict) else payload
    raise AssertionError("the event stream ended without an answer")


def chat(server, session, message, conversation_id=None):
    return call(server, session, "chat", [message, *CHAT, conversation_id])


def generate(server, session, prompt="a lighthouse", init_image=None, **overrides):
    values = dict(prompt=prompt, width=64, height=64, steps=3, guidance=5.0, sampler="Euler", seed=1, seed_mode="fixed",
                  batch_count=1, batch_size=1, init_image=init_image)  # fmt: skip
    values.update(overrides)
    return call(server, session, "generate", server.inputs("generate", session, **values))


def transcribe(server, session, path):
    file = {"path": path, "meta": {"_type": "gradio.FileData"}}
    return call(server, session, "transcribe", server.inputs("transcribe", session, audio=file))


def upload(server, session, path: Path) -> str:
    with path.open("rb") as f:
        answer = session.post(f"{server.url}/gradio_api/upload", files={"files": (path.name, f)})
    answer.raise_for_status()
    return answer.json()[0]


# ---------------------------------------------------------------- signing in


def test_the_page_wants_a_sign_in_and_health_says_only_ok(server):
    anonymous = server.session()
    page = anonymous.get(f"{server.url}/", headers={"accept": "text/html"}, allow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F"
    form = anonymous.get(f"{server.url}/login")
    assert form.status_code == 200 and 'name="password"' in form.text and form.headers["x-content-type-options"] == "nosniff"
    assert anonymous.get(f"{server.url}/config").status_code == 401
    assert anonymous.get(f"{server.url}/health").json() == {"status": "ok"}


def test_a_guest_signs_in_with_name_and_passcode_and_out_again(server, passcode):
    session = server.session()
    wrong = session.post(f"{server.url}/login", data={"name": "Carol", "password": "not-it"}, allow_redirects=False)
    assert wrong.status_code == 401 and "Wrong name, password or passcode" in wrong.text
    answer = session.post(f"{server.url}/login", data={"name": "Carol", "password": passcode, "next": "/?x=1"}, allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/?x=1"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
    token = session.cookies["melange_session"]
    assert session.get(f"{server.url}/config").status_code == 200
    assert session.post(f"{server.url}/logout", allow_redirects=False).status_code == 303
    stale = server.session()
    stale.headers["cookie"] = f"melange_session={token}"
    assert stale.get(f"{server.url}/config").status_code == 401, "the ended session is refused even if its cookie is kept"


def test_sign_in_sends_nowhere_but_this_server(server, passcode):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        answer = server.session().post(
            f"{server.url}/login", data={"name": "Dan", "password": passcode, "next": target}, allow_redirects=False
        )
        assert answer.headers["location"] == "/", target


def test_the_host_sees_the_details_of_health(host, server):
    details = host.get(f"{server.url}/health").json()
    assert details["app"] == "melange" and set(details["engines"]) == {"chat", "image", "speech"}


def test_a_foreign_host_or_origin_is_refused(server, alice):
    assert alice.get(f"{server.url}/config", headers={"host": "attacker.example"}).status_code == 400
    answer = alice.post(f"{server.url}/gradio_api/queue/join", headers={"origin": "https://attacker.example"}, json={})
    assert answer.status_code == 403 and "access-control-allow-origin" not in answer.headers


# ---------------------------------------------------------------- per-visitor data


def test_a_guest_sees_and_touches_only_their_own_conversations(server, alice, bob, host):
    kind, outputs = chat(server, alice, "What is the capital of France?")
    assert kind == "complete", outputs
    conversation_id = outputs[0]["conversation_id"]
    assert len(conversation_id) >= 16 and not conversation_id.isdigit(), "ids cannot be guessed"
    kind, message = chat(server, bob, "And of Italy?", conversation_id)
    assert kind == "error" and "There is no conversation" in message, "someone else's id answers 'not found'"
    assert chat(server, bob, "hello", "no-such-id")[1] == "There is no conversation no-such-id.", "the same answer as a missing one"
    assert chat(server, host, "And of Italy?", conversation_id)[0] == "complete", "the host sees all"
    assert chat(server, alice, "And of Spain?", conversation_id)[0] == "complete"


def test_images_belong_to_their_maker_and_the_host(server, alice, bob, host):
    kind, outputs = generate(server, alice)
    assert kind == "complete", outputs
    url = outputs[0][0]["url"]
    assert "/images/guests/alice/" in url
    assert alice.get(url).status_code == 200 and alice.get(url).content.startswith(b"\x89PNG")
    assert bob.get(url).status_code == 404
    assert host.get(url).status_code == 200


def test_a_request_reads_only_files_its_caller_uploaded(server, alice, bob, host, tmp_path):
    wav = fixtures.speech_wav(tmp_path)
    mine = upload(server, alice, wav)
    kind, outputs = transcribe(server, alice, mine)
    assert kind == "complete" and "market" in outputs[0], outputs
    kind, message = transcribe(server, bob, mine)
    assert kind == "error" and "not found among your uploads" in message
    for stranger in ("/etc/hostname", str(server.data_dir / "melange.db"), f"{Path(mine).parent}/../../../etc/hostname"):
        for session in (bob, host):
            kind, message = transcribe(server, session, stranger)
            assert kind == "error", (stranger, message)
        kind, message = generate(server, host, init_image={"path": stranger, "meta": {"_type": "gradio.FileData"}})
        assert kind == "error", (stranger, message)


def test_an_uploaded_start_image_is_kept_as_png_whatever_it_was_called(server, alice, tmp_path):
    from PIL import Image

    disguised = tmp_path / "page.html"
    Image.new("RGB", (64, 64), "red").save(disguised, format="PNG")
    path = upload(server, alice, disguised)
    kind, outputs = generate(server, alice, init_image={"path": path, "meta": {"_type": "gradio.FileData"}}, steps=4)
    assert kind == "complete", outputs
    sources = list((server.data_dir / "images" / "guests" / "alice" / "sources").iterdir())
    assert sources and all(p.suffix == ".png" for p in sources)
    served = alice.get(f"{server.url}/gradio_api/file={sources[0]}")
    assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------- the queue


def join(server, session, fn_index: int, data: list, session_hash: str) -> requests.Response:
    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None, "trigger_id": None}
    return session.post(f"{server.url}/gradio_api/queue/join", json=body)


def chat_index(server, session) -> int:
    config = session.get(f"{server.url}/config").json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == "chat")


def read_until_done(server, session, session_hash: str) -> list[dict]:
    messages = []
    with session.get(f"{server.url}/gradio_api/queue/data", params={"session_hash": session_hash}, stream=True, timeout=300) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                message = json.loads(line.removeprefix("data:"))
                messages.append(message)
                if message.get("msg") in ("process_completed", "close_stream"):
                    break
    return messages


def test_another_persons_session_and_jobs_are_out_of_reach(server, alice, bob):
    index = chat_index(server, alice)
    alices = uuid.uuid4().hex
    joined = join(server, alice, index, ["Count from one to thirty.", "", 0.0, 0.9, 40, 1.1, 96, 1, None], alices)
    assert joined.status_code == 200
    event_id = joined.json()["event_id"]
    assert bob.get(f"{server.url}/gradio_api/queue/data", params={"session_hash": alices}).status_code == 404
    assert bob.get(f"{server.url}/gradio_api/heartbeat/{alices}").status_code == 404
    cancel = bob.post(f"{server.url}/gradio_api/cancel", json={"session_hash": alices, "event_id": event_id, "fn_index": index})
    assert cancel.status_code == 404
    cancel = bob.post(f"{server.url}/gradio_api/cancel", json={"session_hash": uuid.uuid4().hex, "event_id": event_id, "fn_index": index})
    assert cancel.status_code == 404, "knowing the event id is not enough either"
    messages = read_until_done(server, alice, alices)
    final = messages[-1]
    assert final["msg"] == "process_completed" and final["success"], final
    assert "thirty" in json.dumps(final).lower() or final["output"]["data"][0]["stats"]["finish_reason"] == "length"


def test_a_guest_has_one_job_per_panel_at_a_time_and_cancel_frees_it(server, alice, host):
    index = chat_index(server, alice)
    first = uuid.uuid4().hex
    long_story = ["Write a long story about a lighthouse keeper.", "", 0.0, 0.9, 40, 1.1, 1024, 3, None]
    joined = join(server, alice, index, long_story, first)
    assert joined.status_code == 200
    second = join(server, alice, index, long_story, uuid.uuid4().hex)
    assert second.status_code == 429 and "already have a job waiting or running for Chat" in second.json()["detail"]
    assert join(server, host, index, ["Hi", "", 0.0, 0.9, 40, 1.1, 8, 1, None], uuid.uuid4().hex).status_code == 200, "the host is not capped"
    event_id = joined.json()["event_id"]
    done = threading.Event()
    threading.Thread(target=lambda: (read_until_done(server, alice, first), done.set()), daemon=True).start()
    assert alice.post(f"{server.url}/gradio_api/cancel", json={"session_hash": first, "event_id": event_id, "fn_index": index}).ok
    assert done.wait(120), "the cancelled job ended"
    assert chat(server, alice, "Hello again")[0] == "complete", "a new job is taken once the first is gone"


def waiting_line(server, session) -> str:
    return session.get(f"{server.url}/melange/queue").json()["text"]



def test_a_thousand_queue_joins_from_one_guest_are_refused_and_others_are_served(server, passcode, host, bob):
    from concurrent.futures import ThreadPoolExecutor

    index = chat_index(server, host)
    busy = uuid.uuid4().hex  # the host's long reply keeps the chat engine busy
    hosts = join(server, host, index, ["Write a long story about a lighthouse keeper.", "", 0.0, 0.9, 40, 1.1, 4096, 3, None], busy)
    assert hosts.ok
    flood = server.login("Flooder", passcode)
    first = uuid.uuid4().hex
    joined = join(server, flood, index, ["Name a colour.", "", 0.0, 0.9, 40, 1.1, 16, 3, None], first)
    assert joined.status_code == 200
    wait_for(lambda: "1st in line for Chat" in waiting_line(server, flood), "the flooder's job to wait in line")

    def another(_):
        return join(server, flood, index, ["Name a colour.", "", 0.0, 0.9, 40, 1.1, 16, 3, None], uuid.uuid4().hex).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(another, range(1000)))
    assert "1st in line for Chat" in waiting_line(server, flood), "the first job waited all along, so every join met the cap"
    assert codes == [429] * 1000, {c: codes.count(c) for c in set(codes)}
    for session, session_hash, answer in ((flood, first, joined), (host, busy, hosts)):  # make room
        cancel = {"session_hash": session_hash, "event_id": answer.json()["event_id"], "fn_index": index}
        assert session.post(f"{server.url}/gradio_api/cancel", json=cancel).ok
    assert chat(server, bob, "Name a colour.")[0] == "complete", "everyone else keeps being served"


def test_guest_caps_are_refused_with_a_clear_message(server, alice):
    kind, message = call(server, alice, "chat", ["hi", "", 0.5, 0.9, 40, 1.1, 4096, -1, None])
    assert kind == "error" and "guests may ask for at most 1024" in message
    kind, message = generate(server, alice, width=1024, height=1024, steps=50, batch_size=4)
    assert kind == "error" and "megapixel-steps" in message


def test_page_only_events_refuse_named_api_calls(server, host):
    config = host.get(f"{server.url}/config").json()
    names = {d["api_name"] for d in config["dependencies"] if d.get("api_name")} - {"chat", "generate", "transcribe"}
    assert {"unload", "on_delete", "on_switch", "on_rotate"} <= names
    for name in sorted(names):
        answer = host.post(f"{server.url}/gradio_api/call/{name}", json={"data": []})
        assert answer.status_code == 404, name


# ---------------------------------------------------------------- rate limits (last: they lock this address out)


def test_failed_sign_ins_are_rate_limited_per_name_then_per_address(server, passcode):
    def attempt(name, password):
        return server.session().post(f"{server.url}/login", data={"name": name, "password": password}, allow_redirects=False)

    for _ in range(5):
        assert attempt("Mallory", "guess").status_code == 401
    limited = attempt("Mallory", passcode)
    assert limited.status_code == 429 and "Too many failed sign-ins for 'Mallory'" in html.unescape(limited.text)
    assert int(limited.headers["retry-after"]) >= 1
    assert attempt("Nina", passcode).status_code == 303, "another name still gets in"
    for name in ("Oscar", "Peggy", "Quinn", "Rupert", "Sybil"):
        attempt(name, "guess")
    blocked = attempt("Trent", passcode)
    assert blocked.status_code == 429 and "from this device" in html.unescape(blocked.text)


# ---------------------------------------------------------------- the other modes


def test_the_host_at_the_machine_itself_needs_no_sign_in(tmp_path_factory):
    server = start(tmp_path_factory, "--engines", "fake")
    try:
        details = server.health()
        assert details["app"] == "melange", "loopback is the host by default"
        assert server.session().get(f"{server.url}/config").status_code == 200
    finally:
        server.stop()


def test_a_full_queue_answers_busy(tmp_path_factory):
    server = start(tmp_path_factory, "--queue-size", "1", "--no-loopback-is-host")
    try:
        host = server.login("admin", ADMIN_PASSWORD)
        index = chat_index(server, host)
        story = ["Write a long story about a lighthouse keeper.", "", 0.0, 0.9, 40, 1.1, 512, 3, None]
        answers = [join(server, host, index, story, uuid.uuid4().hex) for _ in range(4)]
        codes = [a.status_code for a in answers]
        assert codes.count(503) >= 1 and codes[0] == 200, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.json()["detail"] == "Melange is busy: the queue is full. Try again in a moment."
    finally:
        server.stop()


def test_no_auth_shows_its_banner_and_http_warns_about_microphones(tmp_path_factory):
    server = start(tmp_path_factory, "--no-auth", "--http", "--engines", "fake")
    try:
        page = server.session().get(f"{server.url}/config").json()
        banners = [c for c in page["components"] if "no-auth-banner" in str(c.get("props", {}).get("value", ""))]
        assert banners, "a red banner on every page"
        printed = server.log.read_text()
        assert "--no-auth: anyone on the network" in printed and "--http: browsers allow the microphone only over https" in printed
    finally:
        server.stop()


def test_an_upload_past_the_size_limit_is_refused_and_nothing_is_kept(tmp_path_factory, tmp_path):
    server = start(tmp_path_factory, "--engines", "fake", "--max-upload-mb", "1", "--no-loopback-is-host")
    try:
        guest = server.login("Walter", server.passcode)
        big = tmp_path / "big.wav"
        big.write_bytes(b"\0" * (3 * 1024 * 1024))
        with big.open("rb") as f:
            answer = guest.post(f"{server.url}/gradio_api/upload", files={"files": ("big.wav", f)})
        assert answer.status_code == 413, (answer.status_code, answer.text)
        assert "maximum allowed size" in answer.text
        assert server.health()["status"] == "ok"
    finally:
        server.stop()


def test_the_certificate_is_kept_and_reused_with_its_fingerprint_printed(server, tmp_path):
    cert = server.data_dir / "tls" / "melange-cert.pem"
    key = server.data_dir / "tls" / "melange-key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    from server.tls import fingerprint, self_signed

    printed = server.printed(r"fingerprint[^\n]*\n\s+([0-9A-F:]{95})")
    assert printed == fingerprint(cert)
    again = self_signed(server.data_dir / "tls", ["localhost", "127.0.0.1"])
    assert not again.made_now and again.fingerprint == printed, "reused on the next start"
