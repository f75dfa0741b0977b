"""The OpenAI-compatible API against the raw engines, in one run; and Melange in front of a llama.cpp server.

    python bench/api.py [--runs 5] [--max-tokens 256] [--only chat,speech,image,remote]

Prints JSON. Each section runs the raw engine and the same request through the running app's ``/v1``,
alternating, so drift on a shared machine hits both alike; medians, with the raw figure beside each.

- chat: llama-cpp-python streaming vs ``/v1/chat/completions`` with ``stream: true`` read off the wire
  (tokens/s after the first token, and time to the first token). Goal: >= 0.98x raw tokens/s, first token
  <= 5 ms later.
- speech: faster-whisper itself on a >= 60 s file vs ``/v1/audio/transcriptions`` (upload included), same beam,
  VAD, threads and compute type; raw also at the app's batch priority. Goal: >= 0.97x.
- image: the tiny demo pipeline vs ``/v1/images/generations`` (b64_json: the PNG with its recipe, saved in
  the gallery). Goal: >= 0.97x.
- remote: a ``python -m llama_cpp.server`` on loopback called directly vs through a Melange with
  ``--chat-backend openai`` in front of it. Goal: <= 5 ms added to the first token.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat import PROMPT, SYSTEM, decode_rate  # noqa: E402
from bench.chat import raw_run as raw_chat  # noqa: E402
from bench.common import machine, running_app, summary  # noqa: E402
from engines import embedded, priority  # noqa: E402

SAMPLING = {"temperature": 0.0, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}


def stream_chat(http, url: str, max_tokens: int, seed: int, model: str, llm) -> dict:
    """One streamed chat completion read off the wire: time to the first content, then tokens/s."""
    body = {
        "model": model, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens, "seed": seed, "stream": True, **SAMPLING,
    }  # fmt: skip
    first = last = None
    pieces = []
    started = time.perf_counter()
    with http.stream("POST", f"{url}/chat/completions", json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            choices = json.loads(line[5:])["choices"]
            text = choices[0].get("delta", {}).get("content") if choices else None
            if text:
                last = time.perf_counter()
                first = first or last
                pieces.append(text)
    text = "".join(pieces)
    tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True))
    return {"ttft": first - started, "tokens": tokens, "tok_s": decode_rate(tokens, first, last), "text": text}


def compare_chat(raw: list[dict], app: list[dict]) -> dict:
    raw_tps, app_tps = summary([r["tok_s"] for r in raw]), summary([a["tok_s"] for a in app])
    raw_ttft, app_ttft = summary([r["ttft"] for r in raw]), summary([a["ttft"] for a in app])
    return {
        "raw": {"tokens_per_second": raw_tps, "ttft_seconds": raw_ttft},
        "app": {"tokens_per_second": app_tps, "ttft_seconds": app_ttft},
        "app_over_raw_tokens_per_second": round(app_tps["median"] / raw_tps["median"], 3),
        "app_extra_ttft_ms": round((app_ttft["median"] - raw_ttft["median"]) * 1000, 2),
        "same_text": all(r["text"] == a["text"] for r, a in zip(raw, app)),
        "tokens_median": sorted(a["tokens"] for a in app)[len(app) // 2],
    }


def llama(threads: int, device: str):
    from llama_cpp import Llama

    return Llama(model_path=str(embedded.smollm2_gguf()), n_ctx=4096, n_threads=threads, n_gpu_layers=-1 if device == "cuda" else 0, verbose=False)


def bench_chat(args, http) -> dict:
    llm = llama(args.threads, args.device)
    raw, app = [], []
    with running_app("--threads", str(args.threads), "--device", args.device) as url:
        v1 = f"{url}/v1"
        raw_chat(llm, 16, 1), stream_chat(http, v1, 16, 1, "chat", llm)  # warm-up: load the model on both sides
        for i in range(args.runs):
            raw.append(raw_chat(llm, args.max_tokens, 100 + i))
            app.append(stream_chat(http, v1, args.max_tokens, 100 + i, "chat", llm))
    return {"model": embedded.SMOLLM2_NAME, "threads": args.threads, "max_tokens": args.max_tokens, **compare_chat(raw, app)}


def bench_remote(args, http) -> dict:
    from tests.llama_server import LlamaServer

    llm = llama(1, "cpu")  # the tokenizer, to count tokens alike on both sides
    direct, front = [], []
    with tempfile.TemporaryDirectory(prefix="melange-bench-llama-") as tmp:
        server = LlamaServer(Path(tmp) / "llama.log", threads=args.threads)
        try:
            model = server.model()
            with running_app("--engines", "fake", "--chat-backend", "openai", "--chat-base-url", server.url) as url:
                v1 = f"{url}/v1"
                stream_chat(http, server.url, 16, 1, model, llm), stream_chat(http, v1, 16, 1, "chat", llm)  # warm-up
                for i in range(args.runs):
                    direct.append(stream_chat(http, server.url, args.max_tokens, 100 + i, model, llm))
                    front.append(stream_chat(http, v1, args.max_tokens, 100 + i, "chat", llm))
        finally:
            server.stop()
    result = compare_chat(direct, front)
    result["direct"], result["melange_in_front"] = result.pop("raw"), result.pop("app")
    result["melange_over_direct_tokens_per_second"] = result.pop("app_over_raw_tokens_per_second")
    result["melange_extra_ttft_ms"] = result.pop("app_extra_ttft_ms")
    return {"server": "python -m llama_cpp.server", "model": embedded.SMOLLM2_NAME, "threads": args.threads, "max_tokens": args.max_tokens, **result}


def bench_speech(args, http) -> dict:
    """faster-whisper as a script runs it (its own decoder, the calling thread at normal priority) against
    ``/v1``, with what ``/v1`` asks of it: the same model, compute type and threads, beam 5, the VAD filter, no
    word timestamps. The app runs file jobs at batch priority (``engines.priority``), so raw faster-whisper is
    also timed on a lowered thread with a model loaded there ("raw_batch_priority"): on a busy machine the
    priority alone moves the figure, and this tells it from the app's own work."""
    from faster_whisper import WhisperModel

    from engines.priority import run_on_fresh_thread
    from tests import fixtures

    model_dir = str(embedded.whisper_tiny_en())

    def load() -> WhisperModel:
        return WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)

    model = load()
    lowered = run_on_fresh_thread(load, background=True)  # CTranslate2's workers take the loader's priority

    def raw_once(path: Path, whisper: WhisperModel = model) -> tuple[float, str]:
        started = time.perf_counter()
        segments, _ = whisper.transcribe(str(path), beam_size=5, vad_filter=True, word_timestamps=False)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        return time.perf_counter() - started, text

    def lowered_once(path: Path) -> tuple[float, str]:
        return run_on_fresh_thread(lambda: raw_once(path, lowered), background=True)

    def app_once(url: str, path: Path) -> tuple[float, str]:
        started = time.perf_counter()
        with path.open("rb") as f:
            answer = http.post(f"{url}/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": (path.name, f, "audio/wav")})
        answer.raise_for_status()
        return time.perf_counter() - started, answer.json()["text"]

    with tempfile.TemporaryDirectory(prefix="melange-bench-audio-") as tmp:
        path, _ = fixtures.long_speech_wav(Path(tmp))
        duration = fixtures.wav_duration(path)
        raw, low, app = [], [], []
        load_before = os.getloadavg()
        with running_app("--threads", str(args.threads), "--device", "cpu") as url:
            raw_once(path), lowered_once(path), app_once(url, path)  # warm-up: load the model on every side
            for _ in range(args.runs):
                raw.append(raw_once(path))
                low.append(lowered_once(path))
                app.append(app_once(url, path))
        load_after = os.getloadavg()
    r, lo, a = summary([t for t, _ in raw]), summary([t for t, _ in low]), summary([t for t, _ in app])
    return {
        "model": embedded.WHISPER_TINY_EN_NAME, "audio_seconds": round(duration, 1), "threads": args.threads,
        "beam_size": 5, "vad_filter": True, "compute_type": "int8",
        "raw_seconds": r, "raw_batch_priority_seconds": lo, "app_seconds": a,
        "raw_rtf": round(r["median"] / duration, 4), "raw_batch_priority_rtf": round(lo["median"] / duration, 4),
        "app_rtf": round(a["median"] / duration, 4),
        "app_speed_over_raw": round(r["median"] / a["median"], 3),
        "app_speed_over_raw_batch_priority": round(lo["median"] / a["median"], 3),
        "same_text": all(x == y == z for (_, x), (_, y), (_, z) in zip(raw, low, app)),
        "load_average": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after]},
    }  # fmt: skip


