"""Gradio's cached files go once they are older than the age, whatever the event loop adds meanwhile."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

from server import cache_sweep


def cached(tmp_path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(b"x")
    return str(path)


def blocks_with(files: set, kept: set = frozenset()):
    component = SimpleNamespace(keep_in_cache=set(kept))
    return SimpleNamespace(blocks={1: component}, temp_file_sets=[files])


def test_old_files_go_kept_and_young_ones_stay_and_vanished_ones_are_forgotten(tmp_path):
    old, kept, vanished = (cached(tmp_path, n) for n in ("old.wav", "kept.png", "vanished.srt"))
    os.remove(vanished)
    files = {old, kept, vanished}
    blocks = blocks_with(files, kept={kept})
    assert cache_sweep.sweep(blocks, age=3600) == 0, "younger than an hour: nothing goes"
    assert files == {old, kept}, "a file already gone is forgotten"
    assert cache_sweep.sweep(blocks, age=-1) == 1, "every file is older than -1 s: all go but the kept one"
    assert files == {kept} and os.path.exists(kept) and not os.path.exists(old)


def test_a_set_that_grows_during_the_sweep_is_swept_without_error(tmp_path):
    """Gradio's own sweep iterates the live set and dies at the first "Set changed size during iteration"."""
    files: set = set()
    blocks = blocks_with(files)
    stop = threading.Event()

    def event_loop() -> None:  # adds cached files as requests come, as Gradio's event loop does
        n = 0
        while not stop.is_set():
            files.add(cached(tmp_path, f"upload-{n}.wav"))
            n += 1

    adder = threading.Thread(target=event_loop)
    adder.start()
    try:
        for _ in range(200):
            cache_sweep.sweep(blocks, age=-1)
    finally:
        stop.set()
        adder.join()
    cache_sweep.sweep(blocks, age=-1)
    assert files == set() and not list(tmp_path.glob("upload-*")), "everything added was swept in the end"


def test_the_sweeper_goes_on_after_a_failed_sweep(monkeypatch):
    swept = threading.Event()
    calls = []

    def flaky(blocks, age):
        calls.append(age)
        if len(calls) == 1:
            raise RuntimeError("Set changed size during iteration")
        swept.set()
        return 0

    monkeypatch.setattr(cache_sweep, "sweep", flaky)
    stop = cache_sweep.start(blocks_with(set()), every=0.01, age=60)
    try:
        assert swept.wait(30), "a sweep after the failed one"
    finally:
        stop.set()
    assert calls[:2] == [60, 60]
