"""Batch jobs run at a lower priority than live captions and the page (engines.priority)."""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
import time

import numpy as np
import pytest

from engines import embedded
from engines.base import TranscribeOptions
from engines.fake import FakeSpeechEngine
from engines.priority import BACKGROUND_NICE, JobThreads, in_background, run_on_fresh_thread, thread_nice
from engines.residency import ResidencyManager
from ui.transcribe import FileOptions, TranscribePanel

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own nice value on Linux")


@linux_only
def test_a_job_runs_lowered_and_the_callers_thread_keeps_its_priority():
    seen = []

    def job():
        for i in range(3):
            seen.append(thread_nice())
            yield i

    assert list(in_background(job)) == [0, 1, 2]
    assert seen == [BACKGROUND_NICE] * 3
    assert thread_nice() == 0
    assert run_on_fresh_thread(thread_nice, background=True) == BACKGROUND_NICE
    assert run_on_fresh_thread(thread_nice, background=False) == 0


def test_closing_a_job_stops_it_at_its_next_item_and_waits_until_it_let_go():
    produced, released = [], threading.Event()

    def job():
        try:
            for i in range(1000):
                time.sleep(0.005)  # a token's work
                produced.append(i)
                yield i
        finally:
            released.set()  # the engine's lock is given back here

    items = in_background(job)
    assert next(items) == 0
    made = len(produced)
    items.close()  # Stop, or the client went away
    assert released.is_set(), "the engine is free when close returns"
    assert len(produced) <= made + 1 < 1000, "the job stopped at its next item"


@linux_only
def test_jobs_reuse_an_idle_lowered_thread_and_never_wait_for_a_busy_one():
    threads = JobThreads()
    done = [threading.Event() for _ in range(3)]
    seen: list[tuple[int, int]] = []

    def job(i: int, hold: threading.Event | None = None):
        def run() -> None:
            seen.append((threading.get_native_id(), thread_nice()))
            if hold is not None:
                hold.wait()
            done[i].set()

        return run

    threads.submit(job(0), "first")
    assert done[0].wait(10)
    # The first thread goes back to the idle list just after its job: wait for that, not for a clock.
    while not threads._idle:
        time.sleep(0.001)
    threads.submit(job(1), "second")
    assert done[1].wait(10)
    assert seen[0] == seen[1] == (seen[0][0], BACKGROUND_NICE), "the idle thread ran the next job, lowered"
    assert threads.started == 1

    hold = threading.Event()
    while not threads._idle:
        time.sleep(0.001)
    threads.submit(job(2, hold), "held")  # takes the idle thread and keeps it
    finished = threading.Event()
    threads.submit(finished.set, "beside it")
    assert finished.wait(10), "a job never waits behind a busy thread"
    assert threads.started == 2
    hold.set()
    assert done[2].wait(10)


def test_an_idle_job_thread_ends_and_a_later_job_gets_a_new_one():
    threads = JobThreads(idle_seconds=0.05)
    first = threading.Event()
    threads.submit(first.set, "first")
    assert first.wait(10)
    while not threads._idle:  # back on the idle list after its job…
        time.sleep(0.001)
    while threads._idle:  # …and off it as it ends
        time.sleep(0.01)
    later = threading.Event()
    threads.submit(later.set, "later")
    assert later.wait(10)
    assert threads.started == 2


def test_a_jobs_error_is_raised_in_the_callers_thread():
    def job():
        yield 1
        raise ValueError("the engine failed")

    items = in_background(job)
    assert next(items) == 1
    with pytest.raises(ValueError, match="the engine failed"):
        next(items)
    with pytest.raises(ZeroDivisionError):
        run_on_fresh_thread(lambda: 1 / 0, background=True)


def busy_threads(work) -> dict[int, int]:
    """Each of this process's threads that used CPU during ``work()``: its nice value."""

    def stat() -> dict[int, tuple[int, int]]:
        out = {}
        for path in glob.glob("/proc/self/task/*/stat"):
            try:
                fields = open(path).read().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended meanwhile
                continue
            out[int(path.split("/")[4])] = (int(fields[16]), int(fields[11]) + int(fields[12]))
        return out

    before = stat()
    work()
    after = stat()
    return {tid: nice for tid, (nice, cpu) in after.items() if cpu - before.get(tid, (0, 0))[1] >= 5}


