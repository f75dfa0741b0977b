"""Speech in many voices, real speech that ships in packages, and the measures the speech tests and
benchmark share: Whisper-normalised WER, diarization error rate and second-by-second alignment.

Voices (Debian packages): espeak-ng (formant synthesis), flite's awb, rms, slt and kal16 (Scottish male,
US male, US female, US male diphones) and festival's ked diphone voice (festvox-kdlpc16k). They sound
far more unlike each other than espeak-ng's variants do, which only change pitch and formants.
Real people: the Gradio package ships short film clips (Cate Blanchett, Heath Ledger) and alsa-utils ships
a woman reading channel names; pyannote.audio's wheel (fetched from PyPI by `make test`, never installed)
ships a real two-person telephone call with its reference turns; asterisk's prompts, a real monologue.

Every helper writes into the folder it is given; files are 16 kHz mono 16-bit WAV.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.fixtures import SAMPLE_RATE, _run

# name: (program, voice[, sox effects]). Calibration of the speaker count used CALIBRATION_VOICES only. The
# espeak-ng pair is tests.fixtures' VOICE_A and VOICE_B (pitch set apart): at one pitch they embed as one
# person. A voice with sox's "pitch" (in cents) is the same synthesiser a few semitones higher or lower: as
# like its source as siblings are, the hardest pairs here.
VOICES = {
    "espeak-us": ("espeak", "en-us -p 40"),
    "espeak-gb-f": ("espeak", "en-gb+f3 -p 80"),
    "espeak-scot-m": ("espeak", "en-gb-scotland+m3 -p 30"),
    "espeak-029-f": ("espeak", "en-029+f4 -p 70"),
    "espeak-nyc-m": ("espeak", "en-us-nyc+m7 -p 45"),
    "flite-awb": ("flite", "awb"),
    "flite-awb-high": ("flite", "awb", "pitch 400"),
    "flite-rms": ("flite", "rms"),
    "flite-rms-low": ("flite", "rms", "pitch -300"),
    "flite-slt": ("flite", "slt"),
    "flite-slt-low": ("flite", "slt", "pitch -400"),
    "flite-kal": ("flite", "kal16"),
    "festival-ked": ("festival", "ked_diphone"),
    "festival-ked-high": ("festival", "ked_diphone", "pitch 400"),
}
CALIBRATION_VOICES = ("espeak-us", "espeak-gb-f", "espeak-scot-m", "flite-awb", "flite-awb-high", "flite-slt", "flite-slt-low")
HELD_OUT_VOICES = ("espeak-029-f", "espeak-nyc-m", "flite-rms", "flite-rms-low", "flite-kal", "festival-ked", "festival-ked-high")

# Distinct sentences, none said twice in one file (a repeated sentence makes alignment ambiguous).
SENTENCES = (
    "The library opens at nine and closes late on Thursdays.",
    "We planted tomatoes along the south wall of the garden.",
    "Please send the report to the whole team before lunch.",
    "The bridge was closed for repairs during the spring.",
    "My brother bought a blue bicycle with a small basket.",
    "The meeting moved to the second floor near the kitchen.",
    "Fresh bread from the bakery smells wonderful in the morning.",
    "The children painted a large map of the world.",
    "Our flight was delayed because of the heavy snow.",
    "She keeps her old letters in a wooden box.",
    "The museum shows paintings from the last two centuries.",
    "He forgot his umbrella on the train again.",
    "The farmers sell eggs and honey at the weekend market.",
    "We need more chairs for the guests in the hall.",
    "The river flooded the fields after the long storm.",
    "A small dog followed us all the way home.",
    "The new school has a garden and a music room.",
    "They watched the sunset from the top of the hill.",
    "The doctor asked him to rest for a few days.",
    "Our neighbours are building a wooden fence this summer.",
    "The coffee machine in the office is broken again.",
    "She learned to play the piano when she was young.",
    "The shop on the corner sells newspapers and sweets.",
    "We walked along the beach and collected shells.",
    "The old clock in the tower stopped at midnight.",
    "He cooks rice and vegetables for dinner every night.",
    "The students wrote their names on the board.",
    "A cold wind blew across the empty car park.",
    "The garden party was cancelled because of the rain.",
    "They painted the kitchen a bright shade of yellow.",
    "The bus to the airport leaves every twenty minutes.",
    "My grandmother grows roses in front of her house.",
)

GRADIO_SPEECH = {  # clip (in gradio/media_assets/audio): (speaker, what is said)
    "cate_blanch.mp3": ("Cate Blanchett", "I sleep with a dagger. If you so much as move to touch me, I will sever your mind. You understand?"),
    "cate_blanch_2.mp3": ("Cate Blanchett", "I trust you had an historic evening."),
    "heath_ledger.mp3": ("Heath Ledger", "If you're good at something, never do it for free."),
}
ALSA_SPEECH = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left", "Side_Right")


def say(text: str, voice: str, out: Path) -> Path:
    """``text`` read by one of VOICES, as 16 kHz mono 16-bit WAV."""
    program, name, *effects = VOICES[voice]
    raw = out.with_name(f"{out.stem}.raw.wav")
    if program == "espeak":
        voice, *options = name.split()
        _run("espeak-ng", "-v", voice, *options, "-s", "150", "-w", str(raw), text)
    elif program == "flite":
        _run("flite", "-voice", name, "-t", text, "-o", str(raw))
    else:
        script = out.with_name(f"{out.stem}.txt")
        script.write_text(text)
        _run("text2wave", "-eval", f"(voice_{name})", "-o", str(raw), str(script))
        script.unlink()
    # -D: no dither, so the same text gives the same file every time.
    _run("sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out), *" ".join(effects).split())
    raw.unlink()
    return out


def read_wav(path: str | Path) -> np.ndarray:
    """Samples as float32 in [-1, 1], channels averaged."""
    with wave.open(str(path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
        return data.reshape(-1, w.getnchannels()).mean(axis=1)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    samples = np.asarray(samples)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return Path(path)


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float
    text: str


def conversation_wav(
    directory: str | Path, voices: list[str], turns: int, name: str = "conversation.wav", first: int = 0,
    gap: float = 0.5,
) -> tuple[Path, list[Turn]]:
    """``turns`` turns taken by ``voices`` in rotation, each one sentence from SENTENCES (starting at
    ``first``), with ``gap`` seconds between turns; and the truth. Voices may be VOICES names or
    ("real", path to a clip) pairs. Mono, 16 kHz."""
    directory = Path(directory)
    pieces, truth, t = [], [], 0.0
    silence = np.zeros(int(gap * SAMPLE_RATE), np.float32)
    for i in range(turns):
        voice = voices[i % len(voices)]
        text = SENTENCES[(first + i) % len(SENTENCES)]
        part = say(text, voice, directory / f"{Path(name).stem}-turn{i}.wav")
        samples = read_wav(part)
        part.unlink()
        pieces += [samples, silence]
        truth.append(Turn(voice, t, t + len(samples) / SAMPLE_RATE, text))
        t += (len(samples) + len(silence)) / SAMPLE_RATE
    return write_wav(directory / name, np.concatenate(pieces)), truth


def monologue_wav(directory: str | Path, voice: str, min_seconds: float, name: str = "monologue.wav", gap: float = 0.3):
    """At least ``min_seconds`` of distinct sentences read by one voice, with short pauses; and the words.
    (``monologue_turns`` gives the same as timed sentences.)"""
    path, turns = monologue_turns(directory, voice, min_seconds, name, gap)
    return path, " ".join(t.text for t in turns)


def monologue_turns(directory: str | Path, voice: str, min_seconds: float, name: str = "monologue.wav", gap: float = 0.3):
    directory = Path(directory)
    count, total = 0, 0.0
    pieces, texts = [], []
    silence = np.zeros(int(gap * SAMPLE_RATE), np.float32)
    while total < min_seconds:
        if count >= len(SENTENCES):
            raise ValueError(f"SENTENCES read once last {total:.0f} s; ask for less")
        part = say(SENTENCES[count], voice, directory / f"{Path(name).stem}-{count}.wav")
        samples = read_wav(part)
        part.unlink()
        pieces += [samples, silence]
        texts.append(Turn(voice, total, total + len(samples) / SAMPLE_RATE, SENTENCES[count]))
        total += (len(samples) + len(silence)) / SAMPLE_RATE
        count += 1
    return write_wav(directory / name, np.concatenate(pieces)), texts


def real_speech_clips() -> dict[str, tuple[str, np.ndarray, str]]:
    """name: (speaker, 16 kHz samples, text) for the real recordings that ship in installed packages."""
    import gradio

    from engines.speech.audio_stream import iter_chunks

    clips = {}
    root = Path(gradio.__file__).parent / "media_assets" / "audio"
    for file, (speaker, text) in GRADIO_SPEECH.items():
        if (root / file).exists():
            clips[file] = (speaker, np.concatenate([c for _, c in iter_chunks(root / file)]), text)
    alsa = Path("/usr/share/sounds/alsa")
    for stem in ALSA_SPEECH:
        if (alsa / f"{stem}.wav").exists():
            clips[stem] = ("ALSA voice", np.concatenate([c for _, c in iter_chunks(alsa / f"{stem}.wav")]), stem.replace("_", " "))
    return clips


def real_conversation_wav(directory: str | Path, name: str = "real_conversation.wav", gap: float = 0.6):
    """Three real people taking turns: Cate Blanchett, the ALSA voice, Heath Ledger, the ALSA voice, Cate
    Blanchett again; and the truth. None of them was used to tune anything."""
    clips = real_speech_clips()
    alsa = [c for c in clips if c in ALSA_SPEECH]
    order = ["cate_blanch.mp3", alsa[:4], "heath_ledger.mp3", alsa[4:], "cate_blanch_2.mp3"]
    pieces, truth, t = [], [], 0.0
    silence = np.zeros(int(gap * SAMPLE_RATE), np.float32)
    short_gap = np.zeros(int(0.25 * SAMPLE_RATE), np.float32)
    for item in order:
        names = item if isinstance(item, list) else [item]
        speaker = clips[names[0]][0]
        start = t
        texts = []
        for j, clip in enumerate(names):
            samples = clips[clip][1]
            pieces.append(samples)
            t += len(samples) / SAMPLE_RATE
            texts.append(clips[clip][2])
            if j < len(names) - 1:
                pieces.append(short_gap)
                t += len(short_gap) / SAMPLE_RATE
        truth.append(Turn(speaker, start, t, " ".join(texts)))
        pieces.append(silence)
        t += len(silence) / SAMPLE_RATE
    return write_wav(Path(directory) / name, np.concatenate(pieces)), truth


# A real telephone call: two women (Diane in New Jersey, Sheila in Texas), 30 s, with who spoke when marked
# by people (RTTM). It ships in pyannote.audio's wheel (MIT), which the tests only unpack: `make test` fetches
# the wheel from PyPI into TEST_DATA, pinned by hash in tests/real-speech.txt (pip download, no install).
TEST_DATA = Path(__file__).resolve().parents[1] / ".cache" / "test-data"
PHONE_CALL_WHEEL = "pyannote_audio-3.3.2-py2.py3-none-any.whl"


def phone_call_wav(directory: str | Path) -> tuple[Path, list[Turn]]:
    """The telephone call (16 kHz mono) and its reference turns, unpacked from pyannote.audio's wheel."""
    import zipfile

    wheel = TEST_DATA / PHONE_CALL_WHEEL
    if not wheel.exists():
        raise FileNotFoundError(f"{wheel} is missing: `make test` fetches it (make test-data)")
    out = Path(directory) / "phone_call.wav"
    with zipfile.ZipFile(wheel) as z:
        out.write_bytes(z.read("pyannote/audio/sample/sample.wav"))
        rttm = z.read("pyannote/audio/sample/sample.rttm").decode()
    truth = []
    for line in rttm.splitlines():
        fields = line.split()  # SPEAKER file channel start duration <NA> <NA> speaker <NA> <NA>
        start, duration = float(fields[3]), float(fields[4])
        truth.append(Turn(fields[7], start, start + duration, ""))
    return out, truth


