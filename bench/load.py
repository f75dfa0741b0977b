"""Many people at once: the real app with its embedded models, simulated users over Gradio's API event stream.

    python bench/load.py [--users 1,10,25,50] [--soak 0] [--stress]

Each level starts N users at once, each sending one request of the mix (chat: 200 tokens; image: the demo
pipeline at 256², 8 steps; transcription of a 10 s clip), while one live-caption stream runs in real time
beside them. Every request carries a nonce its answer must echo (the chat's stored prompt, the image's
recipe, the transcript's export names), so a crossed answer is caught; an answer that never comes is lost.

Per panel: p50/p95 latency (and time to the first token for chat), throughput, errors, lost, crossed. Per
level: ``ratio_to_ideal`` = wall time / the ideal (the sum of the single-request times over the 3 engines
side by side, or the busiest engine's own serial work when that is longer), and the
live stream's word latency p95 against the same stream idle (its ratio). ``--soak N`` then sends N mixed
requests, 2 at a time, and reports RSS, threads, open files and the temp folders after warm-up and at the
end. ``--stress`` runs it all beside ``stress-ng --cpu 2``. JSON on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from tests import fixtures  # noqa: E402
from tests.app_server import AppServer  # noqa: E402

KINDS = ("chat", "image", "transcribe")
ENGINES_SIDE_BY_SIDE = 3  # chat, image and speech each run one job at a time, beside each other
CHUNK_SECONDS = 0.25  # what the page's recorder sends per call


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


class App:
    """The running app, its endpoints' inputs by name, and its data folder (to check nonces)."""

    def __init__(self, server: AppServer) -> None:
        self.server, self.url = server, server.url
        config = httpx.get(f"{self.url}/config", timeout=30).json()
        self.recorder = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "live-captions")
        # The recorder's Stop (a queued event): its index and its inputs' values as the page starts them.
        values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
        stop = next(d for d in config["dependencies"] if [self.recorder, "stop_recording"] in [list(t) for t in d["targets"]])
        self.stop_event, self.stop_data = stop["id"], [values[i] for i in stop["inputs"]]

    def call(self, http: httpx.Client, api: str, data: list, on_output=None) -> list:
        """One call through /gradio_api/call: its final outputs; ``on_output`` sees each streamed one."""
        answer = http.post(f"/gradio_api/call/{api}", json={"data": data})
        answer.raise_for_status()
        event = answer.json()["event_id"]
        kind = None
        with http.stream("GET", f"/gradio_api/call/{api}/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    payload = json.loads(line[5:])
                    if kind == "generating" and on_output:
                        on_output(payload)
                    elif kind == "complete":
                        return payload
                    elif kind == "error":
                        raise RuntimeError(str(payload)[:300])
        raise RuntimeError("the stream ended without an answer")

    def upload(self, http: httpx.Client, path: Path) -> dict:
        with path.open("rb") as f:
            answer = http.post("/gradio_api/upload", files={"files": (path.name, f, "audio/wav")})
        answer.raise_for_status()
        return {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}

    def stored_prompt(self, conversation_id: str) -> str | None:
        with sqlite3.connect(self.server.data_dir / "melange.db") as db:
            row = db.execute(
                "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                "WHERE c.uid = ? AND m.role = 'user' ORDER BY m.id LIMIT 1",
                (conversation_id,),
            ).fetchone()
        return row[0] if row else None


def one_request(app: App, kind: str, clip: Path, workdir: Path) -> dict:
    """One request of ``kind`` with its own nonce: latency, first output, and whether the answer was its own."""
    nonce = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    first: list[float] = []
    result = {"kind": kind, "nonce": nonce}
    with httpx.Client(base_url=app.url, timeout=900, trust_env=False) as http:
        try:
            if kind == "chat":
                prompt = f"Tell a short story about a lighthouse keeper. (ticket {nonce})"

                def on_token(out):
                    if not first and out and out[0].get("reply"):
                        first.append(time.perf_counter() - started)

                out = app.call(http, "chat", app.server.inputs("chat", message=prompt, max_tokens=200, temperature=0.7, seed=-1), on_token)
                result["crossed"] = app.stored_prompt(out[0]["conversation_id"]) != prompt
            elif kind == "image":
                prompt = f"a lighthouse at dusk, {nonce}"
                out = app.call(http, "generate", app.server.inputs("generate", prompt=prompt, width=256, height=256, steps=8, seed=-1))
                # The recipe inside the PNG (the app and the bench share this machine, so the file is read here).
                from PIL import Image

                files = [f["path"] if isinstance(f, dict) else f for f in out[0]]
                prompts = [json.loads(Image.open(f).text["melange"])["prompt"] for f in files]
                result["crossed"] = prompts != [prompt]
            else:
                named = workdir / f"{nonce}.wav"
                named.write_bytes(clip.read_bytes())
                file = app.upload(http, named)
                out = app.call(http, "transcribe", app.server.inputs("transcribe", audio=file))
                names = [Path(f["path"] if isinstance(f, dict) else f).name for f in (out[4] or [])]
                result["crossed"] = not names or not all(n.startswith(nonce) for n in names)
                named.unlink()
            result["ok"] = True
        except Exception as e:  # counted, never fatal: the bench measures what fails too
            result["ok"], result["error"] = False, str(e)[:300]
    result["seconds"] = time.perf_counter() - started
    result["first_output"] = first[0] if first else None
    return result


def live_stream(app: App, speech: Path, truth: list[tuple[str, float]]) -> dict:
    """A live-caption stream as the page sends it (0.25 s chunks in real time, a long poll beside them):
    for each word of ``truth`` (word, end time in the audio), the seconds from its audio being sent to its
    first appearance in the captions."""
    with wave.open(str(speech)) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    recording, session = str(uuid.uuid4()), uuid.uuid4().hex
    seen_at: dict[int, float] = {}
    failures: list[str] = []
    done = threading.Event()

    def server(http, fn: str, data: dict) -> dict:
        body = {"data": data, "component_id": app.recorder, "fn_name": fn, "session_hash": session}
        answer = http.post("/gradio_api/component_server/", json=body)
        answer.raise_for_status()
        return answer.json()

    def poll() -> None:
        version = 0
        with httpx.Client(base_url=app.url, timeout=60, trust_env=False) as http:
            while not done.is_set():
                try:
                    answer = server(http, "live_wait", {"id": recording, "version": version})
                except httpx.HTTPError as e:
                    failures.append(f"{type(e).__name__}")
                    continue
                if answer.get("stop"):
                    return
                version = answer.get("version", version)
                text = answer.get("html", "")
                words = [w.strip(".,!?…").lower() for w in html.unescape(re.sub(r"<[^>]+>", " ", text)).split()]
                now = time.perf_counter()
                cursor = 0
                for i, (word, _) in enumerate(truth):  # in order; a word the captions spell otherwise is skipped
                    try:
                        found = words.index(word, cursor, cursor + 4)
                    except ValueError:
                        continue
                    cursor = found + 1
                    seen_at.setdefault(i, now)

    with httpx.Client(base_url=app.url, timeout=60, trust_env=False) as http:
        begun = server(http, "live_begin", {"id": recording})
        if begun.get("error"):  # refused (the app takes only so many recordings at once): a finding, not a crash
            raise RuntimeError(f"live_begin: {begun['error']}")
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        step = int(rate * CHUNK_SECONDS)
        start = time.perf_counter()
        for seq, at in enumerate(range(0, len(pcm), step)):
            time.sleep(max(0.0, start + seq * CHUNK_SECONDS - time.perf_counter()))  # the microphone's own clock
            chunk = pcm[at : at + step]
            server(http, "live_chunk", {"id": recording, "seq": seq, "rate": rate, "pcm": base64.b64encode(chunk.tobytes()).decode()})
        time.sleep(3.0)  # the last words' decode
        done.set()
        poller.join(15)
        # Stop, as the page does: the recording ends (the app takes only so many at once) and is transcribed again.
        join = {"data": app.stop_data, "fn_index": app.stop_event, "session_hash": session,
                "event_data": {"id": recording}, "trigger_id": app.recorder}  # fmt: skip
        http.post("/gradio_api/queue/join", json=join).raise_for_status()
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}, timeout=600) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    if not message.get("success"):
                        failures.append(f"stop: {str(message.get('output'))[:200]}")
                    break
    latencies = [seen_at[i] - (start + end) for i, (_, end) in enumerate(truth) if i in seen_at]
    return {"words": len(truth), "seen": len(latencies), "p50": p(latencies, 0.5), "p95": p(latencies, 0.95), "poll_failures": failures[:5]}


