"""Who spoke when, offline and with no token: Resemblyzer's bundled speaker encoder plus clustering.

The audio is embedded in short overlapping windows (1.6 s, a new one every 0.25 s) over the stretches
where words were heard; windows are averaged into 2 s pieces, and the pieces clustered with k-means (the
number of speakers given, or estimated on each sentence embedded on its own: a similarity threshold decides
one speaker or more, the silhouette how many, see ``count`` and ``cluster``); each word takes the speaker of
the window centred nearest to it, runs shorter than ``MIN_RUN_WORDS`` are merged into their neighbours, and
segments are split at speaker changes.
Speakers are named "Speaker 1", "Speaker 2"... in order of first appearance.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from itertools import groupby
from dataclasses import replace
from pathlib import Path

import numpy as np

from engines.speech.audio_stream import SAMPLE_RATE, iter_chunks
from engines.base import EngineError, InputError, Segment

WINDOWS_PER_SECOND = 4.0
MAX_SPEAKERS = 8
# Estimating the number of speakers (``cluster``), calibrated on seven voices (tests/speech_fixtures.
# CALIBRATION_VOICES: three espeak-ng, flite's awb and slt, and each of those two pitched by sox) in 22 files,
# 28 s monologues and 2-4 speaker conversations (bench/speaker_calibration.py): the two groups the tree of
# pieces ends with are, on average, 0.80-0.88 alike in every monologue and 0.49-0.61 in every conversation
# but one (two espeak-ng voices, 0.79: resemblyzer hears them as one); 0.70 is the middle. How many
# speakers a conversation has is then the k-means count with the best silhouette, which needs no threshold.
# Checked after on seven voices not used for this (HELD_OUT_VOICES): 20 of 22 files counted right (a voice
# and itself 4 semitones higher were joined: 0.70 alike; and one four-voice file got 5, DER 8.7%).
SAME_SPEAKER_SIMILARITY = 0.70
MIN_SPEAKER_SECONDS = 3.0
PIECE_SECONDS = 2.0
MIN_RUN_WORDS = 2
MERGE_GAP = 0.5  # words closer than this are one stretch of speech, embedded together
MIN_FIT_SECONDS = 1.0  # windows from shorter stretches are mostly padding: assigned, not clustered on
SENTENCE_ENDS = (".", "?", "!")


class SpeakerLabeler:
    """Holds the speaker encoder once loaded (17 MB of weights, on CPU: it is fast enough)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._encoder = None
        self._lock = threading.Lock()

    def _loaded(self):
        with self._lock:
            if self._encoder is None:
                try:
                    from resemblyzer import VoiceEncoder
                except ImportError as e:
                    raise EngineError("Speaker labels need resemblyzer: pip install resemblyzer scikit-learn") from e
                self._encoder = VoiceEncoder(self.device, verbose=False)
            return self._encoder

    def unload(self) -> None:
        with self._lock:
            self._encoder = None

    def embed(self, audio: str | Path | np.ndarray, regions: list[tuple[float, float]]) -> tuple[np.ndarray, ...]:
        """(window centres in seconds, L2-normalised embeddings, whether each is reliable enough to
        cluster on), windows taken inside the given stretches of speech only.

        A window that straddles a pause embeds the pause too, and such windows cluster together as a
        "speaker" of their own; so each stretch of speech is embedded on its own.
        """
        from resemblyzer import normalize_volume

        encoder = self._loaded()
        chunks: Iterator = iter([(0.0, audio)]) if isinstance(audio, np.ndarray) else iter_chunks(audio)
        centres, embeddings, reliable = [], [], []
        for offset, samples in chunks:
            end_of_chunk = offset + len(samples) / SAMPLE_RATE
            for start, end in regions:
                lo, hi = max(start, offset), min(end, end_of_chunk)
                if hi - lo < 0.3:
                    continue
                piece = samples[int((lo - offset) * SAMPLE_RATE) : int((hi - offset) * SAMPLE_RATE)]
                piece = normalize_volume(piece, -30, increase_only=True)
                _, partials, slices = encoder.embed_utterance(piece, return_partials=True, rate=WINDOWS_PER_SECOND)
                for emb, window in zip(partials, slices):
                    centres.append(lo + min((window.start + window.stop) / 2, len(piece)) / SAMPLE_RATE)
                    embeddings.append(emb)
                    reliable.append(hi - lo >= MIN_FIT_SECONDS)
        if not embeddings:
            return np.zeros(0), np.zeros((0, 256), np.float32), np.zeros(0, bool)
        return np.array(centres), np.array(embeddings), np.array(reliable)

    def label(
        self, audio: str | Path | np.ndarray, segments: list[Segment], num_speakers: int | None = None
    ) -> list[Segment]:
        """Segments split into speaker turns, each segment and word carrying its speaker."""
        if num_speakers is not None and not 1 <= num_speakers <= MAX_SPEAKERS:
            raise InputError(f"The number of speakers must be between 1 and {MAX_SPEAKERS} (or 0 to estimate it).")
        if not segments:
            return []
        if num_speakers is None:
            num_speakers = self.count(audio, segments)
        if num_speakers == 1:
            return one_speaker(segments)
        fitted = self._fit(audio, speech_regions(segments), num_speakers)
        if fitted is None:
            return one_speaker(segments)
        centres, embeddings, centroids = fitted
        clusters = np.argmax(embeddings @ centroids.T, axis=1)  # every window, short stretches included
        return assign(segments, centres, clusters)

    def count(self, audio: str | Path | np.ndarray, segments: list[Segment]) -> int:
        """How many people speak, estimated on each sentence embedded on its own.

        Counting wants pure samples of each voice: people take turns at sentence ends, often with hardly a
        pause, and a window across a change of speaker is like both voices (over a phone line, two voices
        mixed that way looked like one). Labelling (``label``) wants context at every word instead: its
        windows run over whole stretches of speech, and it takes this count."""
        fitted = self._fit(audio, sentence_spans(segments), None)
        return 1 if fitted is None else len(fitted[2])

    def _fit(self, audio, regions: list[tuple[float, float]], num_speakers: int | None):
        """(window centres, window embeddings, one centroid per speaker found), or None without speech."""
        centres, embeddings, reliable = self.embed(audio, regions)
        if len(embeddings) == 0:
            return None
        if reliable.sum() < 3:
            reliable[:] = True
        _, piece_embeddings, piece_seconds = pieces(centres[reliable], embeddings[reliable], regions)
        fitted = cluster(piece_embeddings, piece_seconds, num_speakers)
        centroids = np.array([piece_embeddings[fitted == c].mean(axis=0) for c in np.unique(fitted)])
        return centres, embeddings, centroids


