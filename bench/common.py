"""Shared by the benchmarks: start the real app on a free port, summarise timings."""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tests.app_server import AppServer


@contextmanager
def running_app(*args: str):
    """The real app in its own process with a throw-away data folder; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="melange-bench-") as data:
        server = AppServer(Path(data), *args)
        try:
            yield server.url
        finally:
            server.stop()


def find_event(url: str, *, api_name: str | None = None, elem_id: str | None = None, trigger: str = "click") -> tuple[int, list[str]]:
    """An event's queue index and its inputs' component types: by its API name, or by the page element and
    trigger that fire it (the page's own events are private to the API)."""
    import requests

    config = requests.get(f"{url}/config", timeout=10).json()
    components = {c["id"]: c for c in config["components"]}
    element = next((i for i, c in components.items() if elem_id and c.get("props", {}).get("elem_id") == elem_id), None)
    for index, dep in enumerate(config["dependencies"]):
        by_name = api_name is not None and dep.get("api_name") == api_name
        by_element = element is not None and [element, trigger] in [list(t) for t in dep["targets"]]
        if by_name or by_element:
            return dep.get("id", index), [components[i]["type"] for i in dep["inputs"]]
    raise RuntimeError(f"the app has no event {api_name or f'{elem_id}.{trigger}'}")


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
        "min": ordered[0],
        "runs": len(ordered),
    }


def machine() -> dict:
    import os

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def sse_call(http, fn_index: int, data: list, session: str, on_output=None) -> list | None:
    """One event through the queue as the browser sends it: join, then read the session's event stream.
    Returns the event's final outputs."""
    from gradio_client.utils import apply_diff

    http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session}).raise_for_status()
    outputs = None
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_generating" and on_output:
                data_out = msg["output"]["data"]
                outputs = list(data_out) if outputs is None else [apply_diff(o, d) for o, d in zip(outputs, data_out)]
                on_output(outputs)
            elif msg.get("msg") == "process_completed":
                if not msg.get("success", True):
                    raise RuntimeError(msg.get("output"))
                return (msg.get("output") or {}).get("data")


def client_floor(runs: int) -> dict:
    """gradio_client's time to the first output of an endpoint that answers at once: no app can show less."""
    import gradio as gr
    from gradio_client import Client

    def ping(text: str) -> Iterator[str]:
        yield text

    with gr.Blocks() as demo:
        gr.api(ping, api_name="ping")
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        times = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            next(iter(client.submit("hi", api_name="/ping")))
            times.append(time.perf_counter() - started)
        return summary(times[1:])
    finally:
        with contextlib.redirect_stdout(sys.stderr):  # Gradio says it closed; stdout carries the JSON
            demo.close()


def matched_latencies(file_words: list[str], word_ends: list[float], live_words: list[str], first_seen: dict) -> list[float]:
    """Word end (from the file transcript's word timestamps) to first shown, for the live words that match a
    file word in jiwer's alignment. Pairing the i-th word of each instead measures how far the two texts'
    word counts drift apart: on a voice they hear differently (WER 0.3) that drift was most of the figure."""
    import jiwer

    from engines.speech.live_captions import _norm

    files = [i for i, w in enumerate(file_words) if _norm(w)]
    lives = [j for j, w in enumerate(live_words) if _norm(w)]
    if not files or not lives:
        return []
    output = jiwer.process_words(" ".join(_norm(file_words[i]) for i in files), " ".join(_norm(live_words[j]) for j in lives))
    latencies = []
    for chunk in output.alignments[0]:
        if chunk.type == "equal":
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                i, j = files[chunk.ref_start_idx + k], lives[chunk.hyp_start_idx + k]
                if j in first_seen:
                    latencies.append(first_seen[j] - word_ends[i])
    return sorted(latencies)
