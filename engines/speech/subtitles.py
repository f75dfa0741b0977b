"""Transcript exports: plain text, SRT (the ``srt`` package), WebVTT (``webvtt-py``) and JSON.

Subtitle cues follow the words when there are word timestamps (at most ``MAX_CUE_CHARS`` and
``MAX_CUE_SECONDS`` each, and a new cue at every change of speaker); otherwise one cue per segment.
Speaker names go through ``names`` so a renamed speaker is renamed in every export.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

from engines.base import Segment, Transcript

MAX_CUE_CHARS = 84  # two lines of 42, the usual subtitle limit
MAX_CUE_SECONDS = 7.0
FORMATS = ("txt", "srt", "vtt", "json")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str
    speaker: str | None = None


def speaker_name(speaker: str | None, names: Mapping[str, str] | None) -> str | None:
    if speaker is None:
        return None
    return ((names or {}).get(speaker) or "").strip() or speaker


def cues(segments: list[Segment]) -> Iterator[Cue]:
    for segment in segments:
        if not segment.words:
            yield Cue(segment.start, segment.end, segment.text, segment.speaker)
            continue
        group: list = []
        for word in segment.words:
            speaker = word.speaker or segment.speaker
            if group:
                text = " ".join(w.text for w in group + [word])
                first_speaker = group[0].speaker or segment.speaker
                if (
                    speaker != first_speaker
                    or len(text) > MAX_CUE_CHARS
                    or word.end - group[0].start > MAX_CUE_SECONDS
                ):
                    yield Cue(group[0].start, group[-1].end, " ".join(w.text for w in group), first_speaker)
                    group = []
            group.append(word)
        if group:
            yield Cue(group[0].start, group[-1].end, " ".join(w.text for w in group), group[0].speaker or segment.speaker)


def _labelled(cue: Cue, names: Mapping[str, str] | None) -> str:
    name = speaker_name(cue.speaker, names)
    return f"{name}: {cue.text}" if name else cue.text


def to_txt(transcript: Transcript, names: Mapping[str, str] | None = None) -> str:
    """One paragraph per speaker turn when speakers are labelled; else the text as one paragraph."""
    if not any(s.speaker for s in transcript.segments):
        return transcript.text + "\n"
    turns: list[list[str]] = []
    last = object()
    for cue in cues(transcript.segments):
        if cue.speaker != last:
            turns.append([f"{speaker_name(cue.speaker, names) or 'Unknown'}:"])
            last = cue.speaker
        turns[-1].append(cue.text)
    return "\n\n".join(" ".join(turn) for turn in turns) + "\n"


def to_srt(transcript: Transcript, names: Mapping[str, str] | None = None) -> str:
    import srt

    subtitles = [
        srt.Subtitle(
            index=i,
            start=datetime.timedelta(seconds=cue.start),
            end=datetime.timedelta(seconds=max(cue.end, cue.start + 0.001)),
            content=_labelled(cue, names),
        )
        for i, cue in enumerate(cues(transcript.segments), start=1)
    ]
    return srt.compose(subtitles, reindex=False)


def to_vtt(transcript: Transcript, names: Mapping[str, str] | None = None) -> str:
    from webvtt import Caption, WebVTT
    from webvtt.models import Timestamp

    captions = []
    for cue in cues(transcript.segments):
        name = speaker_name(cue.speaker, names)
        captions.append(
            Caption(
                start=str(Timestamp.from_seconds(cue.start)),
                end=str(Timestamp.from_seconds(max(cue.end, cue.start + 0.001))),
                text=f"<v {name}>{cue.text}" if name else cue.text,  # the WebVTT voice tag names the speaker
            )
        )
    return WebVTT(captions=captions).content


def to_dict(transcript: Transcript, names: Mapping[str, str] | None = None) -> dict:
    info = transcript.info

    def word(w) -> dict:
        return {"start": round(w.start, 3), "end": round(w.end, 3), "text": w.text, "probability": round(w.probability, 4),
                "speaker": speaker_name(w.speaker, names)}  # fmt: skip

    speakers = list(dict.fromkeys(s.speaker for s in transcript.segments if s.speaker))
    return {
        "model": info.model,
        "language": info.language,
        "language_probability": round(info.language_probability, 4),
        "duration": round(info.duration, 3),
        "options": asdict(transcript.options) if transcript.options else None,
        "speakers": [speaker_name(s, names) for s in speakers],
        "text": transcript.text,
        "segments": [
            {
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "speaker": speaker_name(s.speaker, names),
                "words": [word(w) for w in s.words],
            }
            for s in transcript.segments
        ],
    }


def to_json(transcript: Transcript, names: Mapping[str, str] | None = None) -> str:
    return json.dumps(to_dict(transcript, names), ensure_ascii=False, indent=2) + "\n"


def export(transcript: Transcript, fmt: str, names: Mapping[str, str] | None = None) -> str:
    writers = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt, "json": to_json}
    if fmt not in writers:
        raise ValueError(f"Unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    return writers[fmt](transcript, names)