@linux_only
@pytest.mark.skipif(embedded.whisper_tiny_en() is None, reason="the embedded Whisper tiny.en is not installed")
def test_whisper_file_jobs_compute_at_batch_priority_and_the_live_copy_at_normal():
    from engines.speech.whisper import WhisperSpeechEngine

    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), "cpu")
    live = engine.live_copy()
    noise = (np.random.default_rng(0).standard_normal(16000 * 20) * 0.1).astype(np.float32)
    engine.load(), live.load()
    file_job = busy_threads(lambda: engine.transcribe_samples(noise, TranscribeOptions(vad_filter=False)))
    live_decode = busy_threads(lambda: [live.transcribe_window(noise[: 16000 * 5], TranscribeOptions()) for _ in range(3)])
    assert BACKGROUND_NICE in file_job.values(), file_job  # CTranslate2's workers, loaded from a lowered thread
    assert set(live_decode.values()) == {0}, live_decode
    assert thread_nice() == 0


class CopyableSpeech(FakeSpeechEngine):
    """A fake with a live copy, as WhisperSpeechEngine has."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[FakeSpeechEngine] = []

    def live_copy(self) -> FakeSpeechEngine:
        self.copies.append(FakeSpeechEngine())
        return self.copies[-1]


def test_live_captions_decode_with_their_own_copy_booked_by_the_memory_manager_and_freed_after(tmp_path):
    manager = ResidencyManager("cpu", 1 << 40, measure=lambda: 0)
    engine = CopyableSpeech()
    panel = TranscribePanel(manager.register(engine), recordings_dir=tmp_path)
    panel.live_begin("a-recording")
    panel.live_start("a-recording", FileOptions(), owner="a-page")
    assert len(engine.copies) == 1
    copy = engine.copies[0]
    assert copy.status().loaded, "loaded with Record's progress, not during the first words"
    assert [r.model for r in manager.status().residents].count(copy.status().model) == 2, "both booked"
    panel.live_chunk("a-recording", (16000, np.full(16000, 3000, np.int16)), seq=0)
    assert panel._live["a-recording"].engine.engine is copy
    list(panel.live_stop("a-recording", FileOptions()))
    assert not copy.status().loaded, "no recording runs: its memory goes back"
    assert engine.status().loaded, "the panel's own model stays"


def test_a_model_switch_replaces_the_live_copy_and_its_booking(tmp_path):
    manager = ResidencyManager("cpu", 1 << 40, measure=lambda: 0)
    engine = CopyableSpeech()
    panel = TranscribePanel(manager.register(engine), recordings_dir=tmp_path)
    for i, model in enumerate(["first-model", "second-model", "third-model"]):
        engine.switch(model)
        recording = f"recording-{i}"
        panel.live_begin(recording)
        panel.live_start(recording, FileOptions(), owner="a-page")
        panel.live_chunk(recording, (16000, np.full(16000, 3000, np.int16)), seq=0)
        list(panel.live_stop(recording, FileOptions()))
    assert len(engine.copies) == 3, "a new copy for each model"
    booked = [r.engine for r in manager._residents.values()]
    assert booked == [engine, engine.copies[-1]], "the panel's engine and the current copy only, not one per switch"


def test_torch_and_llama_cpp_threads_spin_briefly_before_they_sleep_and_whisper_keeps_its_policy():
    """torch's libgomp is loaded with a short spin count (a long spin holds the core a partner thread needs on a
    busy machine; none at all slows a quiet one), llama.cpp's ggml is bound to that same libgomp (so its prompt's
    threads wait the same way), CTranslate2's own libgomp keeps the default, and the environment is left as it
    was. libgomp prints what it read when OMP_DISPLAY_ENV is set."""
    import subprocess

    from engines.priority import OPENMP_SPIN_COUNT
    from tests.app_server import ROOT

    code = (
        "import os\n"
        "from engines.priority import load_torch_with_sleeping_waits\n"
        "load_torch_with_sleeping_waits()\n"
        "assert 'GOMP_SPINCOUNT' not in os.environ and 'OMP_WAIT_POLICY' not in os.environ\n"
        "import ctranslate2, llama_cpp\n"
        "print(sorted({'/'.join(line.split()[-1].split('/')[-3:-1]) for line in open('/proc/self/maps') if 'libgomp' in line}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_DISPLAY_ENV": "VERBOSE"}, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    assert spins == [OPENMP_SPIN_COUNT, "300000"], f"torch's team spins briefly, CTranslate2's spins a while first: {spins}"
    policies = re.findall(r"OMP_WAIT_POLICY = '(\w+)'", done.stderr)
    assert policies[0] == "ACTIVE", f"with more threads than cores torch's spin is ACTIVE's 1,000, not 100: {policies}"
    assert done.stdout.strip() == "['site-packages/ctranslate2.libs', 'torch/lib']", f"two libgomp copies: torch's (llama.cpp's too) and CTranslate2's: {done.stdout}"
