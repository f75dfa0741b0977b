"""Exports of a real tiny.en transcript: SRT and WebVTT parse back with their own libraries, JSON holds it all."""

from __future__ import annotations

import datetime
import io
import json

import pytest
import srt
import webvtt

from engines import embedded
from engines.speech import subtitles
from engines.base import Segment, TranscribeOptions, Transcript, TranscriptInfo, Word
from engines.speech.whisper import WhisperSpeechEngine
from tests import fixtures


@pytest.fixture(scope="module")
def transcript(tmp_path_factory) -> Transcript:
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=2, display_name="tiny.en")
    options = TranscribeOptions(word_timestamps=True, beam_size=1)
    info, segments = engine.transcribe(str(fixtures.speech_wav(tmp_path_factory.mktemp("a"))), options)
    result = Transcript(info, list(segments), options)
    engine.unload()
    return result


def test_srt_parses_and_keeps_every_word_in_order(transcript):
    cues = list(srt.parse(subtitles.to_srt(transcript)))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert " ".join(c.content for c in cues) == " ".join(w.text for w in transcript.words)
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, " ".join(c.content for c in cues)) <= 0.15
    for a, b in zip(cues, cues[1:]):
        assert a.start < a.end <= b.start
    assert all(len(c.content) <= subtitles.MAX_CUE_CHARS for c in cues)
    assert cues[-1].end.total_seconds() <= transcript.info.duration + 0.05


def vtt_milliseconds(timestamp: str) -> int:
    """A WebVTT timestamp ("00:01:02.345" or "01:02.345") in milliseconds: webvtt-py's ``start_in_seconds``
    drops the fraction, so the cue's own text is read instead."""
    *hours_minutes, seconds = timestamp.split(":")
    minutes = sum(int(part) * 60**i for i, part in enumerate(reversed(hours_minutes)))
    whole, fraction = seconds.split(".")
    return (minutes * 60 + int(whole)) * 1000 + int(fraction.ljust(3, "0"))


def test_vtt_milliseconds_reads_the_fraction():
    assert vtt_milliseconds("00:00:01.567") == 1567 and vtt_milliseconds("01:02:03.4") == 3723400


def test_vtt_parses_with_the_same_cues_as_srt(transcript):
    vtt = list(webvtt.from_buffer(io.StringIO(subtitles.to_vtt(transcript))))
    cues = list(srt.parse(subtitles.to_srt(transcript)))
    assert [c.text for c in vtt] == [c.content for c in cues]
    # Both formats write milliseconds: the same cue starts and ends at the same millisecond in each.
    assert [(vtt_milliseconds(c.start), vtt_milliseconds(c.end)) for c in vtt] == [
        (c.start // datetime.timedelta(milliseconds=1), c.end // datetime.timedelta(milliseconds=1)) for c in cues
    ]


def test_json_holds_segments_words_model_and_options(transcript):
    data = json.loads(subtitles.to_json(transcript))
    assert data["model"] == "tiny.en" and data["language"] == "en"
    assert data["options"]["word_timestamps"] is True and data["options"]["beam_size"] == 1
    assert len(data["segments"]) == len(transcript.segments)
    assert sum(len(s["words"]) for s in data["segments"]) == len(transcript.words)
    assert data["text"] == transcript.text and data["speakers"] == []


def test_txt_is_the_text(transcript):
    assert subtitles.to_txt(transcript) == transcript.text + "\n"


def test_speakers_and_their_names_reach_every_format():
    words = [Word(0.0, 0.5, "Hello", 0.9, "Speaker 1"), Word(0.6, 1.0, "there.", 0.9, "Speaker 1"),
             Word(1.5, 2.0, "Hi", 0.9, "Speaker 2"), Word(2.1, 2.5, "back.", 0.9, "Speaker 2")]  # fmt: skip
    segments = [Segment(0.0, 1.0, "Hello there.", tuple(words[:2]), "Speaker 1"),
                Segment(1.5, 2.5, "Hi back.", tuple(words[2:]), "Speaker 2")]  # fmt: skip
    transcript = Transcript(TranscriptInfo("en", 1.0, 3.0, "m"), segments)
    names = {"Speaker 1": "Alice"}
    assert [c.content for c in srt.parse(subtitles.to_srt(transcript, names))] == ["Alice: Hello there.", "Speaker 2: Hi back."]
    vtt = list(webvtt.from_buffer(io.StringIO(subtitles.to_vtt(transcript, names))))
    assert [(c.voice, c.text) for c in vtt] == [("Alice", "Hello there."), ("Speaker 2", "Hi back.")]
    assert subtitles.to_txt(transcript, names) == "Alice: Hello there.\n\nSpeaker 2: Hi back.\n"
    data = json.loads(subtitles.to_json(transcript, names))
    assert data["speakers"] == ["Alice", "Speaker 2"] and data["segments"][0]["words"][0]["speaker"] == "Alice"


def test_long_segments_become_several_cues_and_no_words_means_one_cue_per_segment():
    words = tuple(Word(i * 0.5, i * 0.5 + 0.4, f"word{i}", 1.0) for i in range(40))
    long = Transcript(TranscriptInfo("en", 1.0, 20.0), [Segment(0.0, 20.0, " ".join(w.text for w in words), words)])
    cues = list(subtitles.cues(long.segments))
    assert len(cues) >= 3 and all(c.end - c.start <= subtitles.MAX_CUE_SECONDS for c in cues)
    plain = Transcript(TranscriptInfo("en", 1.0, 20.0), [Segment(0.0, 20.0, "a long line")])
    assert [c.content for c in srt.parse(subtitles.to_srt(plain))] == ["a long line"]
