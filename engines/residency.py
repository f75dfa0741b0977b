"""One memory manager for all engines: who is resident, how much each takes, who goes when space runs out.

Sizes are measured, not guessed: the device's free memory (CUDA) or the process's resident memory (CPU)
before and after each load. Loading a model that does not fit unloads others, lowest priority first and
least recently used among equals. Engines stay unaware: ``ManagedEngine`` wraps one so that loading,
and every call that needs the model, goes through the manager.
"""

from __future__ import annotations

import gc
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from engines.base import Engine, EngineError, ProgressCallback

T = TypeVar("T")

# Higher stays longer. Live captions must not stall behind a model load; chat reloads fastest.
DEFAULT_PRIORITY = {"speech": 30, "image": 20, "chat": 10}


def process_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def system_memory_total() -> int:
    import psutil

    return psutil.virtual_memory().total


def cuda_used() -> int:
    import torch

    free, total = torch.cuda.mem_get_info()
    return total - free


def cuda_total() -> int:
    import torch

    return torch.cuda.mem_get_info()[1]


@dataclass
class Resident:
    engine: Engine
    priority: int
    size: int = 0  # bytes measured at the last load
    loaded: bool = False
    last_used: float = 0.0


@dataclass(frozen=True)
class ResidentInfo:
    kind: str
    model: str
    size: int
    last_used: float


@dataclass(frozen=True)
class MemoryStatus:
    device: str
    budget: int
    total: int
    used: int  # by the resident models
    residents: tuple[ResidentInfo, ...]


def parse_size(text: str) -> int:
    """'8GB', '512MiB', '1.5 GiB' or plain bytes, in bytes."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    cleaned = text.strip().upper().replace(" ", "")
    number = cleaned.rstrip("KMGIB")
    unit = cleaned[len(number) :]
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"Not a memory size: {text!r} (try 8GB or 512MiB).") from None
    if unit not in units or value <= 0:
        raise ValueError(f"Not a memory size: {text!r} (try 8GB or 512MiB).")
    return int(value * units[unit])


def path_size(path: object) -> int:
    """The bytes of a model file or folder on disk; 0 for anything else (a hub id, None)."""
    if path is None or not Path(str(path)).exists():
        return 0
    p = Path(str(path))
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def size_hint(engine: Engine) -> int:
    """Before the first load: the model's files on disk, a fair lower bound of what loading takes."""
    for name in ("model_path", "model"):
        size = path_size(getattr(engine, name, None))
        if size:
            return size
    return 0


def load_count(engine: Engine) -> int | None:
    """How many models the engine has opened, where it counts them: a changed count means a call loaded one."""
    return getattr(engine, "loads", None)


def is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, or torch's OutOfMemoryError (named, so the manager never imports torch)."""
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"


