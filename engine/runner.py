"""The epoch loop: plan and log offsets, read, run the operators, write the sinks, commit the manifest row.

Epoch N
  1. takes the slice logged for N if a crashed run left one (replay), or plans a new slice of every source
     and logs it durably (offset log) before reading anything;
  2. reads exactly that slice (bad records go to the source's dead-letter table);
  3. runs the operator graph as Polars queries;
  4. appends to each sink with the marker (pipeline/table, N), skipping tables that already hold N;
  5. appends the manifest row: the commit point.
A crash anywhere before 5 replays N from its logged slice; sinks that already hold N skip it. Hence
exactly-once, whatever the instant of the crash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine import branching, damage, faults, retention, upgrade
from engine.delta_tables import AppendTable, ensure_table
from engine.manifest import DEAD_LETTERS, SINK, STATE, Checkpoint, Manifest, TableEntry
from engine.offset_log import OffsetLog
from engine.operators import evaluate
from engine.operators.aggregate import AggregateOperator, ParallelAggregate
from engine.operators.context import END_OF_TIME, EpochContext, operator_watermark
from engine.operators.join import JoinOperator
from engine.operators.over import OverOperator
from engine.operators.scan import run as run_scan
from engine.operators.top_n import TopNOperator
from engine.sinks import SinkConnector, make_sink
from engine.sources import Source, make_source
from engine.sources.base import DEAD_LETTER_SCHEMA
from engine.state_dir import StateDir
from engine.state_store import discard_uncommitted
from sql import durations
from sql.catalog import TableDef
from sql.plan import Aggregate, Join, OverAggregate, Plan, Scan, Sink, TopN

DEAD_LETTER_TABLE_SCHEMA: dict[str, pl.DataType] = {"epoch": pl.Int64(), **DEAD_LETTER_SCHEMA}


@dataclass
class RunOptions:
    once: bool = False
    trigger_seconds: float = 1.0
    max_epochs: int | None = None
    max_epoch_rows: int | None = None
    #: checkpoint policy: `5 epochs`, `10 s`, or None for the pipeline's `SET 'checkpoint.interval'` (default:
    #: every epoch)
    checkpoint_interval: str | None = None
    #: also checkpoint when operator state has grown by this much, e.g. `64 MB` (or SET 'checkpoint.state-growth')
    checkpoint_state_growth: str | None = None
    #: retention: keep the last N checkpoints / those younger than an age (None: the pipeline's SET options)
    retain_count: str | None = None
    retain_age: str | None = None
    #: after the input present is processed, advance every watermark to the end of time: every window,
    #: session, padding and timer fires (Flink's final watermark of a bounded input, `stop --drain`)
    drain: bool = False


@dataclass(frozen=True)
class CheckpointPolicy:
    """When an epoch becomes a durable checkpoint: whichever of the set criteria comes first."""

    every_epochs: int | None = 1
    seconds: float | None = None
    #: operator state (in memory) grew or shrank by this many bytes since the last checkpoint
    growth_bytes: int | None = None


def checkpoint_policy(interval: str | None, growth: str | None = None) -> CheckpointPolicy:
    """`'5 epochs'`, `'10 s'`, or None (every epoch); `growth` ('64 MB') adds a state-growth trigger, and
    alone means 'every 60 s, or sooner when the state grows that much'."""
    size = durations.parse_size(growth) if growth else None
    if not interval:
        return CheckpointPolicy(every_epochs=None, seconds=60.0, growth_bytes=size) if size else CheckpointPolicy()
    words = interval.strip().lower().split()
    if len(words) == 2 and words[1] in ("epoch", "epochs") and words[0].isdigit() and int(words[0]) > 0:
        return CheckpointPolicy(every_epochs=int(words[0]), growth_bytes=size)
    return CheckpointPolicy(every_epochs=None, seconds=durations.parse_duration(interval), growth_bytes=size)


@dataclass
class EpochReport:
    """One epoch's counts, per source or sink. `rows_in` counts the good rows the pipeline processed and
    `dead_letters` the records set aside as unreadable; `records_read` is both (what was read from the source)."""

    epoch: int
    rows_in: dict[str, int]
    rows_out: dict[str, int]
    dead_letters: dict[str, int]
    late_rows: dict[str, int]
    watermark: dt.datetime | None
    duration_s: float
    commit_s: float
    replayed: bool
    records_read: dict[str, int] = field(default_factory=dict)
    drain: bool = False


@dataclass
class Summary:
    state: str
    epochs: int = 0
    last_epoch: int | None = None
    rows_in: dict[str, int] = field(default_factory=dict)
    records_read: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    late_rows: dict[str, int] = field(default_factory=dict)
    watermark: dt.datetime | None = None
    elapsed_s: float = 0.0
    stopped: str = "finished"
    drained: int | None = None  # the drain epoch, when this run drained

    def add(self, report: EpochReport) -> None:
        self.epochs += 1
        self.last_epoch = report.epoch
        if report.drain:
            self.drained = report.epoch
        self.watermark = report.watermark
        for target, counts in (
            (self.rows_in, report.rows_in),
            (self.records_read, report.records_read),
            (self.rows_out, report.rows_out),
            (self.dead_letters, report.dead_letters),
            (self.late_rows, report.late_rows),
        ):
            for key, value in counts.items():
                target[key] = target.get(key, 0) + value

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "epochs": self.epochs,
            "last_epoch": self.last_epoch,
            "rows_in": self.rows_in,
            "records_read": self.records_read,
            "rows_out": self.rows_out,
            "dead_letters": self.dead_letters,
            "late_rows": self.late_rows,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "stopped": self.stopped,
            **({"drained": self.drained} if self.drained is not None else {}),
        }


class Runner:
    def __init__(
        self,
        plan: Plan,
        state: Path,
        base_dir: Path,
        allow_non_restored_state: bool = False,
        parallelism: int | None = None,
    ) -> None:
        self.plan = plan
        # Normalised (as StateDir.locate returns paths), so that recorded and built paths compare equal.
        self.dir = StateDir(Path(os.path.abspath(state)))
        self.base_dir = base_dir
        self._lock = self.dir.lock()
        try:
            self._setup(allow_non_restored_state, parallelism)
        except BaseException:
            self._lock.close()  # so that a fallback (a rollback) can take the directory
            raise

    def _setup(self, allow_non_restored_state: bool, parallelism: int | None) -> None:
        plan, base_dir = self.plan, self.base_dir
        self.repairs: list[dict[str, Any]] = []
        if self.dir.manifest.exists():
            from engine.versioning import finish_interrupted

            if (problem := damage.intent_problem(self.dir)) is not None:
                raise damage.StateDamaged(problem)
            finish_interrupted(self.dir)  # a rollback cut short by a crash completes before anything runs
            current = Manifest(self.dir.manifest).latest()
            tables = current.tables if current is not None else None
            # Before the id is read: a lost id must be recovered, never replaced by a new one.
            if (repaired := damage.repair_pipeline_file(self.dir, tables)) is not None:
                self.repairs.append(repaired)
        self.pipeline_id = self.dir.pipeline_id()
        self.manifest = Manifest(self.dir.manifest)
        self.offsets = OffsetLog(self.dir.offsets)
        self.scans = {n.table.name: n for n in plan.nodes if isinstance(n, Scan)}
        self.sources: dict[str, Source] = {name: make_source(n.table, base_dir) for name, n in self.scans.items()}
        self.sink_nodes: dict[str, list[Sink]] = {}
        for sink in plan.sinks:
            self.sink_nodes.setdefault(sink.table.name, []).append(sink)
        self.sinks: dict[str, SinkConnector] = {
            name: make_sink(self._own_table(nodes[0].table), base_dir, f"{self.pipeline_id}/{name}")
            for name, nodes in self.sink_nodes.items()
        }
        for sink in self.sinks.values():
            sink.open()
        latest = self.manifest.latest()
        self.upgrade: list[upgrade.Change] = []
        if latest is not None and latest.operators and latest.plan_fingerprint != plan.fingerprint:
            self.upgrade = upgrade.compare(latest.operators, plan)
            refused = upgrade.refusal(self.upgrade)
            if refused and not allow_non_restored_state:
                self._lock.close()
                raise upgrade.UpgradeRefused(refused)
        # GROUP BY aggregations split their key groups over this many worker threads (`parallelism.default`).
        self.parallelism = parallelism or int(plan.options.get("parallelism.default", "1"))
        self.previous_parallelism = latest.metrics.get("parallelism", 1) if latest else self.parallelism
        self.fresh_state = {c.state_id for c in self.upgrade if c.status in ("new", "incompatible")}
        self.operator_dirs = self._operator_directories(latest)
        # What each operator's state means and where it lives: fixed for the run, recorded with every checkpoint.
        self.operator_records = {
            sid: {**descriptor, "directory": str(self.operator_dirs[sid])}
            for sid, descriptor in plan.stateful_operators().items()
        }
        self.operators: dict[str, AggregateOperator | ParallelAggregate | JoinOperator | TopNOperator | OverOperator]
        self.operators = {}
        for node in plan.nodes:
            if isinstance(node, Aggregate) and self.parallelism > 1:
                directory = self.operator_dirs[node.state_id]
                self.operators[node.id] = ParallelAggregate(node, directory, self.pipeline_id, self.parallelism)
            elif isinstance(node, Aggregate):
                self.operators[node.id] = AggregateOperator(node, self.operator_dirs[node.state_id], self.pipeline_id)
            elif isinstance(node, Join):
                directory = self.operator_dirs[node.state_id]
                self.operators[node.id] = JoinOperator(node, directory, self.pipeline_id, base_dir)
            elif isinstance(node, TopN):
                self.operators[node.id] = TopNOperator(node, self.operator_dirs[node.state_id], self.pipeline_id)
            elif isinstance(node, OverAggregate):
                self.operators[node.id] = OverOperator(node, self.operator_dirs[node.state_id], self.pipeline_id)
        self._operator_sources = {n.id: n.upstream_watermarks for n in plan.nodes if n.stateful}
        self.dead_tables: dict[str, AppendTable] = {}
        self.watermarks: dict[str, dt.datetime | None] = {}
        self.last_active: dict[str, float] = {}  # processing time (epoch seconds) of each source's last rows
        self.idle: set[str] = set()
        self.started_at = time.time()
        self.idle_timeouts = {
            name: durations.parse_duration(scan.table.options["scan.watermark.idle-timeout"])
            for name, scan in self.scans.items()
            if "scan.watermark.idle-timeout" in scan.table.options
        }
        self.last_epoch = 0
        self._restore()

    def close(self) -> None:
        self._lock.close()

    def _own_table(self, table: TableDef) -> TableDef:
        """A branch writes its own copies of its parent's sink tables, whatever path the SQL names."""
        if "path" not in table.options or branching.branch_info(self.dir.root) is None:
            return table
        declared = Path(table.options["path"])
        declared = declared if declared.is_absolute() else self.base_dir / declared
        path = branching.sink_path_for(self.dir.root, table.name, declared)
        return dataclasses.replace(table, options={**table.options, "path": str(path)})

    def _operator_directories(self, latest: Checkpoint | None) -> dict[str, Path]:
        """Where each operator keeps its tables: where the manifest says it did, or a fresh directory.

        State that cannot be restored (an incompatible upgrade) is never overwritten: the operator starts in a
        new directory, so earlier epochs stay readable where they were. Before the first checkpoint, a directory
        can only hold what a crashed first run wrote; it is reused (and emptied by `discard_uncommitted`).
        """
        recorded = latest.operators if latest else {}
        next_epoch = (latest.epoch if latest else 0) + 1
        directories = {}
        for state_id in self.plan.stateful_operators():
            default = self.dir.operator(state_id)
            if state_id in recorded and state_id not in self.fresh_state:
                directories[state_id] = Path(recorded[state_id].get("directory", default))
            elif default.exists() and latest is not None:
                directories[state_id] = self.dir.operator(state_id, since=next_epoch)
            else:
                directories[state_id] = default
        return directories

    # -- recovery ------------------------------------------------------------------------------
    def _restore(self) -> None:
        latest = self.manifest.latest()
        self.last_epoch = latest.epoch if latest else 0
        # Damage `verify` would report is acted on before anything is read or written (engine.damage).
        marked = [(sink.path, sink.app_id) for sink in self.sinks.values() if sink.path is not None]
        marked += [(self.dir.dead_letters(n), f"{self.pipeline_id}/dead_letters/{n}") for n in self.sources]
        if (replanned := damage.check_offsets(self.dir.offsets, self.last_epoch, marked)) is not None:
            self.repairs.append(replanned)
        damage.check_files(latest.tables if latest else [])
        offsets = latest.source_offsets if latest else {}
        history = self.offsets.history(self.last_epoch)
        for name, source in self.sources.items():
            saved = offsets.get(name, {})
            source.restore(saved.get("position"), history.get(name, []))
            wm = saved.get("watermark")
            self.watermarks[name] = dt.datetime.fromisoformat(wm) if wm else None
            if saved.get("last_active") is not None:
                self.last_active[name] = float(saved["last_active"])
        for name in self.sources:
            path = self.dir.dead_letters(name)
            if path.exists():
                table = ensure_table(path, DEAD_LETTER_TABLE_SCHEMA)
                self.dead_tables[name] = AppendTable(table, "dead-letters.commit")
        versions = {
            t.name: t.version
            for t in (latest.tables if latest else [])
            if t.role == STATE and t.name.split("/")[0] not in self.fresh_state
        }
        recorded = {t.path: t.version for t in (latest.tables if latest else [])}
        for operator in self.operators.values():
            for role, path, _version, _schema in operator.tables().values():
                if role in ("state", "late"):
                    discard_uncommitted(path, recorded.get(str(path)))
        idle = set(logged.get("idle", [])) if (logged := self.offsets.read(self.last_epoch)) else set()
        for node_id, operator in self.operators.items():
            sources = self._operator_sources[node_id]
            operator.restore(versions, operator_watermark(self.watermarks, sources, idle) if latest else None)
        # Epochs after the checkpoint whose slices are logged are replayed, in order, before new ones are planned.
        self.last_checkpoint_epoch = self.last_epoch
        self.last_checkpoint_time = time.monotonic()
        self.policy = checkpoint_policy(
            self.plan.options.get("checkpoint.interval"), self.plan.options.get("checkpoint.state-growth")
        )
        self.state_bytes_at_checkpoint = self._state_bytes()
        self.retention = retention.policy_from_options(self.plan.options)
        self._checkpoints_since_retention = 0
        self._since_checkpoint: dict[str, Any] = {}

    # -- the loop ------------------------------------------------------------------------------
    def run(
        self,
        options: RunOptions,
        on_epoch: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Summary:
        summary = Summary(state=str(self.dir.root))
        started = time.perf_counter()
        for source in self.sources.values():
            source.end_of_input = options.drain
        if options.checkpoint_interval or options.checkpoint_state_growth:
            self.policy = checkpoint_policy(
                options.checkpoint_interval or self.plan.options.get("checkpoint.interval"),
                options.checkpoint_state_growth or self.plan.options.get("checkpoint.state-growth"),
            )
        self.retention = retention.policy_from_options(self.plan.options, options.retain_count, options.retain_age)
        try:
            while options.max_epochs is None or summary.epochs < options.max_epochs:
                if should_stop is not None and should_stop():
                    summary.stopped = "stopped"
                    break
                tick = time.perf_counter()
                self._lock.heartbeat()
                report = self.run_epoch(options.max_epoch_rows)
                if report is None and options.drain and not self.drained():
                    report = self.run_epoch(options.max_epoch_rows, drain=True)
                if report is None:
                    if options.once or options.drain:
                        break
                    time.sleep(max(0.0, options.trigger_seconds - (time.perf_counter() - tick)))
                    continue
                summary.add(report)
                if on_epoch is not None:
                    on_epoch(report)
                if not options.once:
                    time.sleep(max(0.0, options.trigger_seconds - (time.perf_counter() - tick)))
            else:
                summary.stopped = "max-epochs"
        except KeyboardInterrupt:
            summary.stopped = "interrupted"
        self.checkpoint()  # whatever ran since the last checkpoint becomes durable before the run ends
        summary.elapsed_s = time.perf_counter() - started
        if summary.last_epoch is None:
            summary.last_epoch = self.last_epoch or None
            summary.watermark = self._pipeline_watermark()
        return summary

    def drained(self) -> bool:
        """Whether every watermarked source is at the end of time already (a drain has nothing left to do)."""
        marks = [self.watermarks.get(n) for n, scan in self.scans.items() if scan.table.watermark is not None]
        if marks:
            return all(m is not None and m >= END_OF_TIME for m in marks)
        # No event time (processing-time windows only): drained when the last epoch was a drain.
        logged = self.offsets.read(self.last_epoch) if self.last_epoch else None
        return bool(logged and logged.get("drain"))

    def run_epoch(self, max_rows: int | None, drain: bool = False) -> EpochReport | None:
        """Run the next epoch; None when no source has anything new. A drain epoch reads nothing and moves
        every source's watermark to the end of time."""
        started = time.perf_counter()
        epoch = self.last_epoch + 1
        logged = self.offsets.read(epoch)
        if logged is not None:
            pieces: dict[str, dict[str, Any]] = logged["sources"]
            planned_at = dt.datetime.fromisoformat(logged["planned_at"])
            self.idle = set(logged.get("idle", []))
            dimensions = logged.get("dimensions", {})
            drain = bool(logged.get("drain", False))
        elif drain:
            pieces, planned_at, dimensions = {}, dt.datetime.now(dt.UTC), {}
            self.idle = set()
            self.offsets.write(epoch, {"planned_at": planned_at.isoformat(), "sources": {}, "idle": [], "drain": True})
            faults.point("epoch.offsets-logged")
        else:
            pieces = {}
            for name, source in self.sources.items():
                # A table may cap its own share of an epoch ('scan.max-epoch-rows'), e.g. to keep sources of
                # different rates aligned in event time.
                own = source.table.options.get("scan.max-epoch-rows")
                limit = min(int(own), max_rows) if own and max_rows else (int(own) if own else max_rows)
                piece = source.plan(limit)
                if piece is not None:
                    pieces[name] = piece
            planned_at = dt.datetime.now(dt.UTC)
            idle = self._idle_sources(pieces, planned_at.timestamp())
            # An epoch without rows still runs when timers are due: sources going idle move the watermark, or a
            # processing-time window reaches its end.
            timers_due = (
                idle != self.idle
                and self.operators
                and self._pipeline_watermark(idle) != (self._pipeline_watermark(self.idle))
            ) or any(getattr(op, "timer_due", lambda _: False)(planned_at) for op in self.operators.values())
            if not pieces and not timers_due:
                return None
            self.idle = idle
            dimensions = {
                op.node.state_id: version for op in self.operators.values() if (version := op.plan_epoch()) is not None
            }
            entry = {
                "planned_at": planned_at.isoformat(),
                "sources": pieces,
                "idle": sorted(idle),
                "dimensions": dimensions,
            }
            self.offsets.write(epoch, entry)
            faults.point("epoch.offsets-logged")
        for name in pieces:
            self.last_active[name] = planned_at.timestamp()

        batches = {name: self.sources[name].read(piece) for name, piece in pieces.items()}
        frames = {name: batches[name].rows if name in batches else s.empty() for name, s in self.sources.items()}
        late_before = {node_id: op.late_count for node_id, op in self.operators.items()}
        ctx = EpochContext(
            epoch,
            planned_at,
            frames,
            previous_watermarks=dict(self.watermarks),
            idle=frozenset(self.idle),
            drain=drain,
            operators=self.operators,
            dimension_versions=dimensions,
        )
        sink_names = list(self.sink_nodes)
        outputs = [node for name in sink_names for node in self.sink_nodes[name]]
        watermarked = {name: scan for name, scan in self.scans.items() if scan.table.watermark is not None}
        if self.operators:
            # Sources first: their rows fix the new watermarks, which decide what stateful operators fire.
            scans = pl.collect_all([run_scan(scan, [], ctx) for scan in self.scans.values()])
            ctx.scanned = dict(zip(self.scans, scans, strict=True))
            marks = [ctx.scanned[name].select(self._max_watermark(scan)) for name, scan in watermarked.items()]
            self._advance_watermarks(watermarked, marks, drain)
            ctx.source_watermarks = dict(self.watermarks)
            ctx.watermark = self._pipeline_watermark()
            results = pl.collect_all(evaluate(list(outputs), ctx))
        else:
            # Stateless: nothing waits for the watermark, so one Polars query computes sinks and watermarks.
            queries = evaluate(list(outputs), ctx)
            mark_queries = [run_scan(scan, [], ctx).select(self._max_watermark(scan)) for scan in watermarked.values()]
            collected = pl.collect_all(queries + mark_queries)
            results = collected[: len(queries)]
            self._advance_watermarks(watermarked, collected[len(queries) :], drain)
            ctx.watermark = self._pipeline_watermark()

        rows_out: dict[str, int] = {}
        position = 0
        for name in sink_names:
            count = len(self.sink_nodes[name])
            parts = results[position : position + count]
            position += count
            rows = parts[0] if count == 1 else pl.concat(parts)
            self.sinks[name].write(epoch, rows)
            rows_out[name] = rows.height

        dead_counts = self._write_dead_letters(epoch, batches)
        late_counts = {
            op.node.state_id: op.late_count - late_before[op.node.id]
            for op in self.operators.values()
            if op.late_count > late_before[op.node.id]
        }
        for name, piece in pieces.items():
            self.sources[name].advance(piece)
        self.last_epoch = epoch
        totals = self._since_checkpoint
        for key, counts in (
            ("rows_in", {n: b.rows.height for n, b in batches.items()}),
            ("rows_out", rows_out),
            ("dead_letters", dead_counts),
            ("late_rows", late_counts),
        ):
            bucket = totals.setdefault(key, {})
            for name, count in counts.items():
                bucket[name] = bucket.get(name, 0) + count
        if drain:
            totals["drain"] = epoch  # recorded with the checkpoint: `timelapse log` shows the drain
        totals["duration_ms"] = totals.get("duration_ms", 0.0) + round((time.perf_counter() - started) * 1000, 3)
        commit_started = time.perf_counter()
        policy = self.policy
        due = (
            (policy.every_epochs is not None and epoch - self.last_checkpoint_epoch >= policy.every_epochs)
            or (policy.seconds is not None and time.monotonic() - self.last_checkpoint_time >= policy.seconds)
            or (
                policy.growth_bytes is not None
                and abs(self._state_bytes() - self.state_bytes_at_checkpoint) >= policy.growth_bytes
            )
            or self.dir.checkpoint_request.exists()
        )
        if due:
            self.checkpoint()
        finished = time.perf_counter()
        return EpochReport(
            epoch=epoch,
            rows_in={n: b.rows.height for n, b in batches.items()},  # good rows only, as in the manifest's metrics
            rows_out=rows_out,
            dead_letters=dead_counts,
            late_rows=late_counts,
            watermark=ctx.watermark,
            duration_s=finished - started,
            commit_s=finished - commit_started,
            replayed=logged is not None,
            records_read={n: b.rows.height + b.dead_letters.height for n, b in batches.items()},
            drain=drain,
        )

    def checkpoint(self) -> None:
        """Make every epoch run so far durable: operator state, then the manifest row (the commit point)."""
        if self.last_epoch == self.last_checkpoint_epoch:
            return
        self._lock.check()  # fenced: a run whose lease was taken over must not commit
        state_rows: dict[str, int] = {}
        for operator in self.operators.values():
            operator.commit(self.last_epoch, self.pipeline_id)
            state_rows[operator.node.state_id] = operator.state_rows
        metrics = {
            **self._since_checkpoint,
            "parallelism": self.parallelism,
            **({"rescaled_from": self.previous_parallelism} if self.previous_parallelism != self.parallelism else {}),
            "state_rows": state_rows,
            "epochs": [self.last_checkpoint_epoch + 1, self.last_epoch],
        }
        self.manifest.commit(
            Checkpoint(
                epoch=self.last_epoch,
                source_offsets=self._positions(),
                watermark=self._pipeline_watermark(),
                tables=self._table_versions(),
                plan_fingerprint=self.plan.fingerprint,
                metrics=metrics,
                operators=self.operator_records,
            ),
            lease_token=self._lock.token,
        )
        self.last_checkpoint_epoch = self.last_epoch
        self.last_checkpoint_time = time.monotonic()
        self._since_checkpoint = {}
        self.state_bytes_at_checkpoint = self._state_bytes()
        self.previous_parallelism = self.parallelism
        self.dir.checkpoint_request.unlink(missing_ok=True)
        self._checkpoints_since_retention += 1
        if self._checkpoints_since_retention >= self.retention.every:
            self._checkpoints_since_retention = 0
            retention.apply(self.dir, self.retention, reason=f"automatic, every {self.retention.every} checkpoints")

    def _state_bytes(self) -> int:
        return sum(operator.state_bytes for operator in self.operators.values())

    def _write_dead_letters(self, epoch: int, batches: dict[str, Any]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, batch in batches.items():
            dead = batch.dead_letters
            if dead.height == 0:
                continue
            counts[name] = dead.height
            if name not in self.dead_tables:
                self.dead_tables[name] = AppendTable(
                    ensure_table(self.dir.dead_letters(name), DEAD_LETTER_TABLE_SCHEMA), "dead-letters.commit"
                )
            rows = dead.with_columns(pl.lit(epoch, dtype=pl.Int64).alias("epoch")).select(
                list(DEAD_LETTER_TABLE_SCHEMA)
            )
            self.dead_tables[name].append_once(rows, f"{self.pipeline_id}/dead_letters/{name}", epoch)
        return counts

    def _positions(self) -> dict[str, Any]:
        result = {}
        for name, source in self.sources.items():
            position = source.position
            wm = self.watermarks.get(name)
            result[name] = {
                "position": position,
                "watermark": wm.isoformat() if wm else None,
                "last_active": self.last_active.get(name),
            }
        return result

    @staticmethod
    def _max_watermark(scan: Scan) -> pl.Expr:
        assert scan.table.watermark is not None
        return scan.table.watermark.expr.max().alias("wm")

    def _advance_watermarks(self, scans: dict[str, Scan], marks: list[pl.DataFrame], drain: bool = False) -> None:
        """Source watermarks only move forward; a drain moves them to the end of time."""
        for name, frame in zip(scans, marks, strict=True):
            candidate = END_OF_TIME if drain else (frame.item() if frame.height else None)
            previous = self.watermarks.get(name)
            if candidate is not None and (previous is None or candidate > previous):
                self.watermarks[name] = candidate

    def _idle_sources(self, pieces: dict[str, Any], now: float) -> set[str]:
        """Sources silent for longer than their 'scan.watermark.idle-timeout': they stop holding the watermark."""
        return {
            name
            for name, timeout in self.idle_timeouts.items()
            if name not in pieces and now - self.last_active.get(name, self.started_at) >= timeout
        }

    def _pipeline_watermark(self, idle: set[str] | None = None) -> dt.datetime | None:
        """The minimum over the sources' watermarks, leaving out idle ones (unless all are idle)."""
        idle = self.idle if idle is None else idle
        sources = [name for name, scan in self.scans.items() if scan.table.watermark is not None]
        active = [name for name in sources if name not in idle] or sources
        marks = [self.watermarks.get(name) for name in active]
        if not marks or any(m is None for m in marks):
            return None
        return min(m for m in marks if m is not None)

    def _table_versions(self) -> list[TableEntry]:
        tables = [
            TableEntry(name, SINK, str(sink.path), version)
            for name, sink in self.sinks.items()
            if (version := sink.version()) is not None
        ]
        tables += [
            TableEntry(name, DEAD_LETTERS, str(self.dir.dead_letters(name)), t.version())
            for name, t in self.dead_tables.items()
        ]
        for operator in self.operators.values():
            ttl = getattr(operator.node, "ttl", None)
            shown = f"{ttl.duration.total_seconds():g} s {ttl.time} time" if ttl is not None else None
            for name, (role, path, version, schema) in operator.tables().items():
                tables.append(TableEntry(name, role, str(path), version, schema, shown if role == STATE else None))
        return tables
