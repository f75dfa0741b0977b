"""Chat benchmark: raw llama-cpp-python streaming vs the same request through the running app's API.

    python bench/chat.py [--runs 5] [--max-tokens 128] [--turns 50]

Prints JSON: tokens/s and time to first token for both, and their ratio. Same model, prompt, seed and
max tokens; runs alternate raw/app so drift on a shared machine hits both alike. The app is measured
twice on its /chat API: through gradio_client ("app") and through the queue's event stream read directly
("app_sse"), which is what a browser does. gradio_client's receiver sleeps 50 ms whenever it finds no
message waiting, so its own floor is measured too ("client_floor"): the time to the first output of a
Gradio endpoint that does nothing, read through the same client. ``--turns N`` measures the page's Send in
a conversation of N turns instead (each update carries the whole conversation to the chatbot), against the
raw engine given the same history.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import client_floor, find_event, machine, running_app, sse_call, summary  # noqa: E402
from engines import embedded  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper and a storm."
SYSTEM = "You are a helpful assistant."


def decode_rate(tokens: int, first: float, last: float) -> float:
    """Tokens per second after the first token: the streaming speed a reader sees."""
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def raw_run(llm, max_tokens: int, seed: int, history: list[dict] | None = None) -> dict:
    # The app evaluates a reproducible (temperature 0) request from an empty cache, so that a prompt gives the
    # same reply whatever ran before (engines/chat/llama.py); the raw side does too, or it would time a cache
    # hit on the repeated prompt against the app's whole prompt.
    llm.reset()
    started = time.perf_counter()
    first = last = None
    pieces = []
    for chunk in llm.create_chat_completion(
        messages=[{"role": "system", "content": SYSTEM}, *(history or []), {"role": "user", "content": PROMPT}],
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
        content = update["reply"]
        if content and content != text:
            last = time.perf_counter()
            first = first or last
            text = content
    tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True))
    return {"ttft": first - started, "tokens": tokens, "tok_s": decode_rate(tokens, first, last), "text": text}


def endpoints(url: str) -> dict:
    """Queue indexes: the /chat API, the page's Send (with its input types, so the page's server-side State is
    left out as the browser leaves it) and a no-op to open a session with."""
    return {
        "api": find_event(url, api_name="chat")[0],
        "page": find_event(url, elem_id="chat-input", trigger="submit"),
        "noop": find_event(url, api_name="cancel")[0],  # the image panel's Cancel: does nothing when nothing runs
    }


def page_reply(outputs: list) -> str:
    chatbot = outputs[0]
    if not chatbot or chatbot[-1]["role"] != "assistant":
        return ""
    return message_text(chatbot[-1])


def page_inputs(max_tokens: int, seed: int) -> list:
    """The page's Send inputs but its State, as the browser sends them: the message, the documents chosen
    (none), the sampling controls, and the preset's name last."""
    return [PROMPT, [], SYSTEM, 0.0, 0.9, 40, 1.1, max_tokens, seed, None]


def sse_run(url: str, found: dict, where: str, llm, max_tokens: int, seed: int) -> dict:
    """The reply read off the event stream: through the /chat API ("api") or the page's Send ("page"). Each
    run is a new conversation in an open page: its session exists and the connection is up before timing."""
    import httpx

    values = [PROMPT, SYSTEM, 0.0, 0.9, 40, 1.1, max_tokens, seed]
    session = uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=120) as http:
        sse_call(http, found["noop"], [], session)
        if where == "api":
            fn_index, data = found["api"], [*values, None]  # None: a new conversation
            return timed_reply(http, fn_index, data, session, llm, lambda outputs: outputs[0]["reply"])
        fn_index, types = found["page"]
        given = iter(page_inputs(max_tokens, seed))
        data = [None if kind == "state" else next(given) for kind in types]
        return timed_reply(http, fn_index, data, session, llm, page_reply)


def timed_reply(http, fn_index: int, data: list, session: str, llm, reply_of) -> dict:
    """One event read off the event stream: time to the reply's first text (``reply_of`` finds it in the
    outputs), then tokens/s."""
    first = last = None
    text = ""

    def on_output(outputs):
        nonlocal first, last, text
        content = reply_of(outputs)
        if content and content != text:
            last = time.perf_counter()
            first = first or last
            text = content

    started = time.perf_counter()
    sse_call(http, fn_index, data, session, on_output)
    tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True))
    return {"ttft": first - started, "tokens": tokens, "tok_s": decode_rate(tokens, first, last), "text": text}


def message_text(message: dict) -> str:
    """A chatbot message's text without its stats footer (not part of the reply)."""
    content = message["content"]
    content = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    return content.split("\n\n<sub>")[0]