class ResidencyManager:
    def __init__(
        self,
        device: str,
        budget: int,
        *,
        measure: Callable[[], int],
        total: int | None = None,
        priority: dict[str, int] | None = None,
        idle_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.budget = budget
        self.total = total or budget
        self.priority = {**DEFAULT_PRIORITY, **(priority or {})}
        self.idle_seconds = idle_seconds
        self._measure = measure
        self._clock = clock
        self._residents: dict[int, Resident] = {}
        self._lock = threading.RLock()  # the books only: never held while a model loads or unloads
        self._loading = threading.Lock()  # one load at a time per device, so each is measured alone

    @classmethod
    def for_device(cls, device: str, budget: int | None = None, **kwargs) -> ResidencyManager:
        """All of the device but a margin, unless a budget is given."""
        if device == "cuda":
            total, measure = cuda_total(), cuda_used
        else:
            total, measure = system_memory_total(), process_rss
        margin = max(total // 10, 1 << 30)
        return cls(device, budget or max(total - margin, 1), measure=measure, total=total, **kwargs)

    def register(self, engine: Engine) -> ManagedEngine:
        with self._lock:
            self._residents[id(engine)] = Resident(engine, self.priority.get(engine.kind, 0))
        return ManagedEngine(engine, self)

    def _resident(self, engine: Engine) -> Resident:
        try:
            return self._residents[id(engine)]
        except KeyError:
            raise EngineError(f"{engine.kind} engine is not registered with the memory manager") from None

    def used(self) -> int:
        return sum(r.size for r in self._residents.values() if r.loaded)

    def _refresh(self) -> None:
        for r in self._residents.values():  # an engine may have unloaded itself (a model switch)
            r.loaded = r.loaded and r.engine.status().loaded

    def acquire(self, engine: Engine, progress: ProgressCallback | None = None) -> list[str]:
        """Make the engine's model resident, unloading others if needed. Returns what was unloaded."""
        resident = self._resident(engine)
        with self._lock:
            self._refresh()
            resident.last_used = self._clock()
            if resident.loaded:
                return []
        with self._loading:
            with self._lock:
                self._refresh()
                if resident.loaded:  # another request loaded it while this one waited
                    return []
            evicted = self._make_room(resident, resident.size or size_hint(engine))
            try:
                self.measured(engine, lambda: engine.load(progress), replaces=False)
            except BaseException as e:
                if is_out_of_memory(e):
                    raise self.out_of_memory(engine, loading=True) from e
                raise
            return evicted

    def switch(self, engine: Engine, call: Callable[[], T], model: object = None) -> T:
        """Run an engine's model switch: the old model goes first, room is made for the new one, and what the
        new one takes is measured. If the switch fails, the engine's model is simply not resident."""
        resident = self._resident(engine)
        with self._loading:
            self._unload(resident)
            self._make_room(resident, path_size(model))
            try:
                return self.measured(engine, call, replaces=False)
            except BaseException as e:
                if is_out_of_memory(e):
                    raise self.out_of_memory(engine, loading=True) from e
                raise

    def out_of_memory(self, engine: Engine, loading: bool) -> EngineError:
        """After an out-of-memory error: free all the engine held (its model loads again on the next request, a
        part-loaded one is dropped) and say so plainly."""
        model = engine.status().model
        self._unload(self._resident(engine))
        gc.collect()
        doing = f"loading {model}" if loading else f"{model} was working"
        return EngineError(
            f"Out of memory while {doing}: it was unloaded to free the memory and loads again with your next "
            "request. Unload another model, or try a smaller model or request."
        )

    def measured(self, engine: Engine, call: Callable[[], T], replaces: bool = True) -> T:
        """Run a call that may load a model (a load, a switch, an image model named by a request), and book what
        it changed: the device's memory before and after, while the manager's lock stays free, so the status
        and /health answer during a load. ``replaces``: the engine's models before the call still count."""
        resident = self._resident(engine)
        loads_before = load_count(engine)
        before = self._measure()
        try:
            return call()
        finally:
            delta = self._measure() - before
            with self._lock:
                was_loaded = resident.loaded
                resident.loaded = resident.engine.status().loaded
                if resident.loaded and (not was_loaded or load_count(engine) != loads_before):
                    base = resident.size if was_loaded and replaces else 0
                    resident.size = max(base + delta, 0) or size_hint(engine)
                resident.last_used = self._clock()

    def _make_room(self, incoming: Resident, need: int) -> list[str]:
        """Unload the models that must go for ``need`` more bytes; the unloads happen outside the lock (a busy
        engine finishes its job first), so the status answers meanwhile."""
        with self._lock:
            self._refresh()
            candidates = sorted(
                (r for r in self._residents.values() if r.loaded and r is not incoming),
                key=lambda r: (r.priority, r.last_used),
            )
            victims, used = [], self.used()
            for victim in candidates:
                if used + need <= self.budget:
                    break
                victims.append(victim)
                used -= victim.size
        evicted = []
        for victim in victims:
            evicted.append(victim.engine.status().model)
            self._unload(victim)
        return evicted

    def _unload(self, resident: Resident) -> None:
        resident.engine.unload()
        with self._lock:
            resident.loaded = False
        trim_heap(force=True)

    def release(self, engine: Engine) -> None:
        self._unload(self._resident(engine))

    def unregister(self, engine: Engine) -> None:
        """An engine that is done with for good (a live copy of a model no longer chosen): unloaded, and off
        the books."""
        self._unload(self._resident(engine))
        with self._lock:
            self._residents.pop(id(engine), None)

    def unload_idle(self) -> list[str]:
        """Unload every model unused for longer than the idle time. Returns what was unloaded."""
        if not self.idle_seconds:
            return []
        with self._lock:
            self._refresh()
            now = self._clock()
            idle = [r for r in self._residents.values() if r.loaded and now - r.last_used > self.idle_seconds]
        for resident in idle:
            self._unload(resident)
        return [r.engine.status().model for r in idle]

    def start_idle_reaper(self, every: float = 30.0) -> threading.Event:
        """A daemon thread that unloads idle models; set the returned event to stop it."""
        stop = threading.Event()

        def reap() -> None:
            while not stop.wait(every):
                self.unload_idle()

        threading.Thread(target=reap, name="melange-idle-unload", daemon=True).start()
        return stop

    def status(self) -> MemoryStatus:
        with self._lock:
            self._refresh()
            residents = tuple(
                ResidentInfo(r.engine.kind, r.engine.status().model, r.size, r.last_used)
                for r in sorted(self._residents.values(), key=lambda r: -r.priority)
                if r.loaded
            )
            return MemoryStatus(self.device, self.budget, self.total, self.used(), residents)


TRIM_EVERY_SECONDS = 10.0
_trim = {"at": 0.0, "lock": threading.Lock(), "libc": None}


def trim_heap(force: bool = False) -> bool:
    """Hand the memory a finished job freed back to the system, at most every ``TRIM_EVERY_SECONDS`` unless
    ``force`` (after a model unloads: its hundreds of megabytes should be free for other programs at once).

    glibc keeps freed blocks in its per-thread arenas, and jobs run on threads of their own
    (engines.priority), so without this the process's resident size only grows: that size is what the memory
    manager measures on a CPU and what a long-running app shows. Linux (glibc) only; True when it trimmed."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    with _trim["lock"]:
        now = time.monotonic()
        if not force and now - _trim["at"] < TRIM_EVERY_SECONDS:
            return False
        _trim["at"] = now
        if _trim["libc"] is None:
            try:
                _trim["libc"] = ctypes.CDLL("libc.so.6")
                _trim["libc"].malloc_trim  # noqa: B018 - musl has none
            except (OSError, AttributeError):
                _trim["libc"] = False
    if not _trim["libc"]:
        return False
    _trim["libc"].malloc_trim(0)
    return True


class ManagedEngine:
    """An engine whose loads go through the manager; everything else is the engine's own."""

    # The calls that need the model resident, per kind; any of them may also load another model (an image
    # request naming one), which the manager books.
    WORK = {"stream", "complete", "generate", "generate_batch", "prepare", "transcribe", "transcribe_samples"}

    def __init__(self, engine: Engine, manager: ResidencyManager) -> None:
        self._engine = engine
        self._manager = manager

    @property
    def engine(self) -> Engine:
        return self._engine

    def load(self, progress: ProgressCallback | None = None) -> list[str]:
        return self._manager.acquire(self._engine, progress)

    def unload(self) -> None:
        self._manager.release(self._engine)

    def unregister(self) -> None:
        self._manager.unregister(self._engine)

    def switch(self, model, *args, **kwargs):
        return self._manager.switch(self._engine, lambda: self._engine.switch(model, *args, **kwargs), model)

    def __getattr__(self, name: str):
        attr = getattr(self._engine, name)
        if name == "live_copy":  # a second engine (live captions' own model): booked by the same manager
            return lambda: self._manager.register(attr())
        if name not in self.WORK:
            return attr

        def work(*args, **kwargs):
            self._manager.acquire(self._engine)
            result = None
            try:
                result = self._guarded(self._manager.measured(self._engine, lambda: attr(*args, **kwargs)))
                return result
            except BaseException as e:
                if is_out_of_memory(e):
                    raise self._out_of_memory() from e
                raise
            finally:
                if not inspect.isgenerator(result):  # a stream trims when it ends
                    trim_heap()

        return work

    def _guarded(self, result):
        """Streams (a chat reply, a transcript's segments) run after the call returns: watch them too."""
        if inspect.isgenerator(result):
            return self._guard(result)
        if isinstance(result, tuple):
            return tuple(self._guarded(item) for item in result)
        return result

    def _guard(self, stream: Iterator) -> Iterator:
        try:
            yield from stream  # closing this closes the engine's stream: Stop still stops it at once
        except BaseException as e:
            if is_out_of_memory(e):
                raise self._out_of_memory() from e
            raise
        finally:
            trim_heap()

    def _out_of_memory(self) -> EngineError:
        return self._manager.out_of_memory(self._engine, loading=False)
