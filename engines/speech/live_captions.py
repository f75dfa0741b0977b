"""Live captions from a microphone stream: local agreement over a short buffer, with bounded work.

Audio arrives in numbered chunks at any rate and channel count. It is put back in order (a chunk that
comes twice is dropped), resampled to 16 kHz mono, written whole to a WAV file (re-transcribed in one pass
when the person stops) and appended to a buffer that holds only the audio whose words are not final yet.

* Latency does not grow with backlog: each decode takes *all* the audio that came in meanwhile (pending
  audio is merged, never queued as windows), and the buffer is cut after every final word, so one decode
  is a few seconds of audio at most, whatever the machine's speed.
* The tentative text is decoded with fast settings (greedy, no word timestamps, the window encoded at its
  own length: ``WhisperSpeechEngine.transcribe_window``). Words two fast decodes in a row agree on
  ("LocalAgreement-2") are *pinned*: handed to the next fast decode as its forced prefix, so only the tail
  after them is decoded again and the grey text does not flicker. The words before the buffer are the prompt.
* Words are made final only by a careful decode (the panel's beam size) of the buffer *without* the pinned
  prefix, at a pause (Silero VAD) or, in speech without pauses, with word timestamps to know where to cut
  (after a sentence or a clause where there is one). Pinned words were final once: two greedy decodes of
  overlapping audio make the same mistake, so their agreement locked it in (festival's ked voice, 33 s with
  pauses: live WER 0.17 where the file's was 0.0; "a garden" stayed "occurred"). The careful decode of the
  whole phrase hears what the file transcript hears; one Whisper doubts is retried once (``transcribe_window``).
* A buffer with no speech is never decoded, so silence gives no hallucinated "Thank you.".
* When the panel's model is slow, a smaller one (``tail_engine``) decodes the tentative tail; when even
  that falls more than ``BEHIND_SECONDS`` behind (a machine busy with something else), the live text skips
  to the newest audio ("…") instead of queueing: the recording and the final transcript keep everything.
"""

from __future__ import annotations

import os
import re
import threading
import time
import wave
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engines.speech.audio_stream import SAMPLE_RATE
from engines.base import InputError, SpeechEngine, TranscribeOptions

MIN_STEP_SECONDS = 0.15  # never decode twice within this much new audio
MIN_SPEECH_SECONDS = 1.0  # Whisper guesses wildly from less: the first decode waits for this much speech
PAUSE_SECONDS = 0.4  # silence after speech that ends a phrase: everything before it is final
KEEP_SILENCE_SECONDS = 0.5  # of a buffer with no speech, the end is kept in case speech is starting
MAX_BUFFER_SECONDS = 6.0  # speech without a pause: past this, the final words are cut off with timestamps
TAIL_CONTEXT_SECONDS = 1.0  # ...keeping at least this much audio after the cut
CUT_LEAVES_SECONDS = MAX_BUFFER_SECONDS - 1.0  # ...and at most this much, or the next decode cuts again at once
PHRASE_ENDS = (".?!", ",;:")  # where such a cut goes first: after a sentence, else after a clause
HARD_MAX_BUFFER_SECONDS = 12.0  # no agreement at all for this long: make the oldest words final anyway
BEHIND_SECONDS = 15.0  # more audio than this waiting: decoding cannot keep up; skip to the newest audio
CATCH_UP_SECONDS = 3.0  # ...keeping this much of it
PROMPT_CHARS = 200  # final text handed to Whisper as context
SLOW_DECODE_SECONDS = 0.6  # a tentative decode slower than this hands the tail to ``tail_engine``
MAX_HELD_CHUNKS = 200  # chunks waiting for a missing one; past this the missing one is given up
MAX_SECONDS = 3 * 3600.0


@dataclass(frozen=True)
class Captions:
    confirmed: str  # final: never changes again
    tentative: str  # may still be revised
    seconds: float  # audio received so far
    version: int = 0  # grows with every change, for a page waiting on the next one


def _norm(text: str) -> str:
    return re.sub(r"[^\w']", "", text.lower())