def word_truth(speech: Path) -> list[tuple[str, float]]:
    from faster_whisper import WhisperModel

    from engines import embedded

    model = WhisperModel(str(embedded.whisper_tiny_en()), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(str(speech), word_timestamps=True, beam_size=5)
    return [(w.word.strip(" .,!?").lower(), w.end) for s in segments for w in s.words]


def level(app: App, users: int, clip: Path, workdir: Path, speech: Path, truth, single: dict) -> dict:
    kinds = [KINDS[i % len(KINDS)] for i in range(users)]
    results: list[dict] = []
    lock = threading.Lock()

    def user(kind: str) -> None:
        r = one_request(app, kind, clip, workdir)
        with lock:
            results.append(r)

    live: dict = {}

    def live_user() -> None:
        try:
            live.update(live_stream(app, speech, truth))
        except Exception as e:  # reported, not fatal: a stream that fails under load is a finding
            live["error"] = f"{type(e).__name__}: {str(e)[:200]}"

    live_thread = threading.Thread(target=live_user, daemon=True)
    threads = [threading.Thread(target=user, args=(k,), daemon=True) for k in kinds]
    started = time.perf_counter()
    live_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(1800)
    wall = time.perf_counter() - started
    live_thread.join(300)
    out = {"users": users, "wall_seconds": round(wall, 2), "panels": {}}
    for kind in KINDS:
        mine = [r for r in results if r["kind"] == kind]
        ok = [r for r in mine if r.get("ok")]
        times = [r["seconds"] for r in ok]
        out["panels"][kind] = {
            "requests": kinds.count(kind), "p50": p(times, 0.5), "p95": p(times, 0.95),
            "first_output_p95": p([r["first_output"] for r in ok if r["first_output"] is not None], 0.95),
            "throughput_per_min": round(60 * len(ok) / wall, 2), "errors": len(mine) - len(ok),
            "lost": kinds.count(kind) - len(mine), "crossed": sum(1 for r in ok if r.get("crossed")),
            "error_samples": [r["error"] for r in mine if not r.get("ok")][:3],
        }  # fmt: skip
    # The ideal spreads all the work evenly over the three engines; each engine is serial, though, so
    # the busiest engine's own work is a harder floor when the kinds differ in cost. Both, and the ratio to the
    # larger (the real floor).
    even = sum(single[k] for k in kinds) / ENGINES_SIDE_BY_SIDE
    busiest = max(kinds.count(k) * single[k] for k in KINDS)
    out["ideal_seconds"] = round(max(even, busiest), 2)
    out["ratio_to_ideal"] = round(wall / max(even, busiest), 2)
    out["ratio_to_even_ideal"] = round(wall / even, 2)
    out["live"] = live
    return out


def process_figures(pid: int, data_dir: Path, url: str) -> dict:
    import psutil

    proc = psutil.Process(pid)
    temp = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    size = lambda folder: sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0  # noqa: E731
    return {
        "rss_mb": round(proc.memory_info().rss / 2**20, 1), "threads": proc.num_threads(), "open_files": len(proc.open_files()),
        "gradio_temp_mb": round(size(temp) / 2**20, 1), "data_mb": round(size(data_dir) / 2**20, 1),
        "sessions_kept": httpx.get(f"{url}/health", timeout=30, trust_env=False).json().get("sessions", {}).get("kept"),
    }  # fmt: skip


def soak(app: App, count: int, clip: Path, workdir: Path, cache_seconds: float) -> dict:
    """``count`` mixed requests, 2 at a time. Figures every 100; the warm-up lasts at least a tenth of the
    requests and one lifetime of Gradio's cached files plus a sweep (before that the cache can only grow), and
    growth is the end and the widest swing after warm-up, each against the figures at the warm-up's end."""
    warm_up_seconds = cache_seconds * 1.1 + 10
    figures, failures, crossed = {}, 0, 0
    lock = threading.Lock()
    todo = iter(range(count))
    started = time.monotonic()

    def worker() -> None:
        nonlocal failures, crossed
        for i in todo:
            r = one_request(app, KINDS[i % len(KINDS)], clip, workdir)
            with lock:
                failures += not r.get("ok")
                crossed += bool(r.get("crossed"))
                if (i + 1) % 100 == 0:
                    now = process_figures(app.server.process.pid, app.server.data_dir, app.url)
                    now["requests"] = i + 1
                    figures.setdefault("every_100", []).append(now)
                    warm = time.monotonic() - started >= warm_up_seconds and i + 1 >= count // 10
                    if warm and "after_warm_up" not in figures:
                        figures["after_warm_up"] = now
                    log(f"soak: {i + 1}/{count}")

    workers = [threading.Thread(target=worker) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    figures["end"] = process_figures(app.server.process.pid, app.server.data_dir, app.url)
    base = figures.get("after_warm_up", figures["end"])
    later = [f for f in figures.get("every_100", []) if f.get("requests", 0) >= base.get("requests", count)] + [figures["end"]]
    keys = ("rss_mb", "threads", "open_files", "gradio_temp_mb")
    growth = {k: round(figures["end"][k] / base[k], 2) if base[k] else None for k in keys}
    swing = {k: [round(min(f[k] for f in later) / base[k], 2), round(max(f[k] for f in later) / base[k], 2)] if base[k] else None for k in keys}
    return {
        "requests": count, "warm_up_requests": base.get("requests"), "warm_up_seconds": warm_up_seconds,
        "failures": failures, "crossed": crossed, **figures, "growth": growth, "range_after_warm_up": swing,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,10,25,50")
    parser.add_argument("--soak", type=int, default=0, help="mixed requests after the levels (1000 in the issue)")
    parser.add_argument("--stress", action="store_true", help="beside stress-ng --cpu 2")
    parser.add_argument("--cache-minutes", type=float, default=5, help="the app's --cache-minutes (its default is a day)")
    parser.add_argument("--api-session-minutes", type=float, default=1, help="the app's --api-session-minutes (its default is 10)")
    args = parser.parse_args()
    stress = subprocess.Popen(["stress-ng", "--cpu", "2", "--quiet"]) if args.stress else None
    work = Path(tempfile.mkdtemp(prefix="melange-load-"))
    # Gradio's cache of its own, inherited by the app: what else runs on the machine does not count in its size.
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio-cache")
    try:
        speech = fixtures.speech_wav(work, name="speech.wav")
        clip = work / "clip.wav"
        fixtures._run("sox", str(speech), str(clip), "trim", "0", "10")
        live_audio = work / "live.wav"
        fixtures._run("sox", str(speech), str(live_audio), "pad", "0.5", "1.0")
        truth = word_truth(live_audio)
        # Gradio's cached copies expire after 5 minutes here (a day by default) and API sessions are forgotten
        # after 1 (10 by default), so the soak shows both cleaned up within its run.
        server = AppServer(
            work / "data", "--device", "cpu", "--queue-size", "500", "--cache-minutes", str(args.cache_minutes),
            "--api-session-minutes", str(args.api_session_minutes),
        )  # fmt: skip
        try:
            app = App(server)
            log("warming up and timing one request of each kind alone")
            for kind in KINDS:
                one_request(app, kind, clip, work)
            single = {}
            for kind in KINDS:
                single[kind] = statistics.median(one_request(app, kind, clip, work)["seconds"] for _ in range(3))
            # The stream is 25 words: its p95 swings run to run, so the idle figure is the median of three runs.
            idle_runs = [live_stream(app, live_audio, truth) for _ in range(3)]
            idle_live = {**sorted(idle_runs, key=lambda r: r.get("p95") or 1e9)[1], "p95_runs": [r.get("p95") for r in idle_runs]}
            log("idle live stream:", idle_live)
            levels = []
            for users in [int(n) for n in args.users.split(",")]:
                log(f"{users} users")
                result = level(app, users, clip, work, live_audio, truth, single)
                if result["live"].get("p95") and idle_live.get("p95"):
                    result["live"]["p95_vs_idle"] = round(result["live"]["p95"] / idle_live["p95"], 2)
                levels.append(result)
                log(json.dumps({k: result[k] for k in ("users", "wall_seconds", "ratio_to_ideal")}))
            report = {
                "bench": "load", "machine": machine(), "stress": args.stress, "single_request_seconds": single,
                "live_idle": idle_live, "levels": levels,
            }  # fmt: skip
            if args.soak:
                report["soak"] = soak(app, args.soak, clip, work, args.cache_minutes * 60)
        finally:
            server.stop()
    finally:
        if stress:
            stress.terminate()
            stress.wait()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
