"""Live captions without a browser: a speech file fed to ``LiveCaptioner`` in simulated real time (each
decode's own cost is the audio that arrives meanwhile, as with a microphone), then the live text diffed word
by word against the reference and against the file transcript. For finding where live words go wrong;
``bench/speech.py`` is the end-to-end figure. Prints JSON (and the word diff with ``--diff``).

    .venv/bin/python bench/live_offline.py [--voice flite-awb] [--seconds 40] [--first 0] [--gap 0.3] [--diff] [--fixed]

Latency here is simulated: a word is "shown" when the decode that first showed it returned, counted in
audio time plus the decode's own seconds; it leaves out the browser and the network (a few ms). It is timed
for the live words that match a word of the file transcript (whose word timestamps give the word's end).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import matched_latencies  # noqa: E402
from engines import embedded  # noqa: E402
from tests import speech_fixtures  # noqa: E402

SAMPLE_RATE = 16000


def word_diff(reference: str, hypothesis: str) -> list[str]:
    """jiwer's alignment after Whisper's normalisation, as lines: '  word', '- missing', '+ extra', '~ ref>hyp'."""
    import jiwer

    ref, hyp = speech_fixtures.normalise(reference).split(), speech_fixtures.normalise(hypothesis).split()
    out = []
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        r, h = ref[chunk.ref_start_idx : chunk.ref_end_idx], hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "equal":
            out.append("  " + " ".join(r))
        elif chunk.type == "delete":
            out.append("- " + " ".join(r))
        elif chunk.type == "insert":
            out.append("+ " + " ".join(h))
        else:
            out.append("~ " + " ".join(r) + " > " + " ".join(h))
    return out


def simulate(engine, samples: np.ndarray, work: Path, chunk: float = 0.1, tail_silence: float = 3.0, fixed: bool = False):
    """(final captions, [(time shown, words shown, captions)], decode seconds): chunks of ``chunk`` s or of
    the last decode's length, whichever is longer (``fixed``: always ``chunk`` s, so the same input is cut
    the same way run after run, for comparing two policies on the same decodes)."""
    from engines.speech.live_captions import LiveCaptioner

    samples = np.concatenate([samples, np.zeros(int(tail_silence * SAMPLE_RATE), np.float32)])
    captioner = LiveCaptioner(engine, work / "recording.wav")
    shown, position, cost = [], 0, 0.0
    while position < len(samples):
        size = int((chunk if fixed else max(chunk, cost)) * SAMPLE_RATE)
        part = (np.clip(samples[position : position + size], -1, 1) * 32767).astype(np.int16)
        position += len(part)
        started = time.perf_counter()
        captions = captioner.feed(SAMPLE_RATE, part)
        cost = time.perf_counter() - started
        words = len((captions.confirmed + " " + captions.tentative).split())
        shown.append((position / SAMPLE_RATE + cost, words, captions))
    captioner.finish()
    return captions, shown, captioner.decode_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default="flite-awb")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--first", type=int, default=0, help="first sentence of tests/speech_fixtures.SENTENCES")
    parser.add_argument("--gap", type=float, default=0.3, help="silence between sentences")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--diff", action="store_true")
    parser.add_argument("--fixed", action="store_true", help="0.1 s chunks whatever a decode costs: repeatable cuts")
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    from engines.speech.whisper import WhisperSpeechEngine

    work = Path(tempfile.mkdtemp(prefix="melange-live-"))
    sentences = speech_fixtures.SENTENCES[args.first :] + speech_fixtures.SENTENCES[: args.first]
    pieces, texts, total = [], [], 0.0
    silence = np.zeros(int(args.gap * SAMPLE_RATE), np.float32)
    for i, text in enumerate(sentences):
        if total >= args.seconds:
            break
        part = speech_fixtures.read_wav(speech_fixtures.say(text, args.voice, work / f"s{i}.wav"))
        pieces += [part, silence]
        texts.append(text)
        total += (len(part) + len(silence)) / SAMPLE_RATE
    samples = np.concatenate(pieces)
    reference = " ".join(texts)
    path = speech_fixtures.write_wav(work / "speech.wav", samples)

    model = WhisperModel(str(embedded.whisper_tiny_en()), device="cpu", compute_type="int8", cpu_threads=args.threads)
    segments, _ = model.transcribe(str(path), word_timestamps=True, beam_size=5)
    segments = list(segments)
    word_ends = [w.end for s in segments for w in s.words]
    file_words = [w.word.strip() for s in segments for w in s.words]
    file_text = " ".join(s.text for s in segments)

    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=args.threads)
    engine.load()
    final, shown, decodes = simulate(engine, samples, work, fixed=args.fixed)
    live_text = final.confirmed + " " + final.tentative
    first_seen, n = {}, 0
    for t, words, _ in shown:
        while n < words:
            first_seen[n] = t
            n += 1
    latencies = matched_latencies(file_words, word_ends, live_text.split(), first_seen)
    result = {
        "voice": args.voice,
        "seconds": round(len(samples) / SAMPLE_RATE, 1),
        "words": len(reference.split()),
        "median_s": round(statistics.median(latencies), 3) if latencies else None,
        "p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3) if latencies else None,
        "latency_words": len(latencies),  # live words matched to a file word, whose end times them
        "live_text_wer": round(speech_fixtures.wer(reference, live_text), 3),
        "file_wer": round(speech_fixtures.wer(reference, file_text), 3),
        "decodes": len(decodes),
        "decode_median_s": round(statistics.median(decodes), 3) if decodes else None,
        "decode_max_s": round(max(decodes), 3) if decodes else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))
    if args.diff:
        # Where words became final, marked "|": a word lost or doubled at a boundary shows beside one.
        cuts = sorted({len(c.confirmed.split()) for _, _, c in shown})
        words = final.confirmed.split()
        print("--- live, final words in the pieces they were confirmed in")
        print(" | ".join(" ".join(words[a:b]) for a, b in zip([0, *cuts], cuts) if b > a), "||", final.tentative)
        print("--- live vs reference")
        print("\n".join(word_diff(reference, live_text)))
        print("--- file vs reference")
        print("\n".join(word_diff(reference, file_text)))


if __name__ == "__main__":
    main()
