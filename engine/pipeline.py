"""The Python API: `Pipeline.from_sql(...).run(once=True)`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine import python_functions, recovery, upgrade
from engine.epoch_report import merge_summaries
from engine.errors import Busy, UserError, WorkerLost
from engine.manifest import Manifest
from engine.runner import EpochReport, Runner, RunOptions
from engine.state_dir import StateDir, write_atomic
from engine.storage import Location, location
from engine.upgrade import Change
from sql import Plan, ScalarUdf, plan_script
from sql.options import check_run_options

# Errors that say what is wrong with the SQL, the options, the data (a DECIMAL overflow) or the directory's owner:
# never storage damage, so no fallback to an older checkpoint.
NOT_DAMAGE = (UserError, Busy, WorkerLost, KeyboardInterrupt, SystemExit)
MAX_FALLBACKS = 3
#: a scaled-out run restarts its workers after this many losses at most, then fails
MAX_WORKER_RESTARTS = 5


class Pipeline:
    """A planned SQL script bound to a state directory."""

    def __init__(
        self,
        plan: Plan,
        state: str | Location,
        base_dir: str | Path = ".",
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        """`storage_options`: how to reach an object-store state directory (endpoint, region, credentials, in
        delta-rs' key names); they hold for every table in its bucket, so no AWS_* variables are needed."""
        self.plan = plan
        # Absolute, because the manifest records table paths: readers may open it from any directory.
        self.state = location(state, options=storage_options).absolute()
        self.base_dir = Path(base_dir).absolute()
        self.storage_options = dict(storage_options) if storage_options else None
        # The SQL text and UDFs it was planned from (`from_sql`): the Ray executor's workers plan from them.
        self.sql: str | None = None
        self.udfs: Mapping[str, ScalarUdf] | None = None

    @classmethod
    def from_sql(
        cls,
        text_or_path: str | Path,
        state: str | Location,
        udfs: Mapping[str, ScalarUdf] | None = None,
        storage_options: Mapping[str, str] | None = None,
    ) -> Pipeline:
        """Plan a script given as text or as a path to a .sql file.

        Relative connector paths resolve against the script's folder, or the working directory for text.
        """
        state = location(state, options=storage_options)  # an unsupported scheme is refused before any planning
        path = Path(text_or_path) if isinstance(text_or_path, Path) or _looks_like_path(text_or_path) else None
        text = path.read_text() if path is not None else str(text_or_path)
        base_dir = path.resolve().parent if path is not None else Path.cwd()
        pipeline = cls(plan_script(text, udfs, python_functions.loader(base_dir)), state, base_dir, storage_options)
        pipeline.sql, pipeline.udfs = text, udfs
        return pipeline

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
        drain: bool = False,
        on_epoch: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_interval: str | None = None,
        checkpoint_state_growth: str | None = None,
        retain_count: str | int | None = None,
        retain_age: str | None = None,
        allow_non_restored_state: bool = False,
        parallelism: int | None = None,
        on_upgrade: Callable[[list[Change]], None] | None = None,
        on_fallback: Callable[[dict[str, Any]], None] | None = None,
        executor: str = "local",
        workers: int | None = None,
        ray_address: str | None = None,
        on_worker_lost: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Run epochs; returns the summary that `timelapse run --json` prints.

        `executor="ray"` runs the epochs on `workers` Ray actors (the `ray` extra): on a local Ray instance the
        run starts, or on the cluster at `ray_address`. Results do not depend on the executor or the number of
        workers, which may change between runs. A worker that dies abandons its epoch; new workers restore the
        last checkpoint and replay (`on_worker_lost` receives why; the summary counts `workers_lost`).

        On a state directory written by different SQL, the operators' state is matched first: state that the
        new SQL cannot restore refuses the run (`UpgradeRefused`) unless `allow_non_restored_state`.
        `on_upgrade` receives the per-operator report before the first epoch.

        `drain`: process the input present (as `once`), then advance every source's watermark to the end of time:
        every window, session, interval-join padding and timer fires in one last epoch, recorded as a drain in
        the manifest. Rows that arrive later are late; a rollback to an epoch before the drain undoes it.

        If the state to resume from is damaged, the run falls back to the newest checkpoint that reads cleanly
        (`engine.recovery`); `on_fallback` receives what was found and done, and so does the summary.
        """
        check_run_options(
            {
                "trigger": trigger,
                "max_epochs": max_epochs,
                "max_epoch_rows": max_epoch_rows,
                "checkpoint_interval": checkpoint_interval,
                "checkpoint_state_growth": checkpoint_state_growth,
                "retain_count": retain_count,
                "retain_age": retain_age,
                "parallelism": parallelism,
            }
        )
        cluster = self._cluster(executor, workers, ray_address)
        options = RunOptions(
            once=once,
            trigger_seconds=trigger,
            max_epochs=max_epochs,
            max_epoch_rows=max_epoch_rows,
            drain=drain,
            checkpoint_interval=checkpoint_interval,
            checkpoint_state_growth=checkpoint_state_growth,
            retain_count=None if retain_count is None else str(retain_count),
            retain_age=retain_age,
        )
        fallbacks: list[dict[str, Any]] = []
        total: dict[str, Any] | None = None
        lost: list[str] = []
        rollbacks = 0
        try:
            while True:
                open_runner = self._runner_factory(cluster, workers, allow_non_restored_state, parallelism, lost)
                summary, runner = self._run_runner(
                    options, on_epoch, should_stop, open_runner, on_upgrade, on_fallback, fallbacks, total is None
                )
                total = summary if total is None else merge_summaries(total, summary)
                if total is not summary:  # merged: the runner before ended for a rollback or for a lost worker
                    total.pop("rollbacks", None)
                    if rollbacks:
                        total["rollbacks"] = rollbacks
                if runner.worker_lost is not None:
                    # A worker died: its epoch was abandoned uncommitted; new workers restore the last checkpoint.
                    lost.append(runner.worker_lost)
                    if len(lost) > MAX_WORKER_RESTARTS:
                        raise WorkerLost(f"{runner.worker_lost} ({len(lost)} times; the run gives up)")
                    if on_worker_lost is not None:
                        on_worker_lost(runner.worker_lost)
                    total["stopped"] = "finished"
                elif runner.pending_rollback is None:
                    if lost:
                        total["workers_lost"] = len(lost)
                    return total
                else:
                    # A rollback asked of this run (engine.control): done with the lease released, answered, and
                    # the run goes on from the restored cut with the same options (`max_epochs` counts every epoch).
                    self._roll_back(runner.pending_rollback)
                    rollbacks += 1
                options = self._remaining(options, max_epochs, total)
        finally:
            if cluster is not None:
                cluster.close()

    def _remaining(self, options: RunOptions, max_epochs: int | None, total: dict[str, Any]) -> RunOptions:
        if max_epochs is None:
            return options
        return dataclasses.replace(options, max_epochs=max(0, max_epochs - total["epochs"]))

    def _cluster(self, executor: str, workers: int | None, ray_address: str | None) -> Any:
        """The Ray instance of a scaled-out run (None for the single-process executor)."""
        if executor not in ("local", "ray"):
            raise UserError(f"unknown executor '{executor}': local or ray")
        if executor == "local":
            if workers is not None or ray_address is not None:
                raise UserError("--workers and --ray-address need --executor ray")
            return None
        if workers is not None and workers < 1:
            raise UserError("--workers must be at least 1")
        if self.sql is None:
            raise UserError("the ray executor plans in every worker from the SQL text: use Pipeline.from_sql")
        from engine.scaleout.coordinator import Cluster

        return Cluster(ray_address, workers or 1)

    def _runner_factory(
        self,
        cluster: Any,
        workers: int | None,
        allow_non_restored_state: bool,
        parallelism: int | None,
        lost: list[str],
    ) -> Callable[[], Runner]:
        if cluster is None:
            return lambda: Runner(self.plan, self.state, self.base_dir, allow_non_restored_state, parallelism)
        from engine.scaleout.coordinator import RayRunner

        assert self.sql is not None
        sql = self.sql
        return lambda: RayRunner(
            self.plan,
            self.state,
            self.base_dir,
            allow_non_restored_state,
            sql,
            self.udfs,
            self.storage_options,
            workers or 1,
            arm_faults=not lost,  # a crash test's fault hits the first workers only
        )

    def _roll_back(self, request: dict[str, Any]) -> None:
        from engine import requests, versioning

        args = dict(request.get("args") or {})
        when = args.get("timestamp")
        directory = StateDir(self.state)
        outcome = requests.outcome_of(
            lambda: versioning.rollback(
                self.state,
                to_epoch=args.get("epoch"),
                savepoint=args.get("savepoint"),
                timestamp=dt.datetime.fromisoformat(when) if when else None,
                reason=args.get("reason"),
                force=bool(args.get("force")),
                user=request.get("user"),
            )
        )
        requests.answer(directory, request, outcome)

    def _run_runner(
        self,
        options: RunOptions,
        on_epoch: Callable[[EpochReport], None] | None,
        should_stop: Callable[[], bool] | None,
        open_runner: Callable[[], Runner],
        on_upgrade: Callable[[list[Change]], None] | None,
        on_fallback: Callable[[dict[str, Any]], None] | None,
        fallbacks: list[dict[str, Any]],
        first: bool,
    ) -> tuple[dict[str, Any], Runner]:
        """One Runner until its run ends: the summary, and the runner (the rollback request it ended for, or
        the worker it lost)."""
        while True:
            try:
                runner = open_runner()
            except NOT_DAMAGE:
                raise
            except BaseException as err:  # perhaps damaged files: confirmed by verify before anything is changed
                self._fall_back(err, fallbacks, on_fallback)
                continue
            if runner.upgrade and on_upgrade is not None and not fallbacks and first:
                on_upgrade(runner.upgrade)
            for repair in runner.repairs:  # e.g. an uncommitted epoch whose offset file was damaged, planned again
                fallbacks.append(repair)
                if on_fallback is not None:
                    on_fallback(repair)
            try:
                summary = runner.run(options, on_epoch, should_stop).as_dict()
            except NOT_DAMAGE:
                raise
            except BaseException as err:  # e.g. a sink's damaged file, met while merging into it
                runner.close()
                self._fall_back(err, fallbacks, on_fallback)
                continue
            finally:
                runner.close()
            if fallbacks:
                summary["fallback"] = fallbacks[-1] if len(fallbacks) == 1 else fallbacks
            if runner.upgrade:
                summary["upgrade"] = upgrade.as_json(runner.upgrade)
            return summary, runner

    def _fall_back(
        self,
        err: BaseException,
        done: list[dict[str, Any]],
        on_fallback: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        """Fall back to the newest clean checkpoint if `err` came from damaged files; otherwise re-raise it."""
        if not StateDir(self.state).manifest.exists() or len(done) >= MAX_FALLBACKS:
            raise err
        report = recovery.fall_back(self.state, err)
        done.append(report)
        if on_fallback is not None:
            on_fallback(report)


def upgrade_check(sql: str | Path, state: str | Path, udfs: Mapping[str, ScalarUdf] | None = None) -> list[Change]:
    """What running `sql` on `state` would keep, start empty, drop or refuse; nothing is changed."""
    directory = StateDir(location(state))
    if not directory.manifest.exists():
        raise FileNotFoundError(f"{state} is not a timelapse state directory")
    latest = Manifest(directory.manifest).latest()
    plan = Pipeline.from_sql(sql, state, udfs).plan
    if latest is None:
        return [
            upgrade.Change(sid, "new", str(d["kind"]), "starts with empty state")
            for sid, d in plan.stateful_operators().items()
        ]
    return upgrade.compare(latest.operators, plan)


def request_checkpoint(state: str | Path, user: str | None = None) -> None:
    """Ask the pipeline running on `state` for a checkpoint at its next epoch boundary (or the next run's first);
    `user` is recorded in that checkpoint's row (`requested_by`)."""
    directory = StateDir(location(state))
    if not directory.manifest.exists():
        raise FileNotFoundError(f"{state} is not a timelapse state directory")
    write_atomic(directory.checkpoint_request, json.dumps({"user": user} if user else {}).encode() + b"\n")


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and text.strip().lower().endswith(".sql") and Path(text).exists()