def one_speaker(segments: list[Segment]) -> list[Segment]:
    return [replace(s, speaker="Speaker 1", words=tuple(replace(w, speaker="Speaker 1") for w in s.words)) for s in segments]


def speech_regions(segments: list[Segment]) -> list[tuple[float, float]]:
    """Stretches of speech: words (or segments, without word timestamps) joined while the pause between them is
    under MERGE_GAP."""
    spans = [(w.start, w.end) for s in segments for w in s.words] or [(s.start, s.end) for s in segments]
    return merge_spans(spans, MERGE_GAP)


def sentence_spans(segments: list[Segment]) -> list[tuple[float, float]]:
    """Stretches of speech that are likely one speaker's: words joined while the pause between them is under
    MERGE_GAP and the earlier word does not end a sentence. People take turns at sentence ends, often with
    hardly a pause (a phone call's "...in New Jersey. And I'm Sheila..."). Without words, ``speech_regions``."""
    words = sorted((w for s in segments for w in s.words), key=lambda w: w.start)
    if not words:
        return speech_regions(segments)
    out: list[tuple[float, float]] = []
    after_sentence = False
    for w in words:
        if out and not after_sentence and w.start - out[-1][1] < MERGE_GAP:
            out[-1] = (out[-1][0], max(out[-1][1], w.end))
        else:
            out.append((w.start, w.end))
        after_sentence = w.text.strip().endswith(SENTENCE_ENDS)
    return out


