"""Gradio's cached copies of uploads and results, deleted once they are older than an age.

Gradio's own sweep (``Blocks(delete_cache=...)``) is one task that its first exception ends for good, and it
reads each set of cached files in a worker thread while the event loop adds to it, which raises "Set changed
size during iteration" when the two meet. Once it has stopped, the cache only grows: in bench/load.py's soak
it went from 13 to 83 MB over 800 requests at a 5-minute age, where this sweep kept it at 15-19 MB. This
sweep reads a copy of each set (``list()`` of a set is one step under the GIL) and outlives any one failure. Gradio's own stays on for what it does at shutdown: it deletes
the whole cache then.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("melange.cache")


def sweep(blocks, age: float) -> int:
    """Delete the files Gradio cached for ``blocks`` that are older than ``age`` seconds (by ctime, as Gradio
    ages them) and forget them; files a component keeps stay. Returns how many were deleted."""
    keep: set = set()
    for component in list(blocks.blocks.values()):
        keep.update(getattr(component, "keep_in_cache", ()))
    now = time.time()
    deleted = 0
    for files in list(blocks.temp_file_sets):
        gone = set()
        for name in list(files):  # a copy: the event loop adds to the set meanwhile
            if name in keep:
                continue
            try:
                if now - os.lstat(name).st_ctime > age:
                    os.remove(name)
                    deleted += 1
                    gone.add(name)
            except FileNotFoundError:
                gone.add(name)
        files.difference_update(gone)
    return deleted


def start(blocks, every: float, age: float) -> threading.Event:
    """Sweep every ``every`` seconds on a daemon thread until the returned event is set."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            try:
                sweep(blocks, age)
            except Exception:  # noqa: BLE001 - logged; the next sweep tries again
                log.exception("Sweeping Gradio's cache failed; trying again in %s s", every)

    threading.Thread(target=run, name="melange-cache-sweep", daemon=True).start()
    return stop