def bench_image(args, http) -> list[dict]:
    from bench.image import CPU_CONFIGS
    from bench.image import PROMPT as IMAGE_PROMPT
    from bench.image import lowered, raw_pipeline
    from bench.image import raw_run as raw_image
    from engines.image.tiny_pipeline import ensure_tiny_pipeline

    out = []
    with tempfile.TemporaryDirectory(prefix="melange-bench-image-") as tmp:
        # The app builds the same bytes. Built on the kept job thread the raw runs use (bench.image.lowered): each
        # thread that calls torch keeps an OpenMP team, and more team threads than cores cut libgomp's spin.
        pipe = lowered(lambda: raw_pipeline(ensure_tiny_pipeline(Path(tmp)), "cpu"))
        with running_app("--device", "cpu") as url:

            def app_once(config: dict, seed: int) -> float:
                body = {
                    "prompt": IMAGE_PROMPT, "size": f"{config['width']}x{config['height']}", "steps": config["steps"],
                    "guidance": config["guidance"], "sampler": config["sampler"], "seed": seed, "response_format": "b64_json",
                }  # fmt: skip
                started = time.perf_counter()
                answer = http.post(f"{url}/v1/images/generations", json=body)
                answer.raise_for_status()
                assert base64.b64decode(answer.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")
                return time.perf_counter() - started

            for config in CPU_CONFIGS:
                raw_image(pipe, config, 0), app_once(config, 0)  # warm-up: load, allocate
                raw, app = [], []
                for i in range(args.runs):
                    raw.append(raw_image(pipe, config, i + 1))
                    app.append(app_once(config, i + 1))
                r, a = summary(raw), summary(app)
                out.append({**config, "raw_seconds": r, "app_seconds": a, "app_speed_over_raw": round(r["median"] / a["median"], 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="llama.cpp and Whisper threads, both sides (default: the app's own)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="for chat")
    parser.add_argument("--only", default="chat,remote,speech,image")
    args = parser.parse_args()
    import httpx

    wanted = args.only.split(",")
    if "image" in wanted:
        # The raw images' torch waits for its threads as the app's does. llama.cpp in this process then shares
        # torch's libgomp (engines.priority), as it does in the app; without images, raw chat is
        # llama-cpp-python alone with its libgomp's default policy, as a script runs it.
        priority.load_torch_with_sleeping_waits()
    result: dict = {"benchmark": "api", "machine": machine(), "runs": args.runs}
    sections = {"chat": bench_chat, "remote": bench_remote, "speech": bench_speech, "image": bench_image}
    with httpx.Client(timeout=600, trust_env=False) as http:  # one keep-alive connection per server, as a script keeps
        for name, run in sections.items():
            if name not in wanted:
                continue
            try:
                result[name] = run(args, http)
            except Exception as e:  # noqa: BLE001 - one failed section must not lose the others' figures
                result[name] = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
