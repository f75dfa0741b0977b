"""Speech benchmark: the same project-made file (>= 60 s) through raw faster-whisper and through the
running app's API, plus live-caption latency in headless Chromium with a fake microphone, and speaker
labels (DER with and without the count) on 2, 3 and 4 voices and on real people. Prints JSON.

    .venv/bin/python bench/speech.py [--runs 3] [--threads 2] [--no-live] [--no-speakers] [--stress]
    .venv/bin/python bench/speech.py --only speakers   # speaker labels alone: no server, no browser

``--stress`` runs ``stress-ng --cpu 2`` beside the live-caption part (a second CPU-heavy process).
WER is after Whisper's English normalisation (tests/speech_fixtures.normalise).

Real-time factor (RTF) = processing seconds / audio seconds (lower is faster). ``ratio`` is raw RTF /
app RTF: 1.0 means the app is as fast as faster-whisper alone (target >= 0.95).
Live latency: for each word, the time it first shows on the page (confirmed or grey) minus the time
its end was played by the fake microphone, for the live words that match a word of the file transcript
(jiwer's alignment; that transcript's word timestamps give the ends). Playback starts when the page's
recording opens the microphone.
"""

from __future__ import annotations

import argparse
import os
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import matched_latencies  # noqa: E402
from engines import embedded  # noqa: E402
from tests import fixtures, speech_fixtures  # noqa: E402

BEAM_SIZE = 5


def raw_rtf(path: Path, runs: int, threads: int) -> tuple[float, str]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(embedded.whisper_tiny_en()), device="cpu", compute_type="int8", cpu_threads=threads)
    times, text = [], ""
    for _ in range(runs):
        started = time.perf_counter()
        segments, info = model.transcribe(str(path), beam_size=BEAM_SIZE, vad_filter=True)
        text = " ".join(s.text.strip() for s in segments)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / info.duration, text


