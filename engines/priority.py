"""Batch work yields the CPU to live work: engines' jobs run on threads with a lower priority.

On a laptop's few cores, a chat reply, an image and a file transcription at once leave live captions a
fifth of the CPU, and their latency grows five-fold. Linux gives every thread its own nice value, and
threads inherit it from the thread that starts them: an engine's compute threads (ggml's and torch's
OpenMP teams, CTranslate2's workers) follow the thread that runs the job, or for CTranslate2 the one that
loads the model. So jobs run on fresh threads lowered to ``BACKGROUND_NICE``, and the live decoder's
threads stay at the process's own priority: the scheduler then gives live work ~90% of the CPU whenever
it wants it, and batch work everything else. The page's server threads stay at normal priority too, so
the UI answers while engines are busy.

Jobs run on lowered threads kept for jobs only (``start_background``): a thread cannot raise its priority
again without privileges, so no thread that serves anything else is ever lowered. Kept between jobs rather
than started per job, a thread is ready within microseconds and keeps the compute teams it started (an
OpenMP team belongs to the thread that opened it), where a fresh nice-15 thread first waits for the
scheduler to place it: measured through ``/v1`` (bench/api.py), about 1.5 ms of every first token.
Elsewhere than Linux this changes nothing.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# CFS weights: nice 0 is 1024, nice 10 is 110, nice 15 is 36. Live decoding (two threads) against six busy
# batch threads at 15 keeps ~90% of two cores.
BACKGROUND_NICE = 15


def lower_this_thread(nice: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's priority (Linux; elsewhere nothing). True when it was lowered."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
        return True
    except (AttributeError, OSError):
        return False


# libgomp spins this many times (~30 µs; its own estimate is 100,000 spins a millisecond) before it sleeps at a
# barrier. Measured on the 2-core VM, 2026-12-06, with llama.cpp's prompt (two batch threads) and the tiny diffusion
# pipeline (torch's two threads) on a nice-15 job thread, 6-12 runs each:
#   spin count         quiet: first token / image    beside stress-ng --cpu 2 (another session)
#   0 (PASSIVE)        131 ms / 0.383 s               200-343 ms / 0.45-0.89 s
#   1,000              112 ms / 0.354 s               251-309 ms / 0.55-0.78 s
#   3,000              106 ms / 0.292 s               271-359 ms / 0.81-0.87 s
#   10,000             103 ms / 0.256 s               289 ms / 1.25 s
#   300,000 (default)  102-125 ms / 0.30 s            310-616 ms / 0.47-7.5 s (a run up to 6 s an image)
# A short spin catches the next operator's work on a quiet machine; a long one holds the core its partner needs
# on a busy one. 3,000 makes a quiet machine's image 1.3x faster than no spin and the first token as quick as the
# default's; beside another session's load it costs up to 1.8x what no spin does, where the default cost 20x.
OPENMP_SPIN_COUNT = "3000"
# When libgomp runs more threads than there are cores, it spins a "throttled" count instead: 100 when no policy is
# set, 1,000 when it is ACTIVE, 0 when PASSIVE. That is the app's usual case: every thread that has called torch or
# llama.cpp keeps an OpenMP team (a chat reply's job thread beside an image's). With the spin count given, ACTIVE
# chooses only that: 1,000. The tiny pipeline with two teams, quiet: 0.39 s an image at 100, 0.29-0.32 s at 1,000;
# beside stress-ng: 0.45 s without spinning, 0.54 s at 1,000.
OPENMP_WAIT_POLICY = "ACTIVE"


def load_torch_with_sleeping_waits() -> None:
    """Import torch with OpenMP threads that spin only briefly, then sleep, while they wait for each other.

    libgomp's default is to spin at every barrier for about 3 ms; when the machine is busy, a spinning thread holds
    the core its partner needs to reach the barrier. The tiny demo pipeline (256², 12 steps, torch's two threads)
    took 15-86 s an image that way beside other work (load average 5-7 on the 2-core VM, 2026-12-06) and
    0.6-1.4 s without spinning, in the same minutes. Not spinning at all (``OMP_WAIT_POLICY=PASSIVE``) costs a
    quiet machine a quarter of its speed instead, so threads spin ``OPENMP_SPIN_COUNT`` times first (1,000 when
    libgomp runs more threads than there are cores: ``OPENMP_WAIT_POLICY``).

    libgomp reads the policy once, when it loads. torch bundles a libgomp named ``libgomp.so.1``, and llama.cpp's
    ggml, which needs ``libgomp.so.1`` too, is bound to that same copy when it loads after torch: the policy is
    torch's and llama.cpp's (its prompt runs on two threads). CTranslate2 bundles a copy under another name and
    keeps the default; its Whisper measured no better either way. A policy already set in the environment is kept."""
    if "torch" in sys.modules:
        log.info("torch was loaded before its OpenMP wait policy could be set")
        return
    given = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    if not given:
        os.environ["GOMP_SPINCOUNT"], os.environ["OMP_WAIT_POLICY"] = OPENMP_SPIN_COUNT, OPENMP_WAIT_POLICY
    try:
        import torch  # noqa: F401 -- loads torch's libgomp, which reads the policy now
    finally:
        if not given:
            del os.environ["GOMP_SPINCOUNT"], os.environ["OMP_WAIT_POLICY"]


def thread_nice(native_id: int | None = None) -> int:
    """A thread's nice value (the calling thread's by default); 0 where threads have none of their own."""
    if not sys.platform.startswith("linux"):
        return 0
    return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())


IDLE_SECONDS = 120.0  # a job thread left idle this long ends: a burst of jobs leaves no crowd of threads behind


class JobThreads:
    """Lowered daemon threads that run jobs one after another: an idle one takes the next job, a new one is
    started only when all are busy (jobs wait for engine locks, so one must never wait for a thread)."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._idle: list[queue.SimpleQueue] = []  # the inboxes of threads waiting for a job
        self._lock = threading.Lock()
        self.started = 0  # threads started so far (tests read it)

    def submit(self, target: Callable[[], object], name: str) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self.started += 1
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=f"melange-job-{self.started}", daemon=True).start()
        inbox.put((target, name))

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        lower_this_thread()
        me = threading.current_thread()
        while True:
            try:
                target, name = inbox.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody took this thread meanwhile: it may go
                        self._idle.remove(inbox)
                        return
                continue  # a job is on its way to this inbox
            me.name = name
            try:
                target()
            except BaseException:  # noqa: BLE001 - a job's own errors are its caller's; this one escaped it
                log.exception("a background job failed")
            me.name = "melange-job-idle"
            with self._lock:
                self._idle.append(inbox)


