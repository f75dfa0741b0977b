"""Gradio's queue keeps no analytics for a monitoring dashboard Melange does not serve.

After every event, Gradio's queue builds a pandas DataFrame of up to 10,000 past events and groups it by
function, in a worker thread that the event's ending waits for, to refresh the summary its monitoring
dashboard shows. Melange refuses ``/monitoring`` (``server/gradio_rules.py``), so nothing ever reads it,
yet it cost each event 1.7 ms of CPU with a few hundred events behind it and 6.8 ms with 10,000 (a day of
use), time taken from the engines on a 2-core machine and, since the queue starts its next job only once
the ending is done, added to that job's wait: the largest piece of an image request's fixed cost outside
the engine (py-spy, ``bench/image.py``'s add-ons at 64²).

Here the queue keeps one event's record at most (Gradio looks records up by event and skips absent ones)
and the summary is answered from what Gradio already holds, without a thread or pandas. Gradio's queue
module calls ``run_sync`` for its analytics only; anything else passed to it still runs in a thread.
"""

from __future__ import annotations

import weakref

from anyio.to_thread import run_sync as anyio_run_sync

_queues: weakref.WeakSet = weakref.WeakSet()  # queues whose analytics are off


async def _run_sync(func, *args, **kwargs):
    owner = getattr(func, "__self__", None)
    if getattr(func, "__name__", "") == "compute_analytics_summary" and owner in _queues:
        return owner.cached_event_analytics_summary
    return await anyio_run_sync(func, *args, **kwargs)


def install(blocks) -> None:
    """Before the app starts: the queue of ``blocks`` keeps no analytics."""
    import gradio.queueing

    queue = blocks._queue
    queue.ANALYTICS_MAX_EVENTS = 1
    queue.event_analytics.clear()
    _queues.add(queue)
    gradio.queueing.run_sync = _run_sync
