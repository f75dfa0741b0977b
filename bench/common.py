"""Shared by the benchmarks: start the real app on a free port, summarise timings."""

from __future__ import annotations

import platform
import statistics
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tests.app_server import AppServer


@contextmanager
def running_app(*args: str):
    """The real app in its own process with a throw-away data folder; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="melange-bench-") as data:
        server = AppServer(Path(data), *args)
        try:
            yield server.url
        finally:
            server.stop()


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
        "min": ordered[0],
        "runs": len(ordered),
    }


def machine() -> dict:
    import os

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