def long_conversation(url: str, llm, turns: int, runs: int, max_tokens: int) -> dict:
    """The page's Send in a conversation of ``turns`` turns (built through the /chat API), against the raw
    engine given the same history. Each run opens the conversation in a new page session as the sidebar does,
    then sends; the raw side gets the history the page showed."""
    import httpx

    api, _ = find_event(url, api_name="chat")
    page_send, types = find_event(url, elem_id="chat-input", trigger="submit")
    open_event, _ = find_event(url, elem_id="chat-history", trigger="input")
    # The page's load event fills the sidebar's choices for the session; the sidebar only opens one of them.
    config = httpx.get(f"{url}/config", timeout=30).json()
    sidebar = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "chat-history")
    page_load = next(d["id"] for d in config["dependencies"] if any(t[1] == "load" for t in d["targets"]) and sidebar in d["outputs"])
    raw, page = [], []
    with httpx.Client(base_url=url, timeout=600) as http:
        conversation = None
        for i in range(turns):  # short question, short greedy answer: the history a long chat leaves
            out = sse_call(http, api, [f"Question {i + 1}: name one colour of the rainbow.", SYSTEM, 0.0, 0.9, 40, 1.1, 24, 1, conversation], uuid.uuid4().hex)
            conversation = out[0]["conversation_id"]
        for i in range(runs):
            session = uuid.uuid4().hex
            sse_call(http, page_load, [], session)
            opened = sse_call(http, open_event, [conversation], session)
            history = [{"role": m["role"], "content": message_text(m)} for m in opened[0]]
            given = iter(page_inputs(max_tokens, 100 + i))
            data = [None if kind == "state" else next(given) for kind in types]
            page.append(timed_reply(http, page_send, data, session, llm, page_reply))
            raw.append(raw_run(llm, max_tokens, 100 + i, history))
    raw_tps, page_tps = summary([r["tok_s"] for r in raw]), summary([p["tok_s"] for p in page])
    return {
        "turns": turns, "history_messages": len(history), "max_tokens": max_tokens,
        "raw": {"tokens_per_second": raw_tps, "ttft_seconds": summary([r["ttft"] for r in raw])},
        "page_sse": {"tokens_per_second": page_tps, "ttft_seconds": summary([p["ttft"] for p in page])},
        "page_sse_over_raw_tokens_per_second": page_tps["median"] / raw_tps["median"],
        "same_text": all(r["text"] == p["text"] for r, p in zip(raw, page)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="llama.cpp threads, both sides (default: the app's own default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--turns", type=int, default=0, help="the page's Send in a conversation of this many turns instead")
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
    if args.turns:
        with running_app("--threads", str(args.threads), "--device", args.device) as url:
            result = long_conversation(url, llm, args.turns, args.runs, args.max_tokens)
        print(json.dumps({"benchmark": "chat-long", "model": embedded.SMOLLM2_NAME, "threads": args.threads, "machine": machine(), **result}, indent=2))
        return
    raw, app, sse, page = [], [], [], []
    with running_app("--threads", str(args.threads), "--device", args.device) as url:
        client = Client(url, verbose=False)
        found = endpoints(url)
        raw_run(llm, 16, 1), app_run(client, llm, 16, 1)  # warm-up: load the model on both sides
        for i in range(args.runs):
            raw.append(raw_run(llm, args.max_tokens, 100 + i))
            app.append(app_run(client, llm, args.max_tokens, 100 + i))
            sse.append(sse_run(url, found, "api", llm, args.max_tokens, 100 + i))
            page.append(sse_run(url, found, "page", llm, args.max_tokens, 100 + i))
    floor = client_floor(args.runs * 4)
    same_text = all(r["text"] == a["text"] == b["text"] == c["text"] for r, a, b, c in zip(raw, app, sse, page))
    raw_tps, app_tps = summary([r["tok_s"] for r in raw]), summary([a["tok_s"] for a in app])
    raw_ttft, app_ttft = summary([r["ttft"] for r in raw]), summary([a["ttft"] for a in app])
    sse_tps, sse_ttft = summary([r["tok_s"] for r in sse]), summary([r["ttft"] for r in sse])
    page_tps, page_ttft = summary([r["tok_s"] for r in page]), summary([r["ttft"] for r in page])
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
        "page_sse": {"tokens_per_second": page_tps, "ttft_seconds": page_ttft},
        "app_over_raw_tokens_per_second": app_tps["median"] / raw_tps["median"],
        "app_extra_ttft_ms": (app_ttft["median"] - raw_ttft["median"]) * 1000,
        "app_sse_over_raw_tokens_per_second": sse_tps["median"] / raw_tps["median"],
        "app_sse_extra_ttft_ms": (sse_ttft["median"] - raw_ttft["median"]) * 1000,
        "page_sse_over_raw_tokens_per_second": page_tps["median"] / raw_tps["median"],
        "page_sse_extra_ttft_ms": (page_ttft["median"] - raw_ttft["median"]) * 1000,
        "client_floor_seconds": floor,
        "app_extra_ttft_beyond_client_floor_ms": (app_ttft["median"] - raw_ttft["median"] - floor["median"]) * 1000,
        "same_text": same_text,
        "tokens_median": sorted(a["tokens"] for a in app)[len(app) // 2],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
