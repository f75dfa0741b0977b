"""Test audio made on the fly with espeak-ng, sox and ffmpeg, so no recording ships in the repository.

Every helper writes into the folder it is given and returns the new file's path.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

# Measured with the embedded Whisper tiny.en (int8, CPU) on espeak-ng en-us at 150 words per minute:
# word error rate 0.0 for wav, mp3, flac and m4a, beam sizes 1 and 5. Sentences with "quick brown fox",
# names or short function words ("by", "of") came back wrong from this robotic voice, so they are avoided.
SPEECH_TEXT = (
    "Good morning. Today we will talk about the weather and the river. "
    "We went to the market on Monday and bought some apples and bread."
)
SPEECH_VOICE = "en-us"
SPEECH_RATE = 150  # words per minute
SAMPLE_RATE = 16000  # what Whisper works at, so the wav needs no resampling at decode time

FORMATS = {  # ffmpeg's default encoder for each container, named so a missing one fails clearly
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "flac": ["-c:a", "flac"],
    "m4a": ["-c:a", "aac", "-b:a", "64k"],
    "ogg": ["-c:a", "libvorbis"],
    "webm": ["-c:a", "libopus", "-b:a", "48k"],  # what a browser's recorder makes
    "mp4": ["-c:a", "aac", "-b:a", "64k"],  # the audio track of a video file
}


def _run(*command: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise RuntimeError(f"{command[0]} is not installed; the speech tests need espeak-ng, sox and ffmpeg.") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(command)} failed: {e.stderr.strip()}") from e


def speech_wav(
    directory: str | Path,
    text: str = SPEECH_TEXT,
    voice: str = SPEECH_VOICE,
    rate: int = SPEECH_RATE,
    name: str = "speech.wav",
) -> Path:
    """``text`` spoken by espeak-ng, as 16 kHz mono 16-bit wav."""
    directory = Path(directory)
    raw = directory / f"{Path(name).stem}.espeak.wav"
    out = directory / name
    _run("espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text)
    # espeak-ng writes 22.05 kHz; -D (no dither) keeps the file byte-for-byte reproducible.
    _run("sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out))
    raw.unlink()
    return out


def silence_wav(directory: str | Path, seconds: float, name: str = "silence.wav") -> Path:
    """Digital silence, 16 kHz mono 16-bit wav."""
    out = Path(directory) / name
    _run("sox", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out), "trim", "0", str(seconds))
    return out


def to_format(wav: str | Path, fmt: str) -> Path:
    """``wav`` re-encoded next to itself as mp3, flac, m4a (AAC), ogg (Vorbis), webm (Opus) or mp4 (AAC)."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    wav = Path(wav)
    out = wav.with_suffix(f".{fmt}")
    _run("ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), *FORMATS[fmt], str(out))
    return out


def video_only_file(directory: str | Path, name: str = "video_only.mp4") -> Path:
    """A one-second mp4 with a video stream and no audio stream."""
    out = Path(directory) / name
    _run(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5",
        "-c:v", "mpeg4", "-an", str(out),
    )  # fmt: skip
    return out


def not_audio_file(directory: str | Path, suffix: str = ".wav") -> Path:
    """Plain text behind an audio extension, like a renamed note."""
    out = Path(directory) / f"not_audio{suffix}"
    out.write_bytes(b"These are meeting notes, not a recording.\nItem one: buy apples.\n" * 20)
    return out


def corrupt_mp3(directory: str | Path, name: str = "corrupt.mp3") -> Path:
    """An ID3 tag header followed by bytes that are not MPEG audio frames."""
    out = Path(directory) / name
    out.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x0a" + bytes(range(256)) * 8)
    return out


def empty_file(directory: str | Path, suffix: str = ".wav") -> Path:
    out = Path(directory) / f"empty{suffix}"
    out.write_bytes(b"")
    return out


def wav_duration(path: str | Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER ignoring case and punctuation: "Good morning!" matches "good morning."."""
    import jiwer

    normalise = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    if not hypothesis.strip():  # jiwer rejects an empty hypothesis; every reference word is then missed
        return 1.0
    return jiwer.wer(reference, hypothesis, reference_transform=normalise, hypothesis_transform=normalise)


# ---------------------------------------------------------------- speakers, long files, odd formats

# Two synthetic voices as different as espeak-ng makes them: an American male voice and a British
# female variant at a higher pitch. Each turn is one sentence; turns alternate A, B, A, B.
VOICE_A = ("en-us", 40)  # (voice, pitch 0-99)
VOICE_B = ("en-gb+f3", 80)
TWO_VOICE_TURNS = (
    (0, "Good morning. Today we will talk about the weather and the river."),
    (1, "The weather is cold and wet, and the river is very high this week."),
    (0, "We went to the market on Monday and bought some apples and bread."),
    (1, "I went to the market on Friday and bought some milk and cheese."),
)
TURN_GAP_SECONDS = 0.8

# For the benchmark and the long-file tests: about 70 seconds of one voice with short pauses.
LONG_SENTENCES = (
    "Good morning. Today we will talk about the weather and the river.",
    "We went to the market on Monday and bought some apples and bread.",
    "The weather is cold and wet, and the river is very high this week.",
    "In the afternoon we walked to the park and sat under a tall tree.",
    "My sister makes soup every evening and we eat it with warm bread.",
    "The train leaves at seven in the morning and arrives at noon.",
)


def _espeak(out: Path, text: str, voice: str, pitch: int, rate: int) -> None:
    raw = out.with_suffix(".espeak.wav")
    _run("espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "-w", str(raw), text)
    _run("sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out))
    raw.unlink()


def concat_wavs(parts: list[Path], out: Path, gap: float) -> Path:
    """The parts one after another with ``gap`` seconds of silence between them (and after the last)."""
    silence = out.with_name(f"{out.stem}.gap.wav")
    _run("sox", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(silence), "trim", "0", str(gap))  # -D: no dither noise, the same file every time
    sequence = [str(p) for part in parts for p in (part, silence)]
    _run("sox", "-D", *sequence, str(out))
    silence.unlink()
    return out


def two_voice_wav(directory: str | Path, name: str = "two_voices.wav") -> tuple[Path, list[tuple[int, float, float]]]:
    """Alternating turns of VOICE_A and VOICE_B, and the truth: (voice index, start, end) per turn."""
    directory = Path(directory)
    parts, turns, t = [], [], 0.0
    for i, (who, text) in enumerate(TWO_VOICE_TURNS):
        voice, pitch = (VOICE_A, VOICE_B)[who]
        part = directory / f"turn{i}.wav"
        _espeak(part, text, voice, pitch, SPEECH_RATE)
        length = wav_duration(part)
        parts.append(part)
        turns.append((who, t, t + length))
        t += length + TURN_GAP_SECONDS
    out = concat_wavs(parts, directory / name, TURN_GAP_SECONDS)
    for part in parts:
        part.unlink()
    return out, turns


def long_speech_wav(directory: str | Path, min_seconds: float = 60.0, name: str = "long_speech.wav") -> tuple[Path, str]:
    """At least ``min_seconds`` of LONG_SENTENCES read by VOICE_A with 0.6 s pauses, and the words spoken."""
    directory = Path(directory)
    parts = []
    for i, text in enumerate(LONG_SENTENCES):
        part = directory / f"long{i}.wav"
        _espeak(part, text, SPEECH_VOICE, 50, SPEECH_RATE)
        parts.append(part)
    once = concat_wavs(parts, directory / f"{Path(name).stem}.once.wav", 0.6)
    repeats = max(1, int(-(-min_seconds // wav_duration(once))))
    out = concat_wavs([once] * repeats, directory / name, 0.01)
    for part in [*parts, once]:
        part.unlink()
    return out, " ".join(LONG_SENTENCES * repeats)


def stereo_96k(wav: str | Path, name: str = "stereo96k.wav") -> Path:
    """``wav`` as 96 kHz, two-channel, 24-bit: what a field recorder writes."""
    wav = Path(wav)
    out = wav.with_name(name)
    _run("sox", "-D", str(wav), "-r", "96000", "-c", "2", "-b", "24", str(out))
    return out
