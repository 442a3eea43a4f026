"""A checkpoint's commits to different tables, side by side.

A checkpoint commits every sink that holds rows back, every operator's state tables, then the manifest row. The
tables are independent until that row names them, and a Delta commit is mostly waiting (files written, the log
listed and appended) with the GIL released by delta-rs, so running them in threads cuts the checkpoint's wall
time towards its slowest commit. Recovery does not depend on their order: a crash before the manifest row
replays the epochs since the last checkpoint whichever of the tables were committed (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

# Four: the sinks and the operators of a typical pipeline; more threads only queue on the disk.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="timelapse-commit")


def start(jobs: Iterable[Callable[[], T]]) -> list[Future[T]]:
    """Start each job in a commit thread."""
    return [_POOL.submit(job) for job in jobs]


def finish(futures: list[Future[T]]) -> list[T]:
    """Wait for every job (none is left running, even when one failed); their results, or the first error."""
    wait(futures)
    return [future.result() for future in futures]


def side_by_side(jobs: Iterable[Callable[[], T]]) -> list[T]:
    """Run the jobs in commit threads; their results in order, or the first error once all have ended."""
    return finish(start(jobs))
