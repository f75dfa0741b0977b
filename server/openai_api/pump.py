"""An engine's blocking work on a thread of its own, its results handed to the event loop as they come.

Engines are plain blocking generators. One thread per job runs the generator to its end and posts each item
to the loop (``call_soon_threadsafe``): the engine never waits for the network, and a token costs the loop
one wake-up instead of a thread-pool round trip (measured in bench/api.py). ``stop()`` closes the generator in
its own thread at the next item, which is how an engine is told to stop (Stop on the page does the same).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

from engines.priority import ERROR, ITEM, produce, start_background


class Pump:
    def __init__(self, make: Callable[[], Iterator], name: str = "melange-v1") -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        self.finished = asyncio.Event()  # set once the engine has let go (its generator closed)
        self._over = False
        # A job: lowered, so live captions and the page's threads come first (engines.priority).
        start_background(lambda: self._run(make), name)

    def _post(self, message: tuple[int, object]) -> None:
        self._loop.call_soon_threadsafe(self._items.put_nowait, message)

    def _run(self, make: Callable[[], Iterator]) -> None:
        try:
            produce(make, self._post, self._stop)
        finally:
            self._loop.call_soon_threadsafe(self.finished.set)

    def stop(self) -> None:
        """Ask the engine to stop at its next item; ``finished`` is set once it has."""
        self._stop.set()

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._over:
            raise StopAsyncIteration
        kind, value = await self._items.get()
        if kind == ITEM:
            return value
        self._over = True
        if kind == ERROR:
            raise value
        raise StopAsyncIteration


def run_blocking(work: Callable[[], object]) -> Pump:
    """One blocking call on a thread of its own, as a pump that yields its result once."""

    def once() -> Iterator:
        yield work()

    return Pump(once)