def agreed_prefix(a: list[str], b: list[str]) -> int:
    """How many leading words two hypotheses share, ignoring case and punctuation."""
    n = 0
    while n < min(len(a), len(b)) and _norm(a[n]) == _norm(b[n]):
        n += 1
    return n


def after_prefix(words: list[str], pinned: list[str]) -> list[str]:
    """The words a decode heard after the pinned ones it was handed as its prefix.

    The prefix comes back first, but not always word for word (punctuation, a word said twice): then the
    decode's words after the prefix's last three are taken.
    """
    if agreed_prefix(words, pinned) == len(pinned):
        return words[len(pinned) :]
    tail = [_norm(w) for w in pinned[-3:]]
    normed = [_norm(w) for w in words]
    ends = [i for i in range(len(tail), len(words) + 1) if normed[i - len(tail) : i] == tail]
    if ends:
        return words[min(ends, key=lambda i: abs(i - len(pinned))) :]
    return words[len(pinned) :]


def drop_loops(words: list[str]) -> list[str]:
    """A decoder stuck in a loop is cut after the first time round: a phrase of four words or more said
    twice in a row ("... apples and bread. We went to the market on Monday and bought some apples and
    bread."), or a shorter one three times ("We went. We went. We went."). Phrases of any length: a whole
    sentence comes back looped too (nine words three times, measured)."""
    normed = [_norm(w) for w in words]
    for i in range(len(words)):
        for k in range(1, (len(words) - i) // 2 + 1):
            repeats = 2 if k >= 4 else 3
            if i + k * repeats > len(words):
                break
            if all(normed[i + j * k : i + (j + 1) * k] == normed[i : i + k] for j in range(1, repeats)):
                return words[: i + k]
    return words


def drop_repeated_head(before: list[str], words: list[str], longest: int = 4) -> list[str]:
    """``words`` without a head that repeats the end of ``before``: after a cut inside speech, the new
    buffer may start with the rest of the last final word, which Whisper hears as that word again."""
    normed_before, normed = [_norm(w) for w in before], [_norm(w) for w in words]
    for k in range(min(longest, len(before), len(words)), 0, -1):
        if normed[:k] == normed_before[-k:]:
            return words[k:]
    return words


def phrase_cut(words: list[str], ends: list[float], earliest: float) -> int:
    """How many of ``words`` (ending at ``ends`` seconds) to make final at a cut inside speech: all of them,
    unless a sentence ends among them at ``earliest`` or later (the last such), else a clause (a comma).

    Whisper puts punctuation where the speaker paused, so a cut there starts the next window at a word's
    start; between two words said without a pause the cut can land in the next word's onset, and that word
    is misheard ("the old clock in the | hour stopped"). Held-out voices, 60 s with 0.1 s between
    sentences: live WER 0.054 -> 0.024 (flite rms), 0.082 -> 0.072 (kal), 0.314 -> 0.288 (espeak en-029)."""
    for marks in PHRASE_ENDS:
        after = [i + 1 for i, (word, end) in enumerate(zip(words, ends)) if word[-1:] in marks and end >= earliest]
        if after:
            return after[-1]
    return len(words)


def to_mono_int16(data) -> np.ndarray:
    """A microphone chunk (int16/int32/float, any channel count) as one channel of int16."""
    data = np.asarray(data)
    if data.ndim == 2 and data.shape[1] > 1:  # channels are averaged; a 6-channel file is heard whole
        as_float = data.astype(np.float32) / (32768.0 if data.dtype == np.int16 else 1.0)
        if data.dtype == np.int32:
            as_float = data.astype(np.float32) / 2147483648.0
        data = as_float.mean(axis=1)
    data = data.reshape(-1)
    if data.dtype.kind == "f":
        return (np.clip(np.nan_to_num(data), -1.0, 1.0) * 32767).astype(np.int16)
    if data.dtype == np.int32:
        return (data >> 16).astype(np.int16)
    return data.astype(np.int16)


class LiveCaptioner:
    """One recording. ``feed`` may be called from several threads; chunks carry their sequence number."""

    def __init__(
        self,
        engine: SpeechEngine,
        recording: str | Path,
        options: TranscribeOptions | None = None,
        background: bool = False,
        tail_engine: SpeechEngine | None = None,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        """``background``: decode in a thread of its own so ``feed`` returns at once (the page's chunk calls
        must not wait for Whisper); else ``feed`` decodes in line (deterministic tests).
        The recording is written to ``recording`` + ``.part`` and renamed when it is finished."""
        self.engine = engine
        self.tail_engine = tail_engine
        self.options = options or TranscribeOptions()
        self.max_seconds = max_seconds
        self.recording = Path(recording)
        self._part = self.recording.with_name(self.recording.name + ".part")
        self._wav = wave.open(str(self._part), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)
        self._resampler = None
        self._input_rate: int | None = None
        self._next_seq = 0
        self._held: dict[int, tuple[int, np.ndarray]] = {}
        self.gaps = 0  # chunks that never came
        self.skipped = 0.0  # seconds of audio left out of the live text because decoding fell behind
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0.0  # seconds since the recording began
        self.received = 0.0
        self.committed: list[str] = []  # final words (all before the buffer)
        self.pinned: list[str] = []  # agreed words in the buffer, still tentative: the next fast decode's prefix
        self._mid_speech = False  # the buffer starts at a cut inside speech, not at a pause
        self.previous: list[str] = []  # the last hypothesis after the pinned words, for agreement
        self.tentative: list[str] = []
        self.error = ""
        self.last_fed = time.monotonic()
        self.version = 0
        self._shown: tuple = (0, (), (), "")
        self.decode_seconds: list[float] = []  # each decode's cost, for the benchmark
        self._decoded_at = -1.0  # self.received at the last decode
        self._slow = False  # the panel's model cannot keep up: the tail goes to tail_engine
        self._intake = threading.Lock()  # order, the recording and the buffer
        self._changed = threading.Condition()  # captions changed (waiters: the page's long poll)
        self._decoding = threading.Lock()
        self._wake = threading.Event()
        self.closed = False
        self._worker = threading.Thread(target=self._work, daemon=True) if background else None
        if self._worker:
            self._worker.start()
        from faster_whisper.vad import get_vad_model

        get_vad_model()  # loaded now (once per process), not during the first words

    # ---------------------------------------------------------------- audio in

    def _to_16k(self, rate: int, data) -> np.ndarray:
        samples = to_mono_int16(data)
        if rate == SAMPLE_RATE:
            return samples
        import av

        if self._input_rate != rate:  # a resampler keeps its state across chunks: no seams
            self._resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            self._input_rate = rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.reshape(1, -1)), format="s16", layout="mono")
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    def _append(self, rate: int, data) -> None:
        """One chunk, in order (the intake lock is held)."""
        if self.received >= self.max_seconds:
            self.error = f"The recording reached its limit of {self.max_seconds / 3600:g} hours: press Stop."
            return
        samples = self._to_16k(int(rate), data)
        self._wav.writeframes(samples.tobytes())
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float32) / 32768.0])
        self.received += len(samples) / SAMPLE_RATE

    def feed(self, rate: int, data, seq: int | None = None) -> Captions:
        """Take one chunk from the microphone (``seq``: its number from 0; None: the next one)."""
        with self._intake:
            if self.closed or rate is None or int(rate) <= 0 or data is None or len(data) == 0:
                return self.captions()
            self.last_fed = time.monotonic()
            seq = self._next_seq if seq is None else int(seq)
            if seq < self._next_seq or seq in self._held:
                return self.captions()  # sent twice (a retry): the first copy is in the recording
            self._held[seq] = (int(rate), data)
            if len(self._held) > MAX_HELD_CHUNKS:  # the missing chunk is not coming: go on without it
                self.gaps += min(self._held) - self._next_seq
                self._next_seq = min(self._held)
            while self._next_seq in self._held:
                self._append(*self._held.pop(self._next_seq))
                self._next_seq += 1
        if self._worker:
            self._wake.set()
        else:
            self._maybe_decode()
        return self.captions()

    def _maybe_decode(self) -> None:
        with self._decoding:
            received = self.received
            if received - self._decoded_at >= MIN_STEP_SECONDS:
                self._decoded_at = received
                started = time.perf_counter()
                self._decode()
                self.decode_seconds.append(time.perf_counter() - started)

    def _work(self) -> None:
        while not self.closed:
            self._wake.wait(0.5)
            self._wake.clear()
            if self.closed:
                break
            try:
                self._maybe_decode()
            except Exception as e:  # shown with the captions; the recording goes on
                self.error = str(e)
                self._publish()

    # ---------------------------------------------------------------- the policy

    def _speech(self, buffer: np.ndarray) -> list[dict]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        vad = VadOptions(min_silence_duration_ms=int(PAUSE_SECONDS * 1000), speech_pad_ms=100)
        return get_speech_timestamps(buffer, vad)

    def _cut(self, seconds: float) -> None:
        """Drop the buffer's audio before ``seconds`` (absolute); audio appended meanwhile stays."""
        with self._intake:
            drop = int(max(0.0, seconds - self.buffer_start) * SAMPLE_RATE)
            self.buffer = self.buffer[drop:]
            self.buffer_start += drop / SAMPLE_RATE

    def _prompted(self) -> TranscribeOptions:
        prompt = " ".join(w for w in self.committed if w != "…")[-PROMPT_CHARS:]
        return replace(self.options, initial_prompt=prompt or self.options.initial_prompt, batched=False, vad_filter=False)

    def _transcribe(self, audio: np.ndarray, fast: bool, timed: bool = False):
        """(words, segments) for ``audio``. Fast: with the pinned words as prefix, the words after them. Careful
        (``fast`` False): no prefix, so it may hear the pinned words differently; all the words."""
        engine = self.tail_engine if fast and self._slow and self.tail_engine is not None else self.engine
        options = replace(self._prompted(), word_timestamps=timed)
        pinned = self.pinned if fast else []
        prefix = " ".join(pinned)
        window = getattr(engine, "transcribe_window", None)
        started = time.perf_counter()
        if window is not None:
            segments = window(audio, options, prefix=prefix, fast=fast)
        else:  # an engine without the live fast path (the fakes): the whole window, no prefix
            segments = engine.transcribe_samples(audio, replace(options, beam_size=1 if fast else options.beam_size))
        if fast and engine is self.engine and self.tail_engine is not None:
            self._slow = time.perf_counter() - started > SLOW_DECODE_SECONDS
        words = after_prefix(" ".join(s.text for s in segments).split(), pinned)
        if not pinned and self._mid_speech:
            words = drop_repeated_head(self.committed, words)
        # A loop may start in the pinned words: a decode given all the words it hears often says them again.
        return drop_loops(pinned + words)[len(pinned) :], segments

    def _decode(self) -> None:
        with self._intake:  # a snapshot: chunks keep arriving while it is transcribed
            buffer, start = self.buffer, self.buffer_start
        seconds = len(buffer) / SAMPLE_RATE
        if seconds < 0.3:
            return
        if seconds > BEHIND_SECONDS:  # the machine is too slow for live captions just now: skip, do not queue
            skipped = buffer[: int((seconds - CATCH_UP_SECONDS) * SAMPLE_RATE)]
            # "…" marks words left out; skipped silence left nothing out (and must not make captions appear).
            self.committed += self.pinned + (["…"] if self._speech(skipped) else [])
            self.pinned, self.previous, self.tentative = [], [], []
            self.skipped += seconds - CATCH_UP_SECONDS
            self._cut(start + seconds - CATCH_UP_SECONDS)
            self._publish()
            return
        speech = self._speech(buffer)
        if not speech:  # silence: never transcribed; keep a little in case speech is starting
            if self.pinned or self.tentative:
                self._finalise(buffer, seconds)
            self._cut(start + seconds - KEEP_SILENCE_SECONDS)
            self._mid_speech = False
            return
        speech_end = min(seconds, speech[-1]["end"] / SAMPLE_RATE)
        if seconds - speech_end >= PAUSE_SECONDS:  # a pause: everything before it is final
            self._finalise(buffer, speech_end)
            self._cut(start + speech_end)
            self._mid_speech = False
            return
        if not self.pinned and sum(r["end"] - r["start"] for r in speech) < MIN_SPEECH_SECONDS * SAMPLE_RATE:
            return
        words, _ = self._transcribe(buffer, fast=True)
        # Words two decodes agree on are final, but never the newest one: it is the likeliest to be cut off.
        agreed = min(agreed_prefix(words, self.previous), max(0, len(words) - 1))
        self.pinned += words[:agreed]
        self.previous = self.tentative = words[agreed:]
        self._publish()
        if seconds > MAX_BUFFER_SECONDS and (self.pinned or seconds > HARD_MAX_BUFFER_SECONDS):
            self._cut_final_words(buffer, start, seconds)

    def _finalise(self, buffer: np.ndarray, end: float) -> None:
        """Everything heard up to ``end`` (seconds into the buffer) is final: decoded once more, carefully.
        Should the careful decode hear nothing (Whisper skips a window it takes for silence), the words shown
        for it stay, tentative ones too: nothing shown is dropped unheard."""
        words, _ = self._transcribe(buffer[: int(end * SAMPLE_RATE)], fast=False)
        self.committed += words or self.pinned + self.tentative
        self.pinned, self.previous, self.tentative = [], [], []
        self._publish()

    def _cut_final_words(self, buffer: np.ndarray, start: float, seconds: float) -> None:
        """Speech without a pause: decode with word timestamps, make the words before the last second final
        (up to the last sentence or clause end among them: ``phrase_cut``), and cut the buffer after them so
        the next decodes stay short."""
        _, segments = self._transcribe(buffer, fast=False, timed=True)
        timed = [w for s in segments for w in s.words]
        words = [w.text.strip() for w in timed]
        if self._mid_speech:  # as _transcribe does with the segments' text, on the timed words
            timed = timed[len(words) - len(drop_repeated_head(self.committed, words)) :]
            words = [w.text.strip() for w in timed]
        timed = timed[: len(drop_loops(words))]
        words = words[: len(timed)]
        limit = seconds - TAIL_CONTEXT_SECONDS
        n = 0
        while n < len(timed) and timed[n].end <= limit:
            n += 1
        if n == 0:
            return
        n = phrase_cut(words[:n], [w.end for w in timed[:n]], seconds - CUT_LEAVES_SECONDS)
        # The careful decode's words replace the pinned ones; its words in the last second are the new
        # tentative tail (and the next agreement's reference), with no prefix until two decodes agree again.
        self.committed += words[:n]
        self.pinned = []
        self.previous = self.tentative = words[n:]
        self._publish()
        self._cut(start + timed[n - 1].end)
        self._mid_speech = True

    # ---------------------------------------------------------------- out

    def _publish(self) -> None:
        """A new version only when the text (or the error) changed: a waiting page wakes for news only."""
        shown = (len(self.committed), tuple(self.pinned), tuple(self.tentative), self.error)
        with self._changed:
            if shown == self._shown:
                return
            self._shown = shown
            self.version += 1
            self._changed.notify_all()

    def captions(self) -> Captions:
        return Captions(
            " ".join(self.committed), " ".join(self.pinned + self.tentative), self.received, self.version
        )

    def wait(self, version: int, timeout: float) -> Captions:
        """The captions once they differ from ``version`` (or after ``timeout`` seconds, or at the end)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.version == version and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        return self.captions()

    def finish(self) -> Path:
        """Close the recording; returns its path (16 kHz mono WAV) for the full re-transcription."""
        with self._intake:
            was_open, self.closed = not self.closed, True
            if was_open:
                for seq in sorted(self._held):  # chunks after a gap that never closed, in order
                    self._append(*self._held.pop(seq))
                    self.gaps += 1 if seq != self._next_seq else 0
                    self._next_seq = seq + 1
                self._wav.close()
                os.replace(self._part, self.recording)
        with self._changed:  # wake every waiting page: the recording ended
            self._changed.notify_all()
        if self._worker:
            self._wake.set()
            self._worker.join(timeout=30)
        if self.received <= 0:
            raise InputError("Nothing was recorded: check that the browser may use the microphone.")
        return self.recording
