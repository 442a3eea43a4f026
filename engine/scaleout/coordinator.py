"""The coordinator of a scaled-out run: a `Runner` whose epochs are evaluated by Ray actors (`worker.py`).

What it keeps from the single-process runner, unchanged: planning and logging each epoch's slices, the
watermarks, the sinks (one transaction per sink per epoch, with its marker), the dead letters, the state tables'
commits and the manifest row, the lease, requests, retention. So the commit protocol, and with it exactly-once,
is the runner's. What it hands to the workers: reading, the operators, and the shuffles between them.

A worker that dies (its process killed, its node lost) makes the epoch's `ray.get` fail: the coordinator raises
`WorkerLost`, the run's loop ends without a checkpoint, and `Pipeline.run` starts a new coordinator and new
workers, which restore the last checkpoint and replay the logged epochs after it, as a restarted process does.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import UserError, WorkerLost
from engine.offset_log import PlannedEpoch
from engine.operators import stateful
from engine.operators.base import OperatorSettings, StateStore
from engine.runner import Evaluated, Runner
from engine.scaleout.partitioning import combined, stages, watermark_offsets
from engine.scaleout.worker import Worker, WorkerSpec
from engine.state_store import discard_uncommitted
from sql import Plan, ScalarUdf

LOG = logging.getLogger("engine.scaleout")
#: how long new workers may take to start and load their state before the run gives up
START_TIMEOUT_S = float(os.environ.get("TIMELAPSE_RAY_START_TIMEOUT", "300"))


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs the ray extra: pip install 'timelapse[ray]'") from None
    return ray


class Cluster:
    """The Ray instance a run uses: a local one it starts (and stops at the end), or an existing cluster."""

    def __init__(self, address: str | None, workers: int) -> None:
        ray = _ray()
        self.started = False
        self.address = address
        self.reaper: subprocess.Popen[bytes] | None = None
        if ray.is_initialized():
            return
        settings: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
            "configure_logging": True,
        }
        if address:
            settings["address"] = address
        else:  # never a cluster found in the environment or /tmp/ray: the run's own instance
            self.reaper = _start_reaper(ray)
            settings.update(
                address="local",
                num_cpus=max(workers, os.cpu_count() or 1),
                object_store_memory=int(os.environ.get("TIMELAPSE_RAY_OBJECT_STORE", 500_000_000)),
            )
        try:
            ray.init(**settings)
        except (ConnectionError, RuntimeError, ValueError) as err:
            self._stop_reaper()
            raise UserError(f"cannot start or join Ray{f' at {address}' if address else ''}: {err}") from None
        self.started = True
        _quiet_error_messages()
        cpus = ray.cluster_resources().get("CPU", 0)
        if address and cpus < workers:
            self.close()
            raise UserError(f"the Ray cluster at {address} has {cpus:g} CPUs; --workers {workers} needs {workers}")

    def close(self) -> None:
        try:
            if self.started:
                _ray().shutdown()
                self.started = False
        finally:
            self._stop_reaper()

    def _stop_reaper(self) -> None:
        """Ray is shut down (or never started): the reaper sweeps what is left and exits."""
        if self.reaper is not None:
            reaper, self.reaper = self.reaper, None
            if reaper.stdin is not None:
                reaper.stdin.close()
            try:
                reaper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                reaper.kill()


def _quiet_error_messages() -> None:
    """Ray's driver prints the errors its cluster publishes ("(raylet) A worker died or was killed ...") on this
    process's stdout, even with `log_to_driver=False`: in the middle of `--json` output, and beside the run's own
    one line for the same event (a lost worker is a warning; an error in a worker is the run's error). They go to
    the `engine.scaleout` logger instead. Ray has no option for this: its printing function is wrapped."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # another Ray layout: its messages stay
        return
    printing = getattr(ray_worker, "print_to_stdstream", None)
    if printing is None or getattr(printing, "quieted", False):
        return

    def quieted(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                LOG.info("ray: %s", line)
            return
        printing(data, ignore_prefix)

    quieted.quieted = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = quieted


# What the reaper runs (a separate small Python process, so that it outlives a driver killed with SIGKILL). Ray
# gives its head processes the driver's fate (PR_SET_PDEATHSIG), but not what they start: on the driver's death
# its workers linger for seconds and its dashboard and runtime-env agents for minutes (each tries to tell the dead
# GCS that its raylet died). The reaper notes the driver's Ray descendants every half second; when its stdin (a
# pipe only the driver holds) ends, they are killed. psutil checks a process's start time before a signal, so a
# reused pid is never hit.
_REAPER = """
import os, signal, sys, threading
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.path.append(sys.argv[1])
import psutil
driver = psutil.Process(os.getppid())
before = {p.pid for p in driver.children(recursive=True)}
seen = {}
ended = threading.Event()
threading.Thread(target=lambda: (sys.stdin.buffer.read(), ended.set()), daemon=True).start()
def ray_process(p):
    try:
        name = p.name()
        return name.startswith("ray::") or name in ("raylet", "gcs_server") or any("/ray/" in a for a in p.cmdline())
    except psutil.Error:
        return False
while True:
    stop = ended.wait(0.5)
    try:
        for p in driver.children(recursive=True):
            if p.pid != os.getpid() and p.pid not in before and p.pid not in seen and ray_process(p):
                seen[p.pid] = p
    except psutil.Error:
        stop = True
    if stop:
        break
for p in seen.values():
    try:
        p.kill()
    except psutil.Error:
        pass
"""


def _start_reaper(ray: Any) -> subprocess.Popen[bytes] | None:
    """A process that kills the local Ray instance's processes if this (the driver) dies without shutting it down."""
    vendored = str(Path(ray.__file__).parent / "thirdparty_files")  # Ray's own psutil
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _REAPER, vendored],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the terminal's process group: a Ctrl-C leaves it to the driver
        )
    except OSError:  # no reaper: Ray's own fate-sharing still ends the head processes
        return None