def merge_spans(spans: list[tuple[float, float]], gap: float = 0.3) -> list[tuple[float, float]]:
    """Word spans joined into stretches of speech wherever the pause between them is under ``gap``."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def pieces(centres: np.ndarray, embeddings: np.ndarray, regions: list[tuple[float, float]]) -> tuple[np.ndarray, ...]:
    """Windows grouped into pieces of about PIECE_SECONDS of one stretch of speech: (piece of each window,
    unit-length mean embedding of each piece, seconds each piece covers). Windows overlap heavily, so one
    piece is one independent look at a voice; the speaker count is judged on pieces."""
    index = np.full(len(centres), -1)
    means, seconds = [], []
    for start, end in regions:
        inside = np.flatnonzero((centres >= start) & (centres <= end))
        if len(inside) == 0:
            continue
        count = max(1, int(round((end - start) / PIECE_SECONDS)))
        groups = np.minimum(((centres[inside] - start) / (end - start + 1e-9) * count).astype(int), count - 1)
        for g in np.unique(groups):
            members = inside[groups == g]
            index[members] = len(means)
            mean = embeddings[members].mean(axis=0)
            means.append(mean / np.linalg.norm(mean))
            seconds.append((end - start) / count)
    return index, np.array(means), np.array(seconds)


def cluster(embeddings: np.ndarray, seconds: np.ndarray, num_speakers: int | None = None) -> np.ndarray:
    """Cluster ids per piece.

    Given a number of speakers, k-means finds that many groups. Else the pieces are one speaker if the
    average-linkage tree (cosine) joins its last two groups at a similarity of SAME_SPEAKER_SIMILARITY or
    more; otherwise k-means runs for 2 to MAX_SPEAKERS groups and the grouping with the best silhouette
    (scikit-learn's, cosine) wins. A group that covers less than MIN_SPEAKER_SECONDS joins the nearest
    other before a grouping is scored: a voice must be heard for a while to count as a person.
    """
    from scipy.cluster.hierarchy import linkage
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(embeddings)
    one = np.zeros(n, dtype=int)
    if num_speakers == 1 or n < 2:
        return one
    if num_speakers is not None:  # k-means: average linkage cut at k would rather isolate a few odd pieces
        return KMeans(min(num_speakers, n), n_init=10, random_state=0).fit_predict(embeddings)
    if n < 3 or 1.0 - linkage(embeddings, "average", metric="cosine")[-1, 2] >= SAME_SPEAKER_SIMILARITY:
        return one
    best, best_score = one, -1.0
    for k in range(2, min(MAX_SPEAKERS, n - 1) + 1):
        labels = _join_short(KMeans(k, n_init=10, random_state=0).fit_predict(embeddings), embeddings, seconds)
        if labels.max() == 0:
            continue
        score = float(silhouette_score(embeddings, labels, metric="cosine"))
        if score > best_score:
            best, best_score = labels, score
    return best


def _join_short(labels: np.ndarray, embeddings: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Groups covering less than MIN_SPEAKER_SECONDS joined, smallest first, to the most similar other; ids 0..k-1."""
    labels = labels.copy()
    while len(set(labels)) > 1:
        ids = sorted(set(labels))
        covered = {i: seconds[labels == i].sum() for i in ids}
        smallest = min(ids, key=covered.get)
        if covered[smallest] >= MIN_SPEAKER_SECONDS:
            break
        centroid = embeddings[labels == smallest].mean(axis=0)
        others = [i for i in ids if i != smallest]
        nearest = max(others, key=lambda i: float(centroid @ embeddings[labels == i].mean(axis=0)))
        labels[labels == smallest] = nearest
    return np.unique(labels, return_inverse=True)[1]


def _smooth(labels: list[int]) -> list[int]:
    """Merge runs shorter than MIN_RUN_WORDS into the longer neighbouring run: one word is rarely a turn."""
    labels = list(labels)
    changed = True
    while changed:
        changed = False
        runs = []  # (start, end, label)
        for i, label in enumerate(labels):
            if runs and runs[-1][2] == label:
                runs[-1] = (runs[-1][0], i + 1, label)
            else:
                runs.append((i, i + 1, label))
        if len(runs) < 2:
            break
        for j, (start, end, _) in enumerate(runs):
            if end - start < MIN_RUN_WORDS:
                left = runs[j - 1] if j > 0 else None
                right = runs[j + 1] if j + 1 < len(runs) else None
                pick = max((r for r in (left, right) if r), key=lambda r: r[1] - r[0])
                labels[start:end] = [pick[2]] * (end - start)
                changed = True
                break
    return labels


def assign(segments: list[Segment], centres: np.ndarray, clusters: np.ndarray) -> list[Segment]:
    def nearest(t: float) -> int:
        return int(clusters[int(np.argmin(np.abs(centres - t)))])

    words = [w for s in segments for w in s.words]
    if words:
        raw = _smooth([nearest((w.start + w.end) / 2) for w in words])
    else:  # no word timestamps: a segment takes the majority of the windows inside it
        raw = []
        for s in segments:
            inside = [int(c) for t, c in zip(centres, clusters) if s.start <= t <= s.end]
            raw.append(Counter(inside).most_common(1)[0][0] if inside else nearest((s.start + s.end) / 2))
    names: dict[int, str] = {}
    for c in raw:
        names.setdefault(c, f"Speaker {len(names) + 1}")
    if not words:
        return [replace(s, speaker=names[c]) for s, c in zip(segments, raw)]

    out: list[Segment] = []
    i = 0
    for s in segments:
        labelled = [replace(w, speaker=names[raw[i + k]]) for k, w in enumerate(s.words)]
        i += len(labelled)
        if not labelled:
            out.append(replace(s, speaker=names.get(nearest((s.start + s.end) / 2), "Speaker 1")))
            continue
        turns = [list(group) for _, group in groupby(labelled, key=lambda w: w.speaker)]
        if len(turns) == 1:
            out.append(replace(s, words=tuple(labelled), speaker=labelled[0].speaker))
            continue
        for turn in turns:  # one segment per turn, timed by its words
            out.append(Segment(turn[0].start, turn[-1].end, " ".join(w.text for w in turn), tuple(turn), turn[0].speaker))
    return out


# ---------------------------------------------------------------- one speaker per channel

CROSSTALK_DB = 6.0  # a word this much louder on another channel was said there and leaked into this one
SAME_AUDIO_CORRELATION = 0.98


def _rms(path: Path, start: float, end: float) -> float:
    import wave

    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        first = max(0, int(start * rate))
        w.setpos(min(first, w.getnframes()))
        samples = np.frombuffer(w.readframes(max(1, int((end - start) * rate))), np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def channels_alike(paths: list[Path], seconds: float = 60.0) -> bool:
    """Whether the channels carry the same sound (a mono recording saved as stereo)."""
    import wave

    heads = []
    for path in paths:
        with wave.open(str(path), "rb") as w:
            heads.append(np.frombuffer(w.readframes(int(seconds * w.getframerate())), np.int16).astype(np.float32))
    n = min(len(h) for h in heads)
    if n == 0:
        return False
    heads = [h[:n] - h[:n].mean() for h in heads]
    norms = [np.linalg.norm(h) for h in heads]
    if min(norms) == 0:
        return False
    return all(float(heads[0] @ h) / (norms[0] * norm) >= SAME_AUDIO_CORRELATION for h, norm in zip(heads[1:], norms[1:]))


def merge_channels(channels: list[tuple[Path, list[Segment]]]) -> list[Segment]:
    """Transcripts of each channel (its mono file, its segments with words) as one, ordered by time:
    channel 1 is "Speaker 1", channel 2 "Speaker 2"... A word that is louder by CROSSTALK_DB on another
    channel is that channel's speaker heard through this one's microphone, and is left out here."""
    paths = [p for p, _ in channels]
    out: list[Segment] = []
    for index, (path, segments) in enumerate(channels):
        name = f"Speaker {index + 1}"
        others = [p for p in paths if p != path]
        for s in segments:
            words = [
                replace(w, speaker=name)
                for w in s.words
                if not _leaked(path, others, w.start, w.end)
            ]
            if s.words and not words:
                continue
            text = s.text if len(words) == len(s.words) else " ".join(w.text for w in words)
            start, end = (words[0].start, words[-1].end) if words else (s.start, s.end)
            out.append(Segment(start, end, text, tuple(words), name))
    return sorted(out, key=lambda s: (s.start, s.end))


def _leaked(path: Path, others: list[Path], start: float, end: float) -> bool:
    own = _rms(path, start, end)
    loudest = max((_rms(p, start, end) for p in others), default=0.0)
    return loudest > 0 and 20 * np.log10(max(loudest, 1e-9) / max(own, 1e-9)) >= CROSSTALK_DB
