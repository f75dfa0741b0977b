"""Gradio's queue waits for work instead of polling for it.

Gradio's queue loop looks for a job to start every millisecond, and its progress loop every ten, busy or
idle: an idle Melange used 4% of a core, and on a 2-core machine each of those 1,100 wake-ups a second
pre-empts an engine thread (nice 15, ``engines.priority``) in the middle of a llama.cpp layer, which its
partner thread then waits for at the layer's barrier. Here the loop sleeps until something can change
what it would find: a job joined the queue (``push``) or a job ended and freed its engine
(``process_events``). The progress loop sends progress four times a second while jobs run (Gradio's own
loop: a hundred), and sleeps while none do.

Gradio's loops stay Gradio's own: they call ``asyncio.sleep(self.sleep_when_free)``, so the queue's two
sleep lengths become marks, and the ``asyncio`` that Gradio's queue module sees turns a sleep of a mark
into a wait for the wake. A wait still ends after ``SAFETY`` seconds, so a change that comes some way not hooked here costs
latency, never a hang.
"""

from __future__ import annotations

import asyncio
import functools
import types
import weakref

SAFETY = 0.25  # the longest an idle loop sleeps without a wake
# While jobs run, progress is sent at most this often: four times a second still moves a progress bar smoothly,
# and each wake-up of Gradio's loop pre-empts an engine thread (Gradio's 0.01 s, measured over 80 first tokens on
# 2 cores: 1-3 ms more to a first token; 0.1 s against 0.25 s, the tiny pipeline at 512², 20 steps, through the
# event stream: 0.942x against 0.970x raw diffusers, the page's Generate 0.905x against 0.958x, bench/image.py).
PROGRESS_EVERY = 0.25


class QueueWake:
    """Installed on one Gradio queue before it starts. ``woken`` and ``timeouts`` count the waits' ends."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.events = {"jobs": asyncio.Event(), "progress": asyncio.Event()}  # one per loop: each clears its own
        self.woken = 0
        self.timeouts = 0
        # Marks: float objects of this queue's own (parsed anew, never a shared constant), so neither another
        # sleep of the same length nor another app's queue in this process is taken for them.
        self._progress_period = PROGRESS_EVERY
        jobs_mark, progress_mark = float(repr(queue.sleep_when_free)), float(repr(self._progress_period))
        self.marks = {jobs_mark: "jobs", progress_mark: "progress"}
        queue.sleep_when_free, queue.progress_update_sleep_when_free = jobs_mark, progress_mark
        queue.push = self._waking(queue.push)
        queue.process_events = self._waking(queue.process_events)

    def wake(self) -> None:
        for event in self.events.values():
            event.set()

    def _waking(self, method):
        @functools.wraps(method)
        async def wrapper(*args, **kwargs):
            try:
                return await method(*args, **kwargs)
            finally:
                self.wake()

        return wrapper

    def loop_of(self, delay) -> str | None:
        """Which of this queue's loops asks for this sleep, if any (by identity: the marks are its own)."""
        return next((loop for mark, loop in self.marks.items() if delay is mark), None)

    async def wait(self, loop: str) -> None:
        if loop == "progress" and any(job is not None for job in getattr(self.queue, "active_jobs", ())):
            await asyncio.sleep(self._progress_period)  # jobs running: progress is sent as often as before
            return
        event = self.events[loop]
        try:
            await asyncio.wait_for(event.wait(), SAFETY)
            self.woken += 1
        except asyncio.TimeoutError:
            self.timeouts += 1
        # Cleared before the loop looks again, so a wake that comes after this is never lost.
        event.clear()


_wakes: weakref.WeakSet[QueueWake] = weakref.WeakSet()


class _AsyncioForTheQueue(types.ModuleType):
    """``asyncio`` with the queues' ``sleep``: what ``gradio.queueing`` calls ``asyncio``."""

    def __init__(self) -> None:
        super().__init__("asyncio")

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, delay, result=None):
        for wake in list(_wakes):
            loop = wake.loop_of(delay)
            if loop is not None:
                await wake.wait(loop)
                return result
        return await asyncio.sleep(delay, result)


def install(blocks) -> QueueWake:
    """Before the app starts: the queue of ``blocks`` sleeps until woken."""
    import gradio.queueing

    wake = QueueWake(blocks._queue)
    _wakes.add(wake)
    if not isinstance(gradio.queueing.asyncio, _AsyncioForTheQueue):
        gradio.queueing.asyncio = _AsyncioForTheQueue()
    return wake