class RayRunner(Runner):
    def __init__(
        self,
        plan: Plan,
        state: Path,
        base_dir: Path,
        allow_non_restored_state: bool,
        sql: str,
        udfs: Mapping[str, ScalarUdf] | None,
        storage_options: Mapping[str, str] | None,
        workers: int,
        arm_faults: bool = True,
    ) -> None:
        self.sql, self.udfs = sql, dict(udfs) if udfs else None
        self.storage_options = dict(storage_options) if storage_options else None
        self.worker_count = workers
        self.arm_faults = arm_faults
        self.actors: list[Any] = []
        self._worker_state_bytes = 0
        #: cumulative seconds, for benchmarks: the epochs' evaluation as the coordinator waited for it, and per
        #: phase the slowest worker's (read, shuffle: cutting, sending and receiving parts, operators)
        self.timings: dict[str, float] = {"evaluate": 0.0, "read": 0.0, "shuffle": 0.0, "operators": 0.0}
        try:
            super().__init__(plan, state, base_dir, allow_non_restored_state, parallelism=workers)
        except BaseException:
            self._kill_workers()
            raise

    # -- starting the workers ------------------------------------------------------------------
    def _open_operators(
        self, versions: dict[str, int], recorded: dict[str, int], idle: set[str], restored: bool
    ) -> None:
        """Undo uncommitted state commits and open the state tables for committing (the coordinator holds no
        state), then start the workers, each loading its key groups' rows at the checkpoint."""
        settings = OperatorSettings(base_dir=self.base_dir)
        self.operators = {node.id: stateful(node, settings) for node in self.plan.nodes if node.stateful}
        for operator in self.operators.values():
            state_id = operator.node.state_id
            store = StateStore(self.operator_dirs[state_id], self.pipeline_id)
            for path in operator.table_paths(store):
                discard_uncommitted(path, recorded.get(str(path)))
            operator.attach({name: store.open(state_id, spec) for name, spec in operator.specs.items()})
            for name, table in operator.state_tables.items():
                table.count_log(versions.get(operator.specs[name].qualified(state_id)))
        latest = self.manifest.latest()
        offsets = latest.source_offsets if latest else {}
        history = self.offsets.history(self.last_epoch)
        sources = {name: (offsets.get(name, {}).get("position"), history.get(name, [])) for name in self.sources}
        watermarks = {
            node_id: self._operator_watermark(node_id, idle) if restored else None for node_id in self.operators
        }
        self._stage_count = len(stages(self.outputs))
        self._start_workers(versions, sources, watermarks)

    def _start_workers(
        self,
        versions: dict[str, int],
        sources: dict[str, tuple[Any, list[dict[str, Any]]]],
        watermarks: dict[str, dt.datetime | None],
    ) -> None:
        ray = _ray()
        actor = ray.remote(WorkerActor)
        crash = _armed_crash() if self.arm_faults else None
        for index in range(self.worker_count):
            spec = WorkerSpec(
                sql=self.sql,
                udfs=self.udfs,
                fingerprint=self.plan.fingerprint,
                base_dir=str(self.base_dir),
                state=str(self.dir.root),
                storage_options=self.storage_options,
                pipeline_id=self.pipeline_id,
                index=index,
                count=self.worker_count,
                versions=versions,
                operator_dirs={sid: str(path) for sid, path in self.operator_dirs.items()},
                watermarks=watermarks,
                sources=sources,
                crash=crash[0] if crash is not None and crash[1] in (None, index) else None,
            )
            options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "scheduling_strategy": "SPREAD"}
            if forwarded := _forwarded_environment():
                options["runtime_env"] = {"env_vars": forwarded}
            self.actors.append(actor.options(**options).remote(spec))
        self.worker_pids = self._get([a.ready.remote() for a in self.actors], timeout=START_TIMEOUT_S)

    def _kill_workers(self) -> None:
        if self.actors:
            ray = _ray()
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            self.actors = []

    def close(self) -> None:
        try:
            self._kill_workers()
        finally:
            super().close()

    def _get(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        """Results of the workers' calls; a worker's death is `WorkerLost`, its error is raised as itself."""
        ray = _ray()
        try:
            return list(ray.get(refs, timeout=timeout))
        except ray.exceptions.RayTaskError as err:  # an error raised in the worker: the same error here
            cause = err.cause
            if isinstance(cause, ray.exceptions.RayActorError):
                raise WorkerLost(f"a worker was lost: {_first_line(cause)}") from None
            raise cause from None
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError) as err:
            raise WorkerLost(f"a worker was lost: {_first_line(err)}") from None
        except ray.exceptions.GetTimeoutError:
            raise WorkerLost(f"the workers did not start within {timeout:g} s") from None

    # -- an epoch ------------------------------------------------------------------------------
    def _evaluate(self, epoch: int, planned: PlannedEpoch) -> Evaluated:
        started = time.perf_counter()
        count = len(self.actors)
        shares = {name: self.sources[name].split(piece, count) for name, piece in planned.pieces.items()}
        common = {
            "epoch": epoch,
            "proctime": planned.at,
            "previous": dict(self.watermarks.marks),
            "idle": sorted(planned.idle),
            "drain": planned.drain,
            "dimensions": planned.dimensions,
            "previous_dimensions": self.dimensions_used,
            "pieces": planned.pieces,
        }
        reads = self._get(
            [a.read.remote(common, {n: s[i] for n, s in shares.items()}) for i, a in enumerate(self.actors)]
        )
        highest = [r["highest"] for r in reads]
        per_split = [r["per_split"] for r in reads]
        self.watermarks.advance_to(*combined(highest, per_split), drain=planned.drain)
        marks, watermark = dict(self.watermarks.marks), self.watermarks.pipeline(set(planned.idle))
        offsets = watermark_offsets(highest, per_split)
        stage_count = self._stage_count
        returns = count if stage_count > 1 else 1
        outs = [
            _as_list(a.begin.options(num_returns=returns).remote(offsets[i], marks, watermark))
            for i, a in enumerate(self.actors)
        ]
        for level in range(1, stage_count):
            returns = count if level + 1 < stage_count else 1
            outs = [
                _as_list(a.stage.options(num_returns=returns).remote(level, [outs[j][i] for j in range(count)]))
                for i, a in enumerate(self.actors)
            ]
        finals = self._get([out[0] for out in outs])
        self._worker_state_bytes = sum(f["state_bytes"] for f in finals)
        self.timings["evaluate"] += time.perf_counter() - started
        for phase in ("read", "shuffle", "operators"):
            self.timings[phase] += max(f["seconds"][phase] for f in finals)
        return Evaluated(
            results=[
                pl.concat([pl.from_arrow(f["results"][k]) for f in finals], how="vertical_relaxed")  # type: ignore[misc]
                for k in range(len(self.outputs))
            ],
            rows_in=_summed(r["rows_in"] for r in reads),
            records_read=_summed(r["records_read"] for r in reads),
            dead_letters=_dead_letters(reads, finals),
            late_rows=_summed(f["late_rows"] for f in finals),
            watermark=watermark,
        )

    def _timers_due(self, now: dt.datetime) -> bool:
        return any(self._get([a.timer_due.remote(now) for a in self.actors]))

    def _state_bytes(self) -> int:
        return self._worker_state_bytes if self.actors else 0

    # -- checkpoints ---------------------------------------------------------------------------
    def _detach_operators(self) -> tuple[list[Callable[[], None]], dict[str, int], dict[str, int]]:
        """The workers' staged changes, taken now and committed here: one append per table, as the
        single-process runner makes, so the tables do not depend on the number of workers."""
        staged = self._get([a.staged.remote() for a in self.actors])
        jobs: list[Callable[[], Any]] = []
        state_rows: dict[str, int] = {}
        state_bytes: dict[str, int] = {}
        for operator in self.operators.values():
            state_id = operator.node.state_id
            for name, late in operator.late_tables.items():
                qualified = operator.specs[name].qualified(state_id)
                late.pending = [pl.from_arrow(s["late"][qualified]) for s in staged if qualified in s["late"]]  # type: ignore[misc]
                jobs.append(late.detach(self.last_epoch))
            rows = 0
            for name, table in operator.state_tables.items():
                qualified = operator.specs[name].qualified(state_id)
                for s in staged:
                    if qualified in s["changes"]:
                        table.add_staged(pl.from_arrow(s["changes"][qualified]))  # type: ignore[arg-type]
                live = sum(s["live"].get(qualified, 0) for s in staged)
                jobs.append(table.detach(self.last_epoch, live))
                rows += live
            state_rows[state_id] = rows
            state_bytes[state_id] = sum(s["state_bytes"].get(state_id, 0) for s in staged)
        return jobs, state_rows, state_bytes  # each table's commit: side by side


