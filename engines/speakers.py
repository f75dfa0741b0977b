"""Who spoke when, offline and with no token: Resemblyzer's bundled speaker encoder plus clustering.

The audio is embedded in short overlapping windows (1.6 s, a new one every 0.25 s) over the stretches
where words were heard; the windows are clustered with k-means (the number of speakers given, or
estimated, see ``cluster``); each word takes the speaker of the window centred nearest to it, runs shorter
than ``MIN_RUN_WORDS`` are merged into their neighbours, and segments are split at speaker changes.
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

from engines.audio_stream import SAMPLE_RATE, iter_chunks
from engines.base import EngineError, InputError, Segment

WINDOWS_PER_SECOND = 4.0
MAX_SPEAKERS = 8
# Estimating the number of speakers, measured on espeak-ng voices (which sound more alike than people):
# two voices give silhouette 0.45 and centroids 0.85 alike; one voice split in two 0.34 and 0.87-0.91.
MIN_SILHOUETTE = 0.4
MAX_CENTROID_SIMILARITY = 0.88
SILHOUETTE_TOLERANCE = 0.05
MIN_RUN_WORDS = 2
MERGE_GAP = 0.5  # words closer than this are one stretch of speech, embedded together
MIN_FIT_SECONDS = 1.0  # windows from shorter stretches are mostly padding: assigned, not clustered on


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

    def embed(self, audio: str | Path | np.ndarray, spans: list[tuple[float, float]]) -> tuple[np.ndarray, ...]:
        """(window centres in seconds, L2-normalised embeddings, whether each is reliable enough to
        cluster on), windows taken inside speech only.

        A window that straddles a pause embeds the pause too, and such windows cluster together as a
        "speaker" of their own; so each stretch of speech is embedded on its own.
        """
        from resemblyzer import normalize_volume

        encoder = self._loaded()
        regions = merge_spans(spans, MERGE_GAP)
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
        spans = [(w.start, w.end) for s in segments for w in s.words] or [(s.start, s.end) for s in segments]
        centres, embeddings, reliable = self.embed(audio, spans)
        if len(embeddings) == 0:
            return [replace(s, speaker="Speaker 1", words=tuple(replace(w, speaker="Speaker 1") for w in s.words)) for s in segments]
        if reliable.sum() < 3:
            reliable[:] = True
        fitted = cluster(embeddings[reliable], num_speakers)
        centroids = np.array([embeddings[reliable][fitted == c].mean(axis=0) for c in np.unique(fitted)])
        clusters = np.argmax(embeddings @ centroids.T, axis=1)  # every window, short stretches included
        return assign(segments, centres, clusters)


def merge_spans(spans: list[tuple[float, float]], gap: float = 0.3) -> list[tuple[float, float]]:
    """Word spans joined into stretches of speech wherever the pause between them is under ``gap``."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def cluster(embeddings: np.ndarray, num_speakers: int | None = None) -> np.ndarray:
    """Cluster ids per window (k-means on the unit-length embeddings).

    When the number of speakers is not given, the k with the best silhouette wins, but only if the
    split is clear: silhouette at least MIN_SILHOUETTE and no two centroids more alike than
    MAX_CENTROID_SIMILARITY (one voice split in two gives centroids about 0.9 alike). Else one speaker.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(embeddings)
    if num_speakers == 1 or n < 4:
        return np.zeros(n, dtype=int)

    def fit(k: int) -> np.ndarray:
        return KMeans(k, n_init=10, random_state=0).fit_predict(embeddings)

    if num_speakers is not None:
        return fit(min(num_speakers, n))
    candidates = []  # (k, silhouette, labels) for the clear splits
    for k in range(2, min(MAX_SPEAKERS, n - 1) + 1):
        labels = fit(k)
        score = silhouette_score(embeddings, labels, metric="cosine")
        if score >= MIN_SILHOUETTE and max_centroid_similarity(embeddings, labels) <= MAX_CENTROID_SIMILARITY:
            candidates.append((k, score, labels))
    if not candidates:
        return np.zeros(n, dtype=int)
    best = max(score for _, score, _ in candidates)
    # The fewest speakers that explain the voices about as well as the best split: a few odd windows
    # can lift a larger k's score a little without there being more people.
    return next(labels for _, score, labels in candidates if score >= best - SILHOUETTE_TOLERANCE)


def max_centroid_similarity(embeddings: np.ndarray, labels: np.ndarray) -> float:
    centroids = np.array([embeddings[labels == c].mean(axis=0) for c in np.unique(labels)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    similarity = centroids @ centroids.T
    return float(similarity[np.triu_indices(len(centroids), 1)].max())


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
