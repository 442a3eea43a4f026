"""The Python API: `Pipeline.from_sql(...).run(once=True)`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.runner import EpochReport, Runner, RunOptions
from engine.state_dir import StateDir, write_atomic
from sql import Plan, ScalarUdf, plan_script


class Pipeline:
    """A planned SQL script bound to a state directory."""

    def __init__(self, plan: Plan, state: str | Path, base_dir: str | Path = ".") -> None:
        self.plan = plan
        self.state = Path(state)
        self.base_dir = Path(base_dir)

    @classmethod
    def from_sql(
        cls, text_or_path: str | Path, state: str | Path, udfs: Mapping[str, ScalarUdf] | None = None
    ) -> Pipeline:
        """Plan a script given as text or as a path to a .sql file.

        Relative connector paths resolve against the script's folder, or the working directory for text.
        """
        path = Path(text_or_path) if isinstance(text_or_path, Path) or _looks_like_path(text_or_path) else None
        if path is not None:
            return cls(plan_script(path.read_text(), udfs), state, path.resolve().parent)
        return cls(plan_script(str(text_or_path), udfs), state, Path.cwd())

    def explain(self) -> str:
        return self.plan.explain()

    def request_checkpoint(self) -> None:
        """Ask this pipeline's running instance for a checkpoint at its next epoch boundary."""
        request_checkpoint(self.state)

    def run(
        self,
        once: bool = False,
        trigger: float = 1.0,
        max_epochs: int | None = None,
        max_epoch_rows: int | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_interval: str | None = None,
    ) -> dict[str, Any]:
        """Run epochs; returns the summary that `timelapse run --json` prints."""
        runner = Runner(self.plan, self.state, self.base_dir)
        try:
            options = RunOptions(
                once=once,
                trigger_seconds=trigger,
                max_epochs=max_epochs,
                max_epoch_rows=max_epoch_rows,
                checkpoint_interval=checkpoint_interval,
            )
            return runner.run(options, on_epoch, should_stop).as_dict()
        finally:
            runner.close()


def request_checkpoint(state: str | Path) -> None:
    """Ask the pipeline running on `state` for a checkpoint at its next epoch boundary (or the next run's first)."""
    directory = StateDir(Path(state))
    if not directory.manifest.exists():
        raise FileNotFoundError(f"{state} is not a timelapse state directory")
    write_atomic(directory.checkpoint_request, b"requested\n")


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and text.strip().lower().endswith(".sql") and Path(text).exists()