class WorkerActor(Worker):
    """The actor: a `Worker` whose failure to start (a bucket it cannot reach, a bad connector option) is raised
    by `ready` as itself. Raised from `__init__`, Ray reports only a dead actor with the error's text (and the
    run would see a lost worker, not the error)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.failed: BaseException | None = None
        try:
            super().__init__(spec)
        except Exception as err:
            self.failed = err

    def ready(self) -> int:
        if self.failed is not None:
            raise self.failed
        return super().ready()


#: variables the workers need as the coordinator has them: object-store credentials and endpoints (read by
#: delta-rs and Polars from the environment), the roots connectors are confined to (`--allowed-root` sets it),
#: Polars' thread count. A cluster's workers were started by its nodes, not by this process, so they would not
#: see this process's; a fault-injection variable is not forwarded (the coordinator arms the workers' points).
FORWARDED = ("AWS_", "AZURE_", "GOOGLE_", "TIMELAPSE_ALLOWED_ROOTS", "POLARS_MAX_THREADS")


def _forwarded_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith(FORWARDED)}


def _as_list(refs: Any) -> list[Any]:
    return list(refs) if isinstance(refs, list | tuple) else [refs]


def _summed(parts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for name, count in part.items():
            total[name] = total.get(name, 0) + count
    return total


def _dead_letters(reads: list[dict[str, Any]], finals: list[dict[str, Any]]) -> dict[str, pl.DataFrame]:
    """Sources' dead letters in worker order (the source's order); a lookup table's once (every worker that
    read the dimension found the same ones)."""
    frames: dict[str, list[pl.DataFrame]] = {}
    for read in reads:
        for name, table in read["dead_letters"].items():
            frames.setdefault(name, []).append(pl.from_arrow(table))  # type: ignore[arg-type]
    seen: set[str] = set()
    for final in finals:
        for name, table in final["dead_letters"].items():
            if name not in seen:
                seen.add(name)
                frames.setdefault(name, []).append(pl.from_arrow(table))  # type: ignore[arg-type]
    return {name: pl.concat(parts, how="vertical_relaxed") for name, parts in frames.items()}


def _armed_crash() -> tuple[tuple[str, int], int | None] | None:
    """A worker fault point armed from the environment (crash tests): the point, its hit count, which worker."""
    spec = os.environ.get("TIMELAPSE_WORKER_CRASH_AT")
    if not spec:
        return None
    name, _, hits = spec.partition(":")
    index = os.environ.get("TIMELAPSE_WORKER_CRASH_INDEX")
    return (name, int(hits or 1)), (int(index) if index else None)


def _first_line(err: BaseException) -> str:
    """The first line of Ray's message (the rest is actor ids and addresses), without its full stop: it goes
    into a sentence."""
    text = str(err).strip().splitlines()
    return text[0].strip().rstrip(".") if text else type(err).__name__
