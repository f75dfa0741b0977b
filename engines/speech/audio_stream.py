"""Read audio files with PyAV a piece at a time, so a three-hour recording never sits in memory whole.

``probe_audio`` checks a file before anything heavy happens, so a bad upload gets a clear
``InputError`` instead of an FFmpeg traceback from deep inside the decoder. ``iter_chunks`` then
decodes and resamples to 16 kHz mono float32 (what Whisper works at) and hands the samples out in
chunks of about ``chunk_seconds``, each cut at the quietest moment near its end so no word is split.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engines.base import InputError

SAMPLE_RATE = 16000
CUT_SEARCH_SECONDS = 5.0  # where a chunk may end: the quietest 100 ms in its last 5 seconds
QUIET_WINDOW = SAMPLE_RATE // 10
GROUP_SAMPLES = 1 << 18  # frames are resampled this many source samples at a time (5.5 s at 48 kHz)


def probe_audio(audio_path: str | Path) -> float | None:
    """Raise InputError unless the file exists, is readable and holds at least one decodable audio frame.

    Returns the duration the file's header announces, or None when it announces none. Decoding a
    single frame is cheap and catches files whose header parses but whose data does not.
    """
    import av  # imported here so the app starts without PyAV's FFmpeg libraries loaded

    path = Path(audio_path)
    name = path.name or str(path)
    if not path.exists():
        raise InputError(f"Audio file not found: {path}")
    if path.is_dir():
        raise InputError(f"{name} is a folder, not an audio file.")
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise InputError(f"{name} cannot be read ({e.strerror or e}).") from e
    if path.stat().st_size == 0:
        raise InputError(f"{name} is empty (0 bytes): there is no audio to transcribe.")
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams})
                holds = f" (it holds only {', '.join(kinds)})" if kinds else ""
                raise InputError(f"{name} has no audio track{holds}.")
            stream = container.streams.audio[0]
            for _frame in container.decode(stream):
                break
            else:
                raise InputError(f"{name} has an audio track but it holds no sound that can be decoded.")
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
            return None
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InputError(
            f"{name} is not an audio file that can be read ({reason}). "
            "Try a WAV, MP3, FLAC, M4A or OGG file."
        ) from e


def _frames(container, stream) -> Iterator:
    """Decoded frames, skipping packets FFmpeg cannot decode (a damaged stretch mid-file)."""
    import av

    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def _grouped(frames: Iterator, samples: int = GROUP_SAMPLES) -> Iterator:
    """The decoded frames joined into frames of about ``samples`` each, as faster-whisper's own decoder joins
    them: the resampler is called once per frame, and a WAV's frames are small (88.7 s of 16 kHz speech is
    1,386 frames: 66-88 ms to decode frame by frame, 36-57 ms joined, on the shared 2-core VM; the same samples)."""
    import av

    fifo = av.audio.fifo.AudioFifo()
    for frame in frames:
        frame.pts = None  # the FIFO checks timestamps run on; a skipped damaged packet breaks that
        fifo.write(frame)
        if fifo.samples >= samples:
            yield fifo.read()
    if fifo.samples:
        yield fifo.read()


def quiet_cut(samples: np.ndarray, limit: int) -> int:
    """Index at or before ``limit`` in the middle of the quietest 100 ms of the last few seconds."""
    lo = max(0, limit - int(CUT_SEARCH_SECONDS * SAMPLE_RATE))
    region = samples[lo:limit].astype(np.float32)
    windows = len(region) // QUIET_WINDOW
    if windows < 2:
        return limit
    energy = np.square(region[: windows * QUIET_WINDOW]).reshape(windows, QUIET_WINDOW).sum(axis=1)
    return lo + int(np.argmin(energy)) * QUIET_WINDOW + QUIET_WINDOW // 2


def iter_chunks(audio_path: str | Path, chunk_seconds: float = 600.0) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(offset in seconds, float32 samples)``; only about one chunk is held in memory at a time."""
    import av

    limit = int(chunk_seconds * SAMPLE_RATE)
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pending: list[np.ndarray] = []
    held = 0
    offset = 0
    try:
        with av.open(str(audio_path), mode="r", metadata_errors="ignore") as container:
            stream = container.streams.audio[0]
            stream.thread_type = "AUTO"
            frames = _grouped(_frames(container, stream))
            while True:
                frame = next(frames, None)
                outs = resampler.resample(frame)  # None flushes the resampler at the end
                for out in outs:
                    array = out.to_ndarray().reshape(-1)
                    pending.append(array)
                    held += len(array)
                while held >= limit + QUIET_WINDOW:
                    samples = np.concatenate(pending)
                    cut = quiet_cut(samples, limit)
                    yield offset / SAMPLE_RATE, samples[:cut].astype(np.float32) / 32768.0
                    offset += cut
                    pending, held = [samples[cut:]], len(samples) - cut
                if frame is None:
                    break
    except av.error.FFmpegError as e:
        raise InputError(f"{Path(audio_path).name} could not be decoded past {offset / SAMPLE_RATE:.0f} s: {e}") from e
    if held:
        yield offset / SAMPLE_RATE, np.concatenate(pending).astype(np.float32) / 32768.0


def channel_count(audio_path: str | Path) -> int:
    """Channels in the file's first audio stream (after ``probe_audio`` has accepted it)."""
    import av

    with av.open(str(audio_path), mode="r", metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        return int(stream.codec_context.channels or len(stream.layout.channels) or 1)


def split_channels(audio_path: str | Path, directory: str | Path) -> list[Path]:
    """Each channel of a file as its own 16 kHz mono WAV in ``directory`` (``<stem>.ch1.wav``, ...), decoded a
    piece at a time and written atomically, so a three-hour call is never held in memory."""
    import wave

    import av

    path = Path(audio_path)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    count = channel_count(path)
    outs = [directory / f"{path.stem}.ch{i + 1}.wav" for i in range(count)]
    parts = [p.with_name(p.name + ".part") for p in outs]
    writers = [wave.open(str(p), "wb") for p in parts]
    try:
        for w in writers:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
        resampler = None
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            stream = container.streams.audio[0]
            frames = _frames(container, stream)
            while True:
                frame = next(frames, None)
                if resampler is None and frame is not None:  # the file's own layout: channels kept apart
                    resampler = av.audio.resampler.AudioResampler(format="s16", layout=frame.layout.name, rate=SAMPLE_RATE)
                for out in resampler.resample(frame) if resampler else ():
                    samples = out.to_ndarray().reshape(-1, count)
                    for channel, w in enumerate(writers):
                        w.writeframes(np.ascontiguousarray(samples[:, channel]).tobytes())
                if frame is None:
                    break
    except av.error.FFmpegError as e:
        raise InputError(f"{path.name} could not be decoded: {e}") from e
    finally:
        for w in writers:
            w.close()
    for part, out in zip(parts, outs):
        part.replace(out)
    return outs