def app_rtf(url: str, path: Path, runs: int, duration: float) -> tuple[float, float, str]:
    """(RTF of the whole API call, RTF the app reports for its own work, text)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    calls, served, text = [], [], ""
    for _ in range(runs + 1):  # the first call loads the model: not timed
        started = time.perf_counter()
        text, _timed, info, *_ = client.predict(
            handle_file(str(path)), "Auto-detect", "transcribe", BEAM_SIZE, True, False, "", "", False, False, 0, False,
            api_name="/transcribe",
        )  # fmt: skip
        calls.append(time.perf_counter() - started)
        served.append(float(info.split("done in ")[1].split(" s")[0]))
    return statistics.median(calls[1:]) / duration, statistics.median(served[1:]) / duration, text


def live_latency(url: str, speech: Path, threads: int, reference: str, before_stop=None) -> dict:
    """``before_stop``: called once the live text is read, before Stop (ends ``--stress``: Stop's one-pass
    transcription is a batch job at nice 15, which a nice-0 stress-ng on both cores starves for many minutes)."""
    from faster_whisper import WhisperModel
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS

    mic = speech.with_name("microphone.wav")
    fixtures._run("sox", str(speech), str(mic), "pad", "1.0", "3.0")
    model = WhisperModel(str(embedded.whisper_tiny_en()), device="cpu", compute_type="int8", cpu_threads=threads)
    segments, _ = model.transcribe(str(mic), word_timestamps=True, beam_size=BEAM_SIZE)
    timed = [w for s in segments for w in s.words]
    word_ends, file_words = [w.end for w in timed], [w.word.strip() for w in timed]
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}%noloop"]  # fmt: skip
    # Both clocks in the page: when the microphone opened (Chromium's fake device starts its file then)
    # and when each word first appeared, seen by a MutationObserver rather than by polling from here.
    watch = """
    window.__opens = [];
    const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async (c) => { const s = await real(c); window.__opens.push(performance.now()); return s; };
    window.__shown = [];
    new MutationObserver(() => {
      const parts = document.querySelectorAll('#live-captions .confirmed, #live-captions .tentative');
      const text = Array.from(parts).map((e) => e.innerText).join(' ');
      const n = text.split(/\\s+/).filter(Boolean).length;
      while (window.__shown.length < n) window.__shown.push(performance.now());
    }).observe(document, {subtree: true, childList: true, characterData: true});
    """
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=args)
        page = browser.new_context(permissions=["microphone"]).new_page()
        page.add_init_script(watch)
        page.goto(url)
        page.get_by_role("tab", name="Transcribe").click()
        page.get_by_role("tab", name="Live microphone").click()
        page.locator("#live-captions button", has_text="Record").click()
        time.sleep(fixtures.wav_duration(mic) + 3)
        opens, shown = page.evaluate("window.__opens"), page.evaluate("window.__shown")
        live_text = page.locator("#live-captions .caption-area").inner_text()
        if before_stop:
            before_stop()
        page.locator("#live-captions button", has_text="Stop").click()
        page.locator("#transcribe-info").get_by_text("done in").wait_for(timeout=600_000)
        final_text = page.locator("#transcript textarea").input_value()
        browser.close()
    if not opens:
        return {"words": 0}
    anchor = opens[-1]  # the recording's own getUserMedia: its file starts playing then
    first_seen = {i: (t - anchor) / 1000 for i, t in enumerate(shown)}
    latencies = matched_latencies(file_words, word_ends, live_text.split(), first_seen)
    if not latencies:
        return {"words": 0}
    file_text = " ".join(s.text for s in model.transcribe(str(speech), beam_size=BEAM_SIZE)[0])
    return {
        "seconds": round(fixtures.wav_duration(speech), 1),
        "words": len(latencies),
        "of_words": len(word_ends),
        "median_s": round(statistics.median(latencies), 3),
        "p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3),
        "live_text_wer": round(speech_fixtures.wer(reference, live_text), 3),
        "final_transcript_wer": round(speech_fixtures.wer(reference, final_text), 3),
        "same_file_uploaded_raw_wer": round(speech_fixtures.wer(reference, file_text), 3),
    }


SPEAKER_SETS = {  # voices the speaker count was not calibrated on, but for flite-slt; then real people
    "2 voices": ["flite-rms", "flite-kal"],
    "3 voices": ["flite-rms", "flite-kal", "festival-ked"],
    "4 voices": ["flite-rms", "flite-kal", "festival-ked", "flite-slt"],
}


def speaker_figures(work: Path, threads: int) -> dict:
    """DER with the count given and estimated, through the app's own engine and labeller (no server)."""
    from engines.base import TranscribeOptions
    from engines.speech.speakers import SpeakerLabeler
    from engines.speech.whisper import WhisperSpeechEngine

    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=threads)
    labeler = SpeakerLabeler()
    cases = {}
    for name, voices in SPEAKER_SETS.items():
        cases[name] = speech_fixtures.conversation_wav(work, voices, 4 * len(voices), name=f"{name[0]}v.wav", first=3, gap=0.3)
    cases["3 real people"] = speech_fixtures.real_conversation_wav(work)
    cases["2 real people, phone call"] = speech_fixtures.phone_call_wav(work)
    cases["monologue (festival-ked)"] = speech_fixtures.monologue_turns(work, "festival-ked", 40.0)
    out = {}
    for name, (path, truth) in cases.items():
        _, segments = engine.transcribe(str(path), TranscribeOptions(word_timestamps=True, beam_size=BEAM_SIZE))
        segments = list(segments)
        count = len({t.speaker for t in truth})
        started = time.perf_counter()
        estimated = speech_fixtures.speaker_turns(labeler.label(path, segments))
        seconds = time.perf_counter() - started
        given = speech_fixtures.speaker_turns(labeler.label(path, segments, count))
        out[name] = {
            "seconds": round(fixtures.wav_duration(path), 1),
            "speakers": count,
            "estimated": len({who for who, _, _ in estimated}),
            "der_estimated": round(speech_fixtures.der(truth, estimated), 3),
            "der_given": round(speech_fixtures.der(truth, given), 3),
            "labelling_s": round(seconds, 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-live", action="store_true")
    parser.add_argument("--no-speakers", action="store_true")
    parser.add_argument("--stress", action="store_true", help="stress-ng --cpu 2 beside the live captions")
    parser.add_argument("--only", choices=["speakers"], help="run one section only")
    args = parser.parse_args()
    if args.stress and not shutil.which("stress-ng"):
        parser.error("--stress needs stress-ng: apt-get install stress-ng")
    if args.only == "speakers":
        work = Path(tempfile.mkdtemp(prefix="melange-bench-"))
        try:
            speakers = speaker_figures(work, args.threads)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps({"model": "tiny.en int8 CPU", "threads": args.threads, "beam_size": BEAM_SIZE,
                          "speakers": speakers, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}, indent=2))  # fmt: skip
        return

    from tests.app_server import AppServer

    work = Path(tempfile.mkdtemp(prefix="melange-bench-"))
    path, reference = fixtures.long_speech_wav(work, min_seconds=60)
    duration = fixtures.wav_duration(path)
    raw, raw_text = raw_rtf(path, args.runs, args.threads)
    server = AppServer(work / "data", "--device", "cpu", "--threads", str(args.threads))
    try:
        call, served, app_text = app_rtf(server.url, path, args.runs, duration)
        live = None
        if not args.no_live:
            import subprocess

            speech, turns = speech_fixtures.monologue_turns(work, "flite-awb", 40.0)  # no sentence twice
            stress = subprocess.Popen(["stress-ng", "--cpu", "2", "--quiet"]) if args.stress else None
            load = []

            def end_stress():
                load.append(round(os.getloadavg()[0], 2))  # the 1-minute load while the live text was read
                if stress and stress.poll() is None:
                    stress.terminate()
                    stress.wait()

            try:
                live = live_latency(server.url, speech, args.threads, " ".join(t.text for t in turns), end_stress)
            finally:
                end_stress()
            live["load_average_1min_live"] = load[0]
            live["with_stress_ng_cpu_2"] = args.stress
    finally:
        server.stop()
    speakers = None if args.no_speakers else speaker_figures(work, args.threads)
    result = {
        "file": {"seconds": round(duration, 2), "words": len(reference.split())},
        "model": "tiny.en int8 CPU",
        "threads": args.threads,
        "beam_size": BEAM_SIZE,
        "raw_faster_whisper": {"rtf": round(raw, 4), "wer": round(speech_fixtures.wer(reference, raw_text), 3)},
        "app_api": {"rtf_call": round(call, 4), "rtf_served": round(served, 4),
                    "wer": round(speech_fixtures.wer(reference, app_text), 3)},  # fmt: skip
        "ratio_raw_over_app": round(raw / call, 3),
        "ratio_raw_over_app_served": round(raw / served, 3),
        "live_latency": live,
        "speakers": speakers,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
