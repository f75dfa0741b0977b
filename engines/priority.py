"""Batch work yields the CPU to live work: engines' jobs run on threads with a lower priority.

On a laptop's few cores, a chat reply, an image and a file transcription at once leave live captions a
fifth of the CPU, and their latency grows five-fold. Linux gives every thread its own nice value, and
threads inherit it from the thread that starts them: an engine's compute threads (ggml's and torch's
OpenMP teams, CTranslate2's workers) follow the thread that runs the job, or for CTranslate2 the one that
loads the model. So jobs run on fresh threads lowered to ``BACKGROUND_NICE``, and the live decoder's
threads stay at the process's own priority: the scheduler then gives live work ~90% of the CPU whenever
it wants it, and batch work everything else. The page's server threads stay at normal priority too, so
the UI answers while engines are busy.

Only fresh threads are lowered, never a pool thread (a thread cannot raise its priority again without
privileges, and a lowered pool thread would later start threads that must not be). Elsewhere than Linux
this changes nothing.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

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


def thread_nice(native_id: int | None = None) -> int:
    """A thread's nice value (the calling thread's by default); 0 where threads have none of their own."""
    if not sys.platform.startswith("linux"):
        return 0
    return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())


def start_background(target: Callable[[], object], name: str) -> threading.Thread:
    """A daemon thread that lowers itself before it runs ``target``."""

    def run() -> None:
        lower_this_thread()
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def run_on_fresh_thread(work: Callable[[], T], background: bool, name: str = "melange-load") -> T:
    """``work()`` on a thread of its own, lowered when ``background``; its result, or its exception raised
    here. For loading a model whose worker threads inherit the loader's priority (CTranslate2)."""
    box: dict = {}

    def run() -> None:
        if background:
            lower_this_thread()
        try:
            box["value"] = work()
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
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
    thread = start_background(lambda: produce(make, items.put, stop), name)
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
        thread.join()