# A real person alone on a phone line: Allison Smith reading Asterisk's 73 s demo instructions (8 kHz; Debian's
# asterisk-core-sounds-en-wav, CC BY-SA 3.0).
PHONE_MONOLOGUE = Path("/usr/share/asterisk/sounds/en_US_f_Allison/demo-instruct.wav")


# ---------------------------------------------------------------- measures


def normalise(text: str) -> str:
    """Whisper's English text normalisation (openai-whisper's EnglishTextNormalizer, as whisper-normalizer
    ships it): "eleven percent" and "11%" are the same words, and so are "colour" and "color"."""
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()(text)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after Whisper's English normalisation of both sides."""
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref.strip():
        return 0.0 if not hyp.strip() else 1.0
    if not hyp.strip():
        return 1.0
    return jiwer.wer(ref, hyp)


def der(reference: list[Turn], hypothesis: list[tuple[str, float, float]], collar: float = 0.25, step: float = 0.01) -> float:
    """Diarization error rate: (missed speech + false alarm + speaker confusion) / reference speech time.

    Hypothesis speakers are mapped one-to-one onto reference speakers to minimise confusion (Hungarian
    method); ``collar`` seconds either side of each reference boundary are not scored, as in NIST's
    md-eval, and neither is overlapping speech (the labeller gives each moment one speaker). Counted on a
    ``step``-second grid."""
    from scipy.optimize import linear_sum_assignment

    end = max([t.end for t in reference] + [e for _, _, e in hypothesis] + [0.0])
    frames = int(np.ceil(end / step)) + 1
    ref_speakers = sorted({t.speaker for t in reference})
    hyp_speakers = sorted({s for s, _, _ in hypothesis})
    ref = np.full(frames, -1)
    hyp = np.full(frames, -1)
    scored = np.ones(frames, bool)
    talking = np.zeros(frames, int)
    for t in reference:
        ref[int(round(t.start / step)) : int(round(t.end / step))] = ref_speakers.index(t.speaker)
        talking[int(round(t.start / step)) : int(round(t.end / step))] += 1
        for boundary in (t.start, t.end):
            scored[max(0, int(round((boundary - collar) / step))) : int(round((boundary + collar) / step))] = False
    scored &= talking < 2
    for speaker, start, stop in hypothesis:
        hyp[int(round(start / step)) : int(round(stop / step))] = hyp_speakers.index(speaker)
    ref, hyp = ref[scored], hyp[scored]
    total = (ref >= 0).sum()
    if total == 0:
        return 0.0
    missed = ((ref >= 0) & (hyp < 0)).sum()
    false_alarm = ((ref < 0) & (hyp >= 0)).sum()
    both = (ref >= 0) & (hyp >= 0)
    overlap = np.zeros((len(ref_speakers), max(1, len(hyp_speakers))))
    np.add.at(overlap, (ref[both], hyp[both]), 1)
    rows, cols = linear_sum_assignment(-overlap)
    confusion = both.sum() - overlap[rows, cols].sum()
    return float((missed + false_alarm + confusion) / total)