_job_threads = JobThreads()


def start_background(target: Callable[[], object], name: str) -> None:
    """``target()`` on a lowered job thread, now (an idle one if there is one)."""
    _job_threads.submit(target, name)


def run_as_job(work: Callable[[], T], name: str = "melange-job") -> T:
    """``work()`` on a kept job thread, as ``start_background`` runs it; its result, or its exception raised here.

    For torch work a handler would otherwise do on its own thread (loading a model, fusing a LoRA): every thread
    that runs an OpenMP parallel region keeps a team, and with more team threads than cores libgomp shortens its
    spin (``OPENMP_WAIT_POLICY``); job threads are few and reused, the page's handler threads many."""
    return _wait_for(work, lambda job: start_background(job, name))


def run_on_fresh_thread(work: Callable[[], T], background: bool, name: str = "melange-load") -> T:
    """``work()`` on a thread of its own, lowered when ``background``; its result, or its exception raised
    here. For loading a model whose worker threads inherit the loader's priority (CTranslate2)."""

    def start(job: Callable[[], None]) -> None:
        def run() -> None:
            if background:
                lower_this_thread()
            job()

        threading.Thread(target=run, name=name, daemon=True).start()

    return _wait_for(work, start)


def _wait_for(work: Callable[[], T], start: Callable[[Callable[[], None]], object]) -> T:
    """``work()`` on the thread ``start`` runs it on, waited for here: its result, or its exception raised here."""
    box: dict = {}
    done = threading.Event()

    def job() -> None:
        try:
            box["value"] = work()
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = e
        finally:
            done.set()

    start(job)
    done.wait()
    if "error" in box:
        raise box["error"]
    return box["value"]


ITEM, END, ERROR = 0, 1, 2  # what ``produce`` posts: (ITEM, item) for each item, then (END, None) or (ERROR, e)


def produce(make: Callable[[], Iterator[T]], post: Callable[[tuple[int, object]], object], stop: threading.Event) -> None:
    """Run the generator ``make()`` returns, posting each item, then the end or the error. Once ``stop`` is
    set it stops at the next item and closes the generator here, in the thread that ran it, so the engine
    has let go when this returns."""
    try:
        iterator = make()
        try:
            for item in iterator:
                post((ITEM, item))
                if stop.is_set():
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        post((END, None))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it in its own thread
        post((ERROR, e))


def in_background(make: Callable[[], Iterator[T]], name: str = "melange-job") -> Iterator[T]:
    """The items of the generator ``make()`` returns, produced on a lowered thread of its own.

    Closing this iterator (Stop, a client gone) stops the producer at its next item and waits until it has
    let go of the engine, so the engine is free for the next job within one token or step. The producer's
    exception is raised here.
    """
    items: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    finished = threading.Event()

    def job() -> None:
        try:
            produce(make, items.put, stop)
        finally:
            finished.set()

    start_background(job, name)
    try:
        while True:
            kind, value = items.get()
            if kind == ITEM:
                yield value
            elif kind == ERROR:
                raise value
            else:
                return
    finally:
        stop.set()
        finished.wait()
