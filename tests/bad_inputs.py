"""Bad inputs through every API the app serves: the panels' Gradio endpoints (``/chat``, ``/generate``,
``/transcribe``), the page's model switches and the OpenAI-compatible ``/v1``.

Each case sends one bad input to the real app and says what a person must be told: a ``/v1`` answer is a 4xx in
OpenAI's shape whose message matches ``expect``; a Gradio endpoint raises ``gr.Error`` whose message matches it.
After every case the app must still answer. ``tests/test_bad_inputs.py`` runs them as tests;
``bench/bad_inputs.py`` runs them all and prints the JSON list with each answer.

The files the cases send are made here (``make_files``): no fixture ships in the repository.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from tests import fixtures
from tests.app_server import AppServer

HUGE_TEXT = "lighthouse " * (10 * 2**20 // 11)  # 10 MB of words
CONTROL_TEXT = "\x00\x01\x02\x1b\x7f\u202e\ufeff\u200b"  # NUL, escape, delete, bidi override, BOM, zero width
SESSIONS = itertools.count()
SCRIPT = b"<html><script>alert(document.cookie)</script></html>"


@dataclass
class Answer:
    status: int | str  # an HTTP status, "error" for a gr.Error, "ok" when it was accepted
    message: str
    data: object = None  # what an accepted call answered


@dataclass
class Case:
    name: str
    send: Callable[[Callers], Answer]
    expect: str  # a regex the message must match (case-insensitive); "ok" cases check their answer in ``send``
    ok: bool = False  # a sensible answer (not an error) is right here, e.g. an image that is also something else


@dataclass
class Callers:
    server: AppServer
    files: dict[str, Path]
    http: httpx.Client


# ------------------------------------------------------------------ the files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int) -> Path:
    """A 1-bit black PNG of side × side pixels: a few hundred KB that would decode to side² pixels."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))
    return path


def small_png(size: tuple[int, int] = (64, 64), colour=(200, 120, 40)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def make_files(directory: Path, models_dir: Path) -> dict[str, Path]:
    """Every bad file the cases send, and the broken models in the app's models folder (make it before the app
    starts, so the pickers list them)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["speech"] = fixtures.speech_wav(directory)
    files["text_as_wav"] = fixtures.not_audio_file(directory)
    files["empty_wav"] = fixtures.empty_file(directory)
    whole = files["speech"].read_bytes()
    files["truncated_wav"] = directory / "truncated.wav"
    files["truncated_wav"].write_bytes(whole[: 44 + 3200])  # the header still says the whole length
    files["png_as_audio"] = directory / "picture.wav"
    files["png_as_audio"].write_bytes(small_png())
    # A polyglot: a PDF that is also a ZIP holding a web page, named as a recording.
    polyglot = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(polyglot, "w") as archive:
        archive.writestr("index.html", SCRIPT)
    files["polyglot_wav"] = directory / "polyglot.wav"
    files["polyglot_wav"].write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + polyglot.getvalue() + SCRIPT)
    files["noise_8k_6ch"] = directory / "six_channels_8k.wav"
    _six_channel_wav(files["noise_8k_6ch"])
    files["bomb_png"] = bomb_png(directory / "bomb.png", 20_000)  # 400 Mpx: past PIL's own bomb limit
    files["large_png"] = bomb_png(directory / "large.png", 10_000)  # 100 Mpx: PIL only warns
    files["truncated_png"] = directory / "truncated.png"
    files["truncated_png"].write_bytes(small_png((256, 256), (10, 200, 90))[:200])
    files["text_as_png"] = directory / "notes.png"
    files["text_as_png"].write_text("This is not a picture.\n")
    # A real image with a web page after its end: it must be read as the image it is, and nothing else kept.
    files["polyglot_png"] = directory / "polyglot.png"
    files["polyglot_png"].write_bytes(small_png((64, 64)) + SCRIPT)
    files["wrong_size_mask"] = directory / "mask.png"
    files["wrong_size_mask"].write_bytes(small_png((32, 48), (255, 255, 255)))
    files["start_image"] = directory / "start.png"
    files["start_image"].write_bytes(small_png((64, 64)))

    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "empty.gguf").write_bytes(b"")
    (models_dir / "garbage.gguf").write_bytes(b"GGUF" + b"\xff" * 4096)
    (models_dir / "empty.safetensors").write_bytes(b"")
    (models_dir / "folder.safetensors").mkdir(exist_ok=True)
    broken_whisper = models_dir / "broken-whisper"
    broken_whisper.mkdir(exist_ok=True)
    (broken_whisper / "model.bin").write_bytes(b"\x00" * 1024)
    (broken_whisper / "config.json").write_text('{"alignment_heads": [[0, 0]]}')  # listed as Whisper; its weights are not
    (broken_whisper / "vocabulary.txt").write_text("")
    return files


def _six_channel_wav(path: Path) -> None:
    """Two seconds of quiet noise on six channels at 8 kHz: not speech, but a real recording's shape."""
    import wave

    import numpy as np

    samples = (np.random.default_rng(0).normal(0, 300, (16000, 6))).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(6)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())


