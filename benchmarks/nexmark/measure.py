"""What every engine's runner reports, computed one way (stdlib only: it also runs in Flink's own venv)."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def result(
    engine: str,
    query: str,
    events: int,
    elapsed: float,
    warm_s: float,
    batches: list[float],
    commits: list[float],
    peak_rss_bytes: float | None,
    **extra: Any,
) -> dict[str, object]:
    """Throughput over the warm part of a run (all batches but the first, or the whole run when there are no
    batches), per core, batch latency percentiles, checkpoint p50 and peak RSS."""
    cores = os.cpu_count() or 1
    warm_events = events * (len(batches) - 1) / len(batches) if len(batches) > 1 else events
    rate = warm_events / warm_s if warm_s else 0.0
    ordered = sorted(batches)
    return {
        "engine": engine,
        "query": query,
        "status": "ok",
        "events": events,
        "epochs": len(batches) or None,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(rate),
        "events_per_s_per_core": round(rate / cores),
        "epoch_p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
        "epoch_p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 1) if ordered else None,
        "checkpoint_p50_ms": round(statistics.median(commits) * 1000, 1) if commits else None,
        "peak_rss_mb": round(peak_rss_bytes / 2**20) if peak_rss_bytes else None,
        **extra,
    }


def unsupported(engine: str, query: str, reason: str) -> dict[str, object]:
    return {"engine": engine, "query": query, "status": "unsupported", "reason": reason[:300]}


class PeakMemory:
    """The peak resident memory of this process and its children (a JVM), sampled every 100 ms."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> PeakMemory:
        self._thread.start()
        return self

    def stop(self) -> float:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
        return self.peak

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                self.peak = max(self.peak, total)
            self._stop.wait(0.1)


def cli(main: Callable[[str, Path, int, int], dict[str, object]]) -> None:
    """`python -m benchmarks.nexmark.run_<engine> QUERY DATA EVENTS EPOCH_EVENTS`: one JSON line."""
    query, data, events, epoch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(main(query, data, events, epoch)))
