"""How the speaker count is estimated, checked on many synthetic conversations: each file is made, transcribed
(tiny.en, beam 1), embedded both ways the labeller embeds it, and cached; then the labeller's clustering runs
on the cache, so settings can be compared in seconds. Prints per set (calibration or held out) how many files got the count right and
the mean and worst DER with the count estimated.

    .venv/bin/python bench/speaker_calibration.py [--set calibration|held_out|reported|all] [--cache DIR] [-v]

The calibration set uses tests/speech_fixtures.CALIBRATION_VOICES only; held out, HELD_OUT_VOICES only;
reported, the files tests/test_speakers.py and bench/speech.py make (beam 1 here). The cache is keyed by
file name only: delete it after changing the fixtures or the embedding.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines import embedded  # noqa: E402
from tests import speech_fixtures  # noqa: E402


def cases(voices: tuple[str, ...], seed: int) -> list[tuple[list[str], int, int, float]]:
    """(voices in turn order, turns, first sentence, gap): monologues, and 2-4 voices with 0.3 and 0.6 s gaps."""
    rng = random.Random(seed)
    out = [([v], 10, rng.randrange(32), 0.3) for v in voices]  # monologues of about 30 s (turns 10: 28 s)
    for count in (2, 3, 4):
        groups = list(itertools.combinations(voices, count))
        rng.shuffle(groups)
        for i, group in enumerate(groups[: {2: 6, 3: 5, 4: 4}[count]]):
            out.append((list(group), 3 * count + 1, rng.randrange(32), (0.3, 0.6)[i % 2]))
    return out


def build(cache: Path, name: str, voices, turns, first, gap, engine, labeler) -> dict:
    file = cache / f"{name}.pkl"
    if file.exists():
        return pickle.loads(file.read_bytes())
    from engines.base import TranscribeOptions
    from engines.speech.speakers import sentence_spans, speech_regions

    with tempfile.TemporaryDirectory() as work:
        if voices == ["real"]:
            path, truth = speech_fixtures.real_conversation_wav(work)
        elif voices == ["phone call"]:
            path, truth = speech_fixtures.phone_call_wav(work)
        elif len(voices) == 1:
            path, truth = speech_fixtures.monologue_turns(work, voices[0], 28.0 if turns == 10 else turns)
        else:
            path, truth = speech_fixtures.conversation_wav(work, voices, turns, first=first, gap=gap)
        _, segments = engine.transcribe(str(path), TranscribeOptions(word_timestamps=True, beam_size=1))
        segments = list(segments)
        # The labeller embeds twice: each sentence on its own to count, whole stretches of speech to label.
        embedded = {tuple(regions): labeler.embed(path, regions) for regions in (speech_regions(segments), sentence_spans(segments))}
    entry = {"voices": voices, "gap": gap, "truth": truth, "segments": segments, "embedded": embedded}
    file.write_bytes(pickle.dumps(entry))
    return entry


class Cached:
    """SpeakerLabeler.label on cached embeddings."""

    def __init__(self, entry):
        from engines.speech.speakers import SpeakerLabeler

        self.labeler = SpeakerLabeler()
        def embed(audio, regions):
            centres, embeddings, reliable = entry["embedded"][tuple(regions)]
            return centres, embeddings, reliable.copy()

        self.labeler.embed = embed


def evaluate(entries: dict[str, dict], verbose: bool) -> dict:
    rows = []
    for name, entry in entries.items():
        truth = entry["truth"]
        count = len({t.speaker for t in truth})
        labelled = Cached(entry).labeler.label("cached", entry["segments"])
        turns = speech_fixtures.speaker_turns(labelled)
        found = len({who for who, _, _ in turns})
        der = speech_fixtures.der(truth, turns)
        rows.append((name, count, found, der))
        if verbose:
            print(f"{name:70s} {count} -> {found}  DER {der:.3f}")
    summary = {}
    for count in (1, 2, 3, 4):
        mine = [r for r in rows if r[1] == count]
        if mine:
            summary[count] = {"files": len(mine), "count_right": sum(r[1] == r[2] for r in mine),
                              "mean_der": round(sum(r[3] for r in mine) / len(mine), 3),
                              "worst_der": round(max(r[3] for r in mine), 3)}  # fmt: skip
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["calibration", "held_out", "reported", "all"], default="all")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "melange-speaker-calibration")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    from bench.speech import SPEAKER_SETS
    from engines.speech.speakers import SpeakerLabeler
    from engines.speech.whisper import WhisperSpeechEngine
    from tests.test_speakers import CONVERSATIONS

    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=2)
    labeler = SpeakerLabeler()
    sets = {"calibration": (speech_fixtures.CALIBRATION_VOICES, 1), "held_out": (speech_fixtures.HELD_OUT_VOICES, 2)}
    for set_name, (voices, seed) in sets.items():
        if args.set not in (set_name, "all"):
            continue
        entries = {}
        for voices_, turns, first, gap in cases(voices, seed):
            name = f"{set_name}-{'+'.join(voices_)}-{turns}-{first}-{gap}"
            entries[name] = build(args.cache, name, voices_, turns, first, gap, engine, labeler)
        print(set_name, evaluate(entries, args.verbose))
    if args.set in ("reported", "all"):  # what tests/test_speakers.py and bench/speech.py measure: not tuned on
        entries = {}
        for count, voices in SPEAKER_SETS.items():
            name = f"reported-bench-{count}"
            entries[name] = build(args.cache, name, voices, 4 * len(voices), 3, 0.3, engine, labeler)
        for case, voices in CONVERSATIONS.items():
            name = f"reported-test-{case}"
            entries[name] = build(args.cache, name, voices, 3 * len(voices), 4 * len(voices), 0.3, engine, labeler)
        for voice in ("flite-rms", "flite-kal", "festival-ked", "espeak-gb-f", "flite-rms-low"):
            name = f"reported-monologue-{voice}"
            entries[name] = build(args.cache, name, [voice], 30, 0, 0.3, engine, labeler)
        entries["reported-bench-monologue"] = build(args.cache, "reported-bench-monologue", ["festival-ked"], 40, 0, 0.3, engine, labeler)
        entries["reported-real"] = build(args.cache, "reported-real", ["real"], 0, 0, 0.6, engine, labeler)
        entries["reported-phone-call"] = build(args.cache, "reported-phone-call", ["phone call"], 0, 0, 0, engine, labeler)
        print("reported", evaluate(entries, args.verbose))


if __name__ == "__main__":
    main()