def speaker_turns(segments, bridge: float = 1.0) -> list[tuple[str, float, float]]:
    """(speaker, start, end) turns from labelled words (or segments without words): one speaker's words
    less than ``bridge`` seconds apart are one turn, as a diarization system reports them (Whisper's word
    times leave small gaps that are not the labeller's doing)."""
    turns: list[tuple[str, float, float]] = []
    for s in segments:
        for w in s.words or [s]:
            who = w.speaker or s.speaker or "?"
            if turns and turns[-1][0] == who and w.start - turns[-1][2] < bridge:
                turns[-1] = (who, turns[-1][1], max(turns[-1][2], w.end))
            else:
                turns.append((who, w.start, w.end))
    return turns


def alignment_offsets(recording: str | Path, source: str | Path, window: float = 1.0, min_rms: float = 0.01):
    """For each ``window``-second piece of ``recording`` with sound in it: (its start in seconds, where it
    starts in ``source`` minus where it starts in the recording, in samples, and how well it matches, 0-1).

    A recording that is exactly the source, from some point on, gives the same offset for every piece; a
    lost chunk raises every later offset by its length, a doubled (or inserted) one lowers them. Both files
    16 kHz."""
    from scipy.signal import fftconvolve

    rec, src = read_wav(recording), read_wav(source)
    size = int(window * SAMPLE_RATE)
    energy = np.sqrt(np.maximum(fftconvolve(src**2, np.ones(size), mode="valid"), 1e-12))
    out = []
    for start in range(0, len(rec) - size + 1, size):
        piece = rec[start : start + size]
        if np.sqrt(np.mean(piece**2)) < min_rms:
            continue
        match = fftconvolve(src, piece[::-1], mode="valid") / (energy * np.linalg.norm(piece))
        best = int(np.argmax(match))
        out.append((start / SAMPLE_RATE, best - start, float(match[best])))
    return out


def silence_then(seconds_before: float, wav: Path, seconds_after: float, name: str) -> Path:
    """``wav`` with silence before and after, as the fake microphone plays it."""
    out = wav.with_name(name)
    _run("sox", str(wav), str(out), "pad", str(seconds_before), str(seconds_after))
    return out

