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

from engines.priority import lower_this_thread

_ITEM, _END, _ERROR = 0, 1, 2


class Pump:
    def __init__(self, make: Callable[[], Iterator], name: str = "melange-v1") -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        self.finished = asyncio.Event()  # set once the engine has let go (its generator closed)
        self._make = make
        self._over = False
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _post(self, kind: int, value=None) -> None:
        self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))

    def _run(self) -> None:
        lower_this_thread()  # a job: live captions and the page's threads come first (engines.priority)
        try:
            iterator = self._make()
            try:
                for item in iterator:
                    self._post(_ITEM, item)
                    if self._stop.is_set():
                        break
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
            self._post(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the loop, which raises it there
            self._post(_ERROR, e)
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
        if kind == _ITEM:
            return value
        self._over = True
        if kind == _ERROR:
            raise value
        raise StopAsyncIteration


def run_blocking(work: Callable[[], object]) -> Pump:
    """One blocking call on a thread of its own, as a pump that yields its result once."""

    def once() -> Iterator:
        yield work()

    return Pump(once)
