"""Chat benchmark: raw llama-cpp-python streaming vs the same request through the running app's API.

    python bench/chat.py [--runs 5] [--max-tokens 128]

Prints JSON: tokens/s and time to first token for both, and their ratio. Same model, prompt, seed and
max tokens; runs alternate raw/app so drift on a shared machine hits both alike. The app is measured
twice: through gradio_client ("app"), whose receiver polls every 50 ms, and through the queue's event
stream read directly ("app_sse"), which is what a browser sees.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, running_app, summary  # noqa: E402
from engines import embedded  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper and a storm."
SYSTEM = "You are a helpful assistant."


def decode_rate(tokens: int, first: float, last: float) -> float:
    """Tokens per second after the first token: the streaming speed a reader sees."""
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def raw_run(llm, max_tokens: int, seed: int) -> dict:
    started = time.perf_counter()
    first = last = None
    pieces = []
    for chunk in llm.create_chat_completion(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        temperature=0.0,
        top_p=0.9,
        top_k=40,
        repeat_penalty=1.1,
        max_tokens=max_tokens,
        seed=seed,
        stream=True,
    ):
        text = chunk["choices"][0]["delta"].get("content")
        if text:
            last = time.perf_counter()
            first = first or last
            pieces.append(text)
    tokens = len(llm.tokenize("".join(pieces).encode(), add_bos=False, special=True))
    return {"ttft": first - started, "tokens": tokens, "tok_s": decode_rate(tokens, first, last), "text": "".join(pieces)}


def app_run(client, llm, max_tokens: int, seed: int) -> dict:
    started = time.perf_counter()
    first = last = None
    text = ""
    job = client.submit(PROMPT, SYSTEM, 0.0, 0.9, 40, 1.1, max_tokens, seed, None, api_name="/chat")
    for update in job:
        content = reply_text(update[0])
        if content and content != text:
            last = time.perf_counter()
            first = first or last
            text = content
    tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True))
    return {"ttft": first - started, "tokens": tokens, "tok_s": decode_rate(tokens, first, last), "text": text}


def reply_text(chatbot) -> str:
    if not chatbot or chatbot[-1]["role"] != "assistant":
        return ""
    content = chatbot[-1]["content"]
    content = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    return content.split("\n\n<sub>")[0]  # the stats footer is not part of the reply


def chat_endpoint(url: str) -> tuple[int, list]:
    """The /chat event's index and its inputs, with the server-side State left as None."""
    import requests

    config = requests.get(f"{url}/config", timeout=10).json()
    components = {c["id"]: c for c in config["components"]}
    for index, dep in enumerate(config["dependencies"]):
        if dep.get("api_name") == "chat":
            return dep.get("id", index), [components[i]["type"] for i in dep["inputs"]]
    raise RuntimeError("the app has no /chat endpoint")


def app_sse_run(url: str, endpoint: tuple[int, list], llm, max_tokens: int, seed: int) -> dict:
    """The app's queue API spoken directly, as the browser does: join, then read the event stream."""
    import uuid

    import httpx
    from gradio_client.utils import apply_diff

    fn_index, input_types = endpoint
    values = iter([PROMPT, SYSTEM, 0.0, 0.9, 40, 1.1, max_tokens, seed, None])
    data = [None if kind == "state" else next(values) for kind in input_types]
    session = uuid.uuid4().hex
    started = time.perf_counter()
    first = last = None
    outputs = None
    text = ""
    with httpx.Client(base_url=url, timeout=120) as http:
        http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session}).raise_for_status()
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_generating":
                    data_out = msg["output"]["data"]
                    outputs = list(data_out) if outputs is None else [apply_diff(o, d) for o, d in zip(outputs, data_out)]
                    content = reply_text(outputs[0])
                    if content and content != text:
                        last = time.perf_counter()
                        first = first or last
                        text = content
                elif msg.get("msg") == "process_completed":
                    break
    tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True))
    return {"ttft": first - started, "tokens": tokens, "tok_s": decode_rate(tokens, first, last), "text": text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="llama.cpp threads, both sides (default: the app's own default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()

    from gradio_client import Client
    from llama_cpp import Llama

    model = embedded.smollm2_gguf()
    llm = Llama(
        model_path=str(model),
        n_ctx=4096,
        n_threads=args.threads,
        n_gpu_layers=-1 if args.device == "cuda" else 0,
        verbose=False,
    )
    raw, app, sse = [], [], []
    with running_app("--threads", str(args.threads), "--device", args.device) as url:
        client = Client(url, verbose=False)
        endpoint = chat_endpoint(url)
        raw_run(llm, 16, 1), app_run(client, llm, 16, 1)  # warm-up: load the model on both sides
        for i in range(args.runs):
            raw.append(raw_run(llm, args.max_tokens, 100 + i))
            app.append(app_run(client, llm, args.max_tokens, 100 + i))
            sse.append(app_sse_run(url, endpoint, llm, args.max_tokens, 100 + i))
    same_text = all(r["text"] == a["text"] == b["text"] for r, a, b in zip(raw, app, sse))
    raw_tps, app_tps = summary([r["tok_s"] for r in raw]), summary([a["tok_s"] for a in app])
    raw_ttft, app_ttft = summary([r["ttft"] for r in raw]), summary([a["ttft"] for a in app])
    sse_tps, sse_ttft = summary([r["tok_s"] for r in sse]), summary([r["ttft"] for r in sse])
    result = {
        "benchmark": "chat",
        "model": embedded.SMOLLM2_NAME,
        "device": args.device,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "machine": machine(),
        "raw": {"tokens_per_second": raw_tps, "ttft_seconds": raw_ttft},
        "app": {"tokens_per_second": app_tps, "ttft_seconds": app_ttft},
        "app_sse": {"tokens_per_second": sse_tps, "ttft_seconds": sse_ttft},
        "app_over_raw_tokens_per_second": app_tps["median"] / raw_tps["median"],
        "app_extra_ttft_ms": (app_ttft["median"] - raw_ttft["median"]) * 1000,
        "app_sse_over_raw_tokens_per_second": sse_tps["median"] / raw_tps["median"],
        "app_sse_extra_ttft_ms": (sse_ttft["median"] - raw_ttft["median"]) * 1000,
        "same_text": same_text,
        "tokens_median": sorted(a["tokens"] for a in app)[len(app) // 2],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
