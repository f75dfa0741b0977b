"""Recordings cut short by a crash get a WAV header that matches their data, at start-up.

A WAV's header holds the sizes of the file and of its audio, which a writer can only know at the end: Python's
``wave`` patches them after every chunk, so a process killed between writing a chunk and patching them leaves
sizes that are stale, or still 0 when it died during the first. Players then stop early or read nothing. The repair
sets both sizes to the audio actually on disk (a frame cut in half is dropped), so a recording plays up to the
moment it stopped.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

log = logging.getLogger(__name__)


def repair_recordings(folder: str | Path) -> list[Path]:
    """Repair every WAV under ``folder`` (its subfolders too) whose header disagrees with its data; returns them.
    A recording still named ``.wav.part`` (its writer never finished it) is repaired and given its final name."""
    repaired = []
    for path in sorted(Path(folder).rglob("*.wav")) + sorted(Path(folder).rglob("*.wav.part")):
        try:
            fixed = repair_wav(path)
            if path.name.endswith(".part"):
                final = path.with_name(path.name.removesuffix(".part"))
                os.replace(path, final)  # atomic: the recording appears whole, under the name it would have had
                path, fixed = final, True
            if fixed:
                repaired.append(path)
                log.warning("Repaired %s, a recording cut short", path)
        except OSError as e:  # one unreadable file must not stop the app from starting
            log.warning("Could not check %s: %s", path, e)
    return repaired


def _chunks(f, size: int):
    """(id, offset of its header, declared size) for each chunk after the RIFF/WAVE header."""
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        yield chunk_id, pos, chunk_size
        pos += 8 + chunk_size + (chunk_size & 1)


def _is_chunk_at(f, pos: int, size: int) -> bool:
    """Whether a well-formed chunk (an ASCII id, a size that fits the file) starts at ``pos``."""
    if pos + 8 > size:
        return False
    f.seek(pos)
    chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
    return all(32 <= c < 127 for c in chunk_id) and pos + 8 + chunk_size <= size


def repair_wav(path: str | Path) -> bool:
    """Set a PCM WAV's RIFF and data sizes to the audio on disk. Returns True if the file needed it; a file that is
    not a RIFF/WAVE file, or whose header is right, is left as it is."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        riff_size = struct.unpack("<I", head[4:8])[0]
        block_align = data_pos = declared = None
        for chunk_id, pos, chunk_size in _chunks(f, size):
            if chunk_id == b"fmt ":
                f.seek(pos + 8 + 12)
                block_align = struct.unpack("<H", f.read(2))[0]
            elif chunk_id == b"data":
                data_pos, declared = pos, chunk_size
                break
        if data_pos is None or not block_align:
            return False
        on_disk = size - data_pos - 8
        declared_end = data_pos + 8 + declared
        # A data chunk that fits the file and is followed by another chunk (or by nothing) is a finished file.
        if declared_end <= size and (declared_end == size or _is_chunk_at(f, declared_end + (declared & 1), size)):
            if riff_size == size - 8 or declared_end != size:
                return False
        audio = on_disk - on_disk % block_align
        f.seek(4)
        f.write(struct.pack("<I", data_pos + audio))  # the RIFF size counts from byte 8: 'WAVE', chunks, the audio
        f.seek(data_pos + 4)
        f.write(struct.pack("<I", audio))
        f.truncate(data_pos + 8 + audio)
        return True