# ------------------------------------------------------------------ sending


def upload(callers: Callers, path: Path) -> dict:
    """A file as the page sends it: uploaded first, then named by the path the server gave it."""
    with path.open("rb") as f:
        answer = callers.http.post(f"{callers.server.url}/gradio_api/upload", files=[("files", (path.name, f))])
    answer.raise_for_status()
    return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def gradio_call(callers: Callers, api: str, **values) -> Answer:
    """One call of a panel's endpoint through the queue, as any HTTP client can send it (JSON with NaN and
    Infinity literals too, which gradio_client refuses to send), its inputs by name and the rest at their
    defaults; files (``Path``) uploaded first. A gr.Error is the answer ``error``, with its message."""
    server = callers.server
    values = {name: upload(callers, v) if isinstance(v, Path) else v for name, v in values.items()}
    config = callers.http.get(f"{server.url}/config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api)
    session = f"bad-inputs-{next(SESSIONS)}"
    body = {"data": server.inputs(api, **values), "fn_index": fn_index, "session_hash": session}
    return queue_call(callers, body)


def queue_call(callers: Callers, body: dict) -> Answer:
    url = callers.server.url
    joined = callers.http.post(f"{url}/gradio_api/queue/join", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    if joined.status_code != 200:
        return Answer(joined.status_code, joined.text[:300])
    with callers.http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": body["session_hash"]}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_completed":
                output = message.get("output") or {}
                if message.get("success"):
                    return Answer("ok", json.dumps(output.get("data"), default=str)[:500], output.get("data"))
                return Answer("error", str(output.get("error") or ""))
    return Answer("error", "the queue closed without an answer")


def v1(callers: Callers, method: str, path: str, **kwargs) -> Answer:
    answer = callers.http.request(method, f"{callers.server.url}/v1{path}", **kwargs)
    try:
        body = answer.json()
    except ValueError:
        return Answer(answer.status_code, answer.text[:300])
    error = body.get("error") if isinstance(body, dict) else None
    if error is None:
        return Answer(answer.status_code, json.dumps(body)[:300])
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return Answer(answer.status_code, f"not OpenAI's error shape: {body}")
    return Answer(answer.status_code, error["message"])


def chat(callers: Callers, **values) -> Answer:
    values.setdefault("message", "Hello")
    values.setdefault("max_tokens", 4)
    return gradio_call(callers, "chat", **values)


def generate(callers: Callers, **values) -> Answer:
    base = dict(prompt="a lighthouse", width=64, height=64, steps=2, batch_count=1, batch_size=1, seed=1)
    return gradio_call(callers, "generate", **{**base, **values})


def transcribe(callers: Callers, audio, **values) -> Answer:
    return gradio_call(callers, "transcribe", audio=audio, **values)


def v1_chat(callers: Callers, **body) -> Answer:
    body.setdefault("model", "chat")
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    body.setdefault("max_tokens", 4)
    return v1(callers, "POST", "/chat/completions", json=body)


def v1_image(callers: Callers, **body) -> Answer:
    body = {"prompt": "a lighthouse", "size": "64x64", "steps": 2, **body}
    return v1(callers, "POST", "/images/generations", json=body)


def v1_audio(callers: Callers, path: Path, **form) -> Answer:
    with path.open("rb") as f:
        return v1(callers, "POST", "/audio/transcriptions", files={"file": (path.name, f)}, data={"model": "whisper-1", **form})


def raw_json(callers: Callers, path: str, text: str) -> Answer:
    """A body sent as it is, not through a JSON encoder (NaN and Infinity literals, broken JSON)."""
    return v1(callers, "POST", path, content=text.encode(), headers={"content-type": "application/json"})


def page_switch(callers: Callers, elem_id: str, choice_name: str) -> Answer:
    """The page's "Use this model" of the picker ``elem_id``, choosing the entry named ``choice_name``, as the host's
    browser sends it through the queue (a page event, not an API endpoint)."""
    config = callers.http.get(f"{callers.server.url}/config").json()
    components = {c["id"]: c for c in config["components"]}
    picker = next(c for c in components.values() if c.get("props", {}).get("elem_id") == elem_id)
    value = next(v for label, v in picker["props"]["choices"] if choice_name in str(label))
    dependency = next(d for d in config["dependencies"] if d["inputs"][:1] == [picker["id"]] and any(t[1] == "click" for t in d["targets"]))
    data = [value, *(components[i]["props"].get("value") for i in dependency["inputs"][1:])]
    body = {"data": data, "fn_index": dependency["id"], "session_hash": f"bad-inputs-{next(SESSIONS)}", "trigger_id": dependency["targets"][0][0]}
    return queue_call(callers, body)


def polyglot_image_is_redrawn(callers: Callers) -> Answer:
    """A real PNG with a web page after it: used as the picture it is, and the saved image carries no page."""
    answer = generate(callers, init_image=callers.files["polyglot_png"], strength=0.5)
    if answer.status != "ok":
        return answer
    files = answer.data[0]
    if not files or any(b"<script" in Path(f["path"]).read_bytes() for f in files):
        return Answer("ok", f"the saved images carry the script, or none was made: {files}")
    return Answer("ok", "used as the image it is; the saved PNG holds no script")


def model_keeps_serving(callers: Callers, switch: Answer, check: Callable[[Callers], Answer]) -> Answer:
    """After a refused model switch the previous model still serves: ``check`` must answer ok."""
    after = check(callers)
    if after.status != "ok":
        return Answer(switch.status, f"{switch.message} -- but afterwards the panel failed: {after.message}")
    return switch


# ------------------------------------------------------------------ the cases

NAN = float("nan")
INF = float("inf")

CASES: list[Case] = [
    # /chat (Gradio): wrong types, NaN, infinity, negative and huge numbers, empty, 10 MB, control characters
    Case("chat: empty message", lambda c: chat(c, message="   "), r"empty"),
    Case("chat: only control characters", lambda c: chat(c, message=CONTROL_TEXT), r"empty"),
    Case("chat: 10 MB message", lambda c: chat(c, message=HUGE_TEXT), r"too long|characters"),
    Case("chat: 10 MB system prompt", lambda c: chat(c, system_prompt=HUGE_TEXT), r"too long|characters"),
    Case("chat: temperature NaN", lambda c: chat(c, temperature=NAN), r"temperature"),
    Case("chat: temperature infinity", lambda c: chat(c, temperature=INF), r"temperature"),
    Case("chat: temperature negative", lambda c: chat(c, temperature=-1.0), r"temperature"),
    Case("chat: temperature a word", lambda c: chat(c, temperature="hot"), r"temperature|number"),
    Case("chat: top_p 2", lambda c: chat(c, top_p=2.0), r"top.?p"),
    Case("chat: top_k negative", lambda c: chat(c, top_k=-5), r"top.?k"),
    Case("chat: max_tokens huge", lambda c: chat(c, max_tokens=10**9), r"max"),
    Case("chat: max_tokens negative", lambda c: chat(c, max_tokens=-1), r"max"),
    Case("chat: max_tokens a list", lambda c: chat(c, max_tokens=[1, 2]), r"max|number"),
    Case("chat: seed past 64 bits", lambda c: chat(c, seed=2**70), r"seed"),
    Case("chat: another conversation's id, as a path", lambda c: chat(c, conversation_id="../../etc/passwd"), r"no conversation"),
    # /generate (Gradio)
    Case("image: width not a multiple of 8", lambda c: generate(c, width=100), r"multiple of 8"),
    Case("image: negative width", lambda c: generate(c, width=-512), r"width"),
    Case("image: 10,000 px outpainting canvas", lambda c: generate(c, width=10_000, height=10_000), r"at most|too large|limit|width"),
    Case("image: zero steps", lambda c: generate(c, steps=0), r"steps"),
    Case("image: NaN steps", lambda c: generate(c, steps=NAN), r"steps"),
    Case("image: infinite guidance", lambda c: generate(c, guidance=INF), r"guidance"),
    Case("image: unknown sampler", lambda c: generate(c, sampler="Banana"), r"sampler"),
    Case("image: batch of 1,000", lambda c: generate(c, batch_size=1000), r"batch"),
    Case("image: strength 5", lambda c: generate(c, init_image=c.files["start_image"], strength=5.0), r"strength"),
    Case("image: a text file as the start image", lambda c: generate(c, init_image=c.files["text_as_png"]), r"not an image|image"),
    Case("image: a truncated PNG", lambda c: generate(c, init_image=c.files["truncated_png"]), r"image"),
    Case("image: a 400-megapixel decompression bomb", lambda c: generate(c, init_image=c.files["bomb_png"]), r"image|large|pixels"),
    Case("image: a 100-megapixel PNG of 300 KB", lambda c: generate(c, init_image=c.files["large_png"]), r"large|pixels|at most"),
    Case("image: a mask of the wrong size", lambda c: generate(c, init_image=c.files["start_image"], mask=c.files["wrong_size_mask"]), r"mask"),
    Case("image: a PNG with a web page after it", polyglot_image_is_redrawn, r"holds no script", ok=True),
    Case("image: a 0-byte model file", lambda c: generate(c, model="empty.safetensors"), r"empty|not a|could not|cannot|read"),
    Case("image: a folder where a model file is expected", lambda c: generate(c, model="folder.safetensors"), r"folder|not a|could not|cannot|model"),
    # /transcribe (Gradio)
    Case("transcribe: a text file named .wav", lambda c: transcribe(c, c.files["text_as_wav"]), r"audio"),
    Case("transcribe: a 0-byte file", lambda c: transcribe(c, c.files["empty_wav"]), r"empty|audio"),
    Case("transcribe: a PNG named .wav", lambda c: transcribe(c, c.files["png_as_audio"]), r"audio"),
    Case("transcribe: a PDF/ZIP/HTML polyglot named .wav", lambda c: transcribe(c, c.files["polyglot_wav"]), r"audio"),
    Case("transcribe: an unknown language", lambda c: transcribe(c, c.files["speech"], language="klingon"), r"language|English"),
    Case("transcribe: beam size 0", lambda c: transcribe(c, c.files["speech"], beam_size=0), r"beam"),
    Case("transcribe: 99 speakers", lambda c: transcribe(c, c.files["speech"], speakers=True, num_speakers=99), r"speakers"),
    # the page's model switches (host only): a broken model is refused and the previous one keeps serving
    Case("chat model: a 0-byte GGUF", lambda c: model_keeps_serving(c, page_switch(c, "chat-model-choice", "empty.gguf"), lambda c: chat(c)), r"empty|could not|cannot|gguf|load"),
    Case("chat model: a GGUF of garbage", lambda c: model_keeps_serving(c, page_switch(c, "chat-model-choice", "garbage.gguf"), lambda c: chat(c)), r"could not|cannot|gguf|load"),
    Case("speech model: a broken Whisper folder", lambda c: model_keeps_serving(c, page_switch(c, "transcribe-model-choice", "broken-whisper"), lambda c: transcribe(c, c.files["speech"])), r"could not|cannot|load|whisper|model"),
    # /v1
    Case("v1: malformed JSON", lambda c: raw_json(c, "/chat/completions", '{"model": "chat", "messages": ['), r"JSON"),
    Case("v1: JSON that is a list", lambda c: raw_json(c, "/chat/completions", "[1, 2, 3]"), r"object|body|valid"),
    Case("v1: NaN temperature literal", lambda c: raw_json(c, "/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'), r"temperature|JSON|finite|number"),
    Case("v1: unknown model", lambda c: v1_chat(c, model="gpt-4o"), r"does not exist"),
    Case("v1: a wrong role", lambda c: v1_chat(c, messages=[{"role": "wizard", "content": "hi"}]), r"role"),
    Case("v1: no messages", lambda c: v1_chat(c, messages=[]), r"messages"),
    Case("v1: content of the wrong type", lambda c: v1_chat(c, messages=[{"role": "user", "content": 42}]), r"content"),
    Case("v1: a 10 MB prompt", lambda c: v1_chat(c, messages=[{"role": "user", "content": HUGE_TEXT}]), r"larger than|MB"),
    Case("v1: max_tokens negative", lambda c: v1_chat(c, max_tokens=-5), r"max_tokens"),
    Case("v1: max_tokens a string", lambda c: v1_chat(c, max_tokens="many"), r"max_tokens"),
    Case("v1: seed past 64 bits", lambda c: v1_chat(c, seed=2**70), r"seed"),
    Case("v1: text n=100", lambda c: v1_chat(c, n=100), r"\bn\b"),
    Case("v1: images n=100", lambda c: v1_image(c, n=100), r"\bn\b|10"),
    Case("v1: size banana", lambda c: v1_image(c, size="banana"), r"size"),
    Case("v1: size 10000x10000", lambda c: v1_image(c, size="10000x10000"), r"size|width|at most|large|limit"),
    Case("v1: image steps a word", lambda c: v1_image(c, steps="lots"), r"steps"),
    Case("v1: a 0-byte image model", lambda c: v1_image(c, model="empty.safetensors"), r"empty|not a|could not|cannot|read|does not exist"),
    Case("v1: a folder as the image model", lambda c: v1_image(c, model="folder.safetensors"), r"folder|not a|could not|cannot|does not exist|model"),
    Case("v1: audio that is not audio", lambda c: v1_audio(c, c.files["text_as_wav"]), r"audio"),
    Case("v1: a 0-byte audio file", lambda c: v1_audio(c, c.files["empty_wav"]), r"empty|audio"),
    Case("v1: a polyglot as audio", lambda c: v1_audio(c, c.files["polyglot_wav"]), r"audio"),
    Case("v1: a bad response_format", lambda c: v1_audio(c, c.files["speech"], response_format="mp3"), r"response_format"),
    Case("v1: no file", lambda c: v1(c, "POST", "/audio/transcriptions", data={"model": "whisper-1"}), r"file"),
    Case("v1: embeddings of nothing", lambda c: v1(c, "POST", "/embeddings", json={"model": "embedding", "input": []}), r"input"),
    Case("v1: an unknown route", lambda c: v1(c, "POST", "/engines/davinci/completions", json={}), r"not found|does not exist|unknown|invalid url"),
]

# Sensible output, not an error, is right for these: short or odd audio still gets a transcript.
ACCEPTED: list[Case] = [
    Case("transcribe: a WAV cut short (its header says longer)", lambda c: transcribe(c, c.files["truncated_wav"]), r".", ok=True),
    Case("transcribe: six channels at 8 kHz", lambda c: transcribe(c, c.files["noise_8k_6ch"]), r".", ok=True),
]


def judge(case: Case, answer: Answer) -> str | None:
    """What is wrong with ``answer`` for ``case``, or None when it is what a person should get."""
    if case.ok:
        if answer.status != "ok":
            return f"refused ({answer.status}): {answer.message}"
        return None if re.search(case.expect, answer.message, re.I) else f"unexpected: {answer.message}"
    if answer.status == "ok":
        return f"accepted: {answer.message}"
    if isinstance(answer.status, int) and not 400 <= answer.status < 500:
        return f"status {answer.status} is not a 4xx: {answer.message}"
    if answer.status == "client":
        return f"the client could not even send it: {answer.message}"
    if not answer.message.strip() or answer.message.strip() in ("Error", "None"):
        return "no message"
    if "Traceback" in answer.message or re.search(r"\bFile \"/|component at index|event handler", answer.message):
        return f"a traceback, not a message: {answer.message[:200]}"
    if not re.search(case.expect, answer.message, re.I):
        return f"message does not say what is wrong (expected /{case.expect}/): {answer.message[:300]}"
    return None
