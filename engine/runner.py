"""The epoch loop: plan and log offsets, read, run the operators, write the sinks, commit the manifest row.

Epoch N
  1. takes the slice logged for N if a crashed run left one (replay), or plans a new slice of every source
     and logs it durably (offset log) before reading anything;
  2. reads exactly that slice (bad records go to the source's dead-letter table);
  3. runs the operator graph as Polars queries;
  4. hands each sink its rows; at a checkpoint (every epoch by default, `checkpoint.interval`) each Delta sink
     commits the epochs it holds back in one append or MERGE, with the marker (pipeline/table, last epoch),
     leaving out the epochs the table already holds;
  5. at a checkpoint, commits the operators' state, then appends the manifest row: the commit point. A
     checkpoint the policy makes due is taken between two epochs and written while the next ones run
     (engine/checkpoints.py).
A crash anywhere before 5 replays the epochs since the last checkpoint from their logged slices; sinks that
already hold an epoch skip it. Hence exactly-once, whatever the instant of the crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from engine import branching, checkpoints, damage, encryption, faults, requests, retention, upgrade
from engine.checkpoint_policy import CheckpointSchedule, checkpoint_policy
from engine.checkpoints import SINK_POSITIONS
from engine.dead_letters import DeadLetters
from engine.dead_letters import marker as dead_letter_marker
from engine.epoch_report import EpochReport, Summary, add_checkpoint, add_epoch, carried_totals
from engine.errors import WorkerLost
from engine.manifest import SINK, STATE, Checkpoint, Manifest
from engine.offset_log import OffsetLog, PlannedEpoch
from engine.operators import budgeted, evaluate_epoch, stateful_operators
from engine.operators.base import OperatorSettings, StatefulOperator, StateStore
from engine.operators.context import EpochContext, operator_watermark
from engine.operators.spilled import MemoryBudget
from engine.sinks import SinkConnector, make_sink
from engine.sinks.kafka import refuse_parent_topics
from engine.sources import Source, lookup, make_source
from engine.state_dir import StateDir
from engine.state_store import discard_uncommitted
from engine.storage import absolute, location
from engine.watermarks import Watermarks
from sql import durations
from sql.catalog import TableDef
from sql.plan import Plan, Scan, Sink


@dataclass
class Evaluated:
    """What running an epoch's operators gave: the rows of every output node (in `Runner.outputs` order), the
    good rows and records read per source, dead letters per table, late rows per operator, the watermark."""

    results: list[pl.DataFrame]
    rows_in: dict[str, int]
    records_read: dict[str, int]
    dead_letters: dict[str, pl.DataFrame]
    late_rows: dict[str, int]
    watermark: dt.datetime | None


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


class Runner:
    #: whether a checkpoint the policy makes due is written while the next epochs run (engine/checkpoints.py);
    #: TIMELAPSE_INLINE_CHECKPOINTS=1 writes each before the next epoch, for comparison
    background_checkpoints = os.environ.get("TIMELAPSE_INLINE_CHECKPOINTS") != "1"

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
        self.dir = StateDir(absolute(location(state)))
        self.base_dir = base_dir
        self._lock = self.dir.lock()
        self._lease_guard = threading.Lock()  # the checkpoint thread's lease check beside the heartbeat
        self._writing: Future[checkpoints.Written] | None = None
        self._committed_once = False  # a checkpoint of this run has committed
        try:
            self._setup(allow_non_restored_state, parallelism)
        except BaseException:
            self._lock.close()  # so that a fallback (a rollback) can take the directory
            if getattr(self, "budget", None) is not None:
                self.budget.close()
            raise

    def _setup(self, allow_non_restored_state: bool, parallelism: int | None) -> None:
        plan, base_dir = self.plan, self.base_dir
        encryption.configure(plan)  # the keys of declared sensitive columns, before any table is read or written
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
        requests.record_plan(self.dir, plan)  # what this fingerprint runs, for readers without the SQL
        self.manifest = Manifest(self.dir.manifest)
        self.offsets = OffsetLog(self.dir.offsets)
        self.scans = {n.table.name: n for n in plan.nodes if isinstance(n, Scan)}
        self.sources: dict[str, Source] = {name: make_source(n.table, base_dir) for name, n in self.scans.items()}
        for name, source in self.sources.items():
            source.read_columns = self.plan.read_columns(name)
        # Tables with a dead-letter table: the sources, and the tables lookup joins read.
        self.dead_letter_names = sorted({*self.sources, *lookup.lookup_tables(plan)})
        self.sink_nodes: dict[str, list[Sink]] = {}
        for sink in plan.sinks:
            self.sink_nodes.setdefault(sink.table.name, []).append(sink)
        self.sinks: dict[str, SinkConnector] = {
            name: make_sink(self._own_table(nodes[0].table), base_dir, f"{self.pipeline_id}/{name}")
            for name, nodes in self.sink_nodes.items()
        }
        if (branch := branching.branch_info(self.dir.root)) is not None:
            refuse_parent_topics(self.sinks, location(branch["parent"]))
        for sink in self.sinks.values():
            sink.open()
        self.outputs = [node for nodes in self.sink_nodes.values() for node in nodes]
        latest = self.manifest.latest()
        # Cumulative counts since the directory was created, carried from the row the run resumes from.
        self.totals = carried_totals(latest.metrics.get("totals") if latest else None)
        self.upgrade: list[upgrade.Change] = []
        changed = latest is not None and latest.operators and latest.plan_fingerprint != plan.fingerprint
        if changed or (latest is not None and upgrade.layouts_differ(latest.operators, plan)):
            assert latest is not None
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
            for sid, descriptor in stateful_operators(plan).items()
        }
        settings = OperatorSettings(base_dir=base_dir, parallelism=self.parallelism)
        budget = plan.options.get("state.memory.budget")  # state beyond it waits on local disk
        self.budget = MemoryBudget(durations.parse_size(budget)) if budget else None
        self.operators: dict[str, StatefulOperator] = {
            node.id: budgeted(node, settings, self.budget) for node in plan.nodes if node.stateful
        }
        self._operator_sources = {n.id: n.upstream_watermarks for n in plan.nodes if n.stateful}
        self.watermarks = Watermarks(self.scans, started_at=time.time())
        self.last_epoch = 0
        self._checkpoint_requested = True  # until an epoch looked: the first checkpoint clears a stale request
        self._restore()

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception):  # a run ending on an error: that error is the one to report
                self.finish_checkpoint()
            for connector in [*self.sources.values(), *self.sinks.values()]:
                connector.close()
        finally:
            if self.budget is not None:
                self.budget.close()
            self._lock.close()

    def _own_table(self, table: TableDef) -> TableDef:
        """A branch writes its own copies of its parent's sink tables, whatever path the SQL names."""
        if "path" not in table.options or branching.branch_info(self.dir.root) is None:
            return table
        declared = location(table.options["path"])
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
                directories[state_id] = location(recorded[state_id].get("directory", default))
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
        marked += [(self.dir.dead_letters(n), dead_letter_marker(self.pipeline_id, n)) for n in self.dead_letter_names]
        if (replanned := damage.check_offsets(self.dir.offsets, self.last_epoch, marked)) is not None:
            self.repairs.append(replanned)
        # A sink is checked only where it is the table the manifest names, i.e. it holds this pipeline's markers:
        # a state directory copied or moved without its sinks writes them afresh where its SQL says.
        ours = {str(path) for path, app_id in marked if damage.held_epoch([(location(path), app_id)]) > 0}
        damage.check_files([t for t in (latest.tables if latest else []) if t.role != SINK or t.path in ours])
        sink_positions = latest.metrics.get(SINK_POSITIONS, {}) if latest else {}
        replaying = any(epoch > self.last_epoch for epoch in self.offsets.epochs())
        for name, sink in self.sinks.items():
            sink.restore(sink_positions.get(name), replaying)
        offsets = latest.source_offsets if latest else {}
        history = self.offsets.history(self.last_epoch)
        for name, source in self.sources.items():
            saved = offsets.get(name, {})
            source.restore(saved.get("position"), history.get(name, []))
            self.watermarks.restore(name, saved)
        self.dimensions_used = lookup.last_versions(self.offsets, self.last_epoch)
        self.dead_letters = DeadLetters(self.dir, self.pipeline_id, self.dead_letter_names)
        versions = {
            t.name: t.version
            for t in (latest.tables if latest else [])
            if t.role == STATE and t.name.split("/")[0] not in self.fresh_state
        }
        recorded = {t.path: t.version for t in (latest.tables if latest else [])}
        idle = set(logged.get("idle", [])) if (logged := self.offsets.read(self.last_epoch)) else set()
        self._open_operators(versions, recorded, idle, latest is not None)
        # Epochs after the checkpoint whose slices are logged are replayed, in order, before new ones are planned.
        policy = checkpoint_policy(
            self.plan.options.get("checkpoint.interval"), self.plan.options.get("checkpoint.state-growth")
        )
        self.schedule = CheckpointSchedule(policy, self.last_epoch, self._state_bytes())
        self.retention = retention.policy_from_options(self.plan.options)
        self._checkpoints_since_retention = 0
        self._since_checkpoint: dict[str, Any] = {}
        self.requested_by: str | None = None  # the user a served checkpoint request names
        self.pending_rollback: dict[str, Any] | None = None  # a rollback request the run ended for
        self.worker_lost: str | None = None  # a scaled-out run's worker died: why (engine/scaleout/)

    def _open_operators(
        self, versions: dict[str, int], recorded: dict[str, int], idle: set[str], restored: bool
    ) -> None:
        """Undo state commits no manifest row names, then load each operator's state at the checkpoint."""
        for node_id, operator in self.operators.items():
            store = StateStore(self.operator_dirs[operator.node.state_id], self.pipeline_id)
            for path in operator.table_paths(store):
                discard_uncommitted(path, recorded.get(str(path)))
            operator.open(store, versions, self._operator_watermark(node_id, idle) if restored else None)

    def _operator_watermark(self, node_id: str, idle: set[str]) -> dt.datetime | None:
        return operator_watermark(self.watermarks.marks, self._operator_sources[node_id], idle)

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
            source.once = options.once
        if options.checkpoint_interval or options.checkpoint_state_growth:
            self.schedule.policy = checkpoint_policy(
                options.checkpoint_interval or self.plan.options.get("checkpoint.interval"),
                options.checkpoint_state_growth or self.plan.options.get("checkpoint.state-growth"),
            )
        self.retention = retention.policy_from_options(self.plan.options, options.retain_count, options.retain_age)
        try:
            while options.max_epochs is None or summary.epochs < options.max_epochs:
                if should_stop is not None and should_stop():
                    summary.stopped = "stopped"
                    break
                if requests.serve(self):  # actions asked of this run (engine.control); a rollback ends the loop
                    summary.stopped = "rollback"
                    break
                tick = time.perf_counter()
                with self._lease_guard:
                    self._lock.heartbeat()
                report = self.run_epoch(options.max_epoch_rows)
                if report is None and options.drain and not self.drained():
                    report = self.run_epoch(options.max_epoch_rows, drain=True)
                if report is None:
                    if options.once or options.drain:
                        break
                    # Idle: the epochs run since the last checkpoint become durable now rather than when input
                    # comes back (an interval of N epochs, or of a time that is only checked when an epoch runs).
                    self.checkpoint()
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
        except WorkerLost as lost:  # the epoch is abandoned, uncommitted: the next runner replays it
            summary.stopped = "worker-lost"
            self.worker_lost = str(lost)
            summary.elapsed_s = time.perf_counter() - started
            return summary
        try:
            self.checkpoint()  # whatever ran since the last checkpoint becomes durable before the run ends
        except WorkerLost as lost:
            summary.stopped = "worker-lost"
            self.worker_lost = str(lost)
        summary.elapsed_s = time.perf_counter() - started
        if summary.last_epoch is None:
            summary.last_epoch = self.last_epoch or None
            summary.watermark = self.watermarks.pipeline()
        return summary

    def drained(self) -> bool:
        """Whether every watermarked source is at the end of time already (a drain has nothing left to do)."""
        if (at_end := self.watermarks.at_end_of_time()) is not None:
            return at_end
        # No event time (processing-time windows only): drained when the last epoch was a drain.
        logged = self.offsets.read(self.last_epoch) if self.last_epoch else None
        return bool(logged and logged.get("drain"))

    def run_epoch(self, max_rows: int | None, drain: bool = False) -> EpochReport | None:
        """Run the next epoch; None when no source has anything new. A drain epoch reads nothing and moves
        every source's watermark to the end of time."""
        started = time.perf_counter()
        self.finish_checkpoint(wait=False)  # a checkpoint written in the background: its error shows early
        epoch = self.last_epoch + 1
        logged = self.offsets.read(epoch)
        planned = PlannedEpoch.logged(logged) if logged is not None else self._plan(max_rows, drain)
        if planned is None:
            return None
        if logged is None:  # the slice is durable before anything is read: a replay reads the same
            self.offsets.write(epoch, planned.entry())
            faults.point("epoch.offsets-logged")
        self.watermarks.idle = planned.idle
        self.watermarks.active(planned.pieces, planned.at.timestamp())
        evaluated = self._evaluate(epoch, planned)
        rows_out = self._write_sinks(epoch, evaluated.results)
        counts = {
            "rows_in": evaluated.rows_in,  # good rows only, as in the manifest
            "rows_out": rows_out,
            "dead_letters": self.dead_letters.write(epoch, evaluated.dead_letters),
            "late_rows": evaluated.late_rows,
        }
        for name, piece in planned.pieces.items():
            self.sources[name].advance(piece)
        self.dimensions_used = {**self.dimensions_used, **planned.dimensions}
        self.last_epoch = epoch
        self._tally(counts, planned.drain and epoch, time.perf_counter() - started)
        commit_started = time.perf_counter()
        # One HEAD per epoch on an object store (exists() would also LIST the prefix when the file is absent).
        self._checkpoint_requested = self.dir.checkpoint_request.is_file()
        if self.schedule.due(epoch, self._state_bytes(), self._checkpoint_requested):
            self.checkpoint(background=True)
        finished = time.perf_counter()
        return EpochReport(
            epoch=epoch,
            **counts,
            watermark=evaluated.watermark,
            duration_s=finished - started,
            commit_s=finished - commit_started,
            replayed=logged is not None,
            records_read=evaluated.records_read,
            drain=planned.drain,
        )

    def _evaluate(self, epoch: int, planned: PlannedEpoch) -> Evaluated:
        """Read the epoch's slices and run every operator over them, in this process (the Ray executor,
        engine/scaleout/, spreads the same work over workers)."""
        batches = {name: self.sources[name].read(piece) for name, piece in planned.pieces.items()}
        frames = {name: batches[name].rows if name in batches else s.empty() for name, s in self.sources.items()}
        ctx = EpochContext(
            epoch,
            planned.at,
            frames,
            previous_watermarks=dict(self.watermarks.marks),
            idle=frozenset(planned.idle),
            drain=planned.drain,
            dimension_versions=planned.dimensions,
            previous_dimension_versions=self.dimensions_used,
        )
        late_before = {node_id: op.late_count for node_id, op in self.operators.items()}
        results = evaluate_epoch(self.scans, self.outputs, ctx, self.operators, self.watermarks)
        return Evaluated(
            results=results,
            rows_in={n: b.rows.height for n, b in batches.items()},
            records_read={n: b.rows.height + b.dead_letters.height for n, b in batches.items()},
            dead_letters={n: b.dead_letters for n, b in lookup.with_dead_letters(batches, ctx.dead_letters).items()},
            late_rows=self._late_rows(late_before),
            watermark=ctx.watermark,
        )

    def _idle_timers_due(self, idle: set[str], planned_at: dt.datetime) -> bool:
        return bool(
            idle != self.watermarks.idle
            and self.operators
            and self.watermarks.pipeline(idle) != self.watermarks.pipeline(self.watermarks.idle)
        ) or self._timers_due(planned_at)

    def _timers_due(self, now: dt.datetime) -> bool:
        return any(op.timer_due(now) for op in self.operators.values())

    def _plan(self, max_rows: int | None, drain: bool) -> PlannedEpoch | None:
        """A new epoch's slices; None when no source has rows and no timer is due."""
        if drain:
            return PlannedEpoch({}, dt.datetime.now(dt.UTC), set(), {}, drain=True)
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
        idle = self.watermarks.idle_sources(pieces, planned_at.timestamp())
        # An epoch without rows still runs when timers are due: sources going idle move the watermark, or a
        # processing-time window reaches its end.
        # Asked only when there is no input: on the Ray executor each question is a call to every worker.
        if not pieces and not self._idle_timers_due(idle, planned_at):
            return None
        dimensions = {
            op.node.state_id: version for op in self.operators.values() if (version := op.plan_epoch()) is not None
        }
        return PlannedEpoch(pieces, planned_at, idle, dimensions)

    def _write_sinks(self, epoch: int, results: list[pl.DataFrame]) -> dict[str, int]:
        """Append each sink's rows (those of all the INSERTs into it) with the epoch's marker."""
        rows_out: dict[str, int] = {}
        position = 0
        self._lock.check()  # a run that lost its lease writes no sink (one read of the lease per epoch)
        for name, nodes in self.sink_nodes.items():
            parts = results[position : position + len(nodes)]
            position += len(nodes)
            rows = parts[0] if len(parts) == 1 else pl.concat(parts)
            self.sinks[name].write(epoch, rows)
            rows_out[name] = rows.height
        return rows_out

    def _late_rows(self, before: dict[str, int]) -> dict[str, int]:
        return {
            op.node.state_id: op.late_count - before[node_id]
            for node_id, op in self.operators.items()
            if op.late_count > before[node_id]
        }

    def _tally(self, counts: dict[str, dict[str, int]], drain: int | bool, seconds: float) -> None:
        """Add an epoch's counts to those the next checkpoint records."""
        totals = self._since_checkpoint
        for key, per_name in counts.items():
            bucket = totals.setdefault(key, {})
            for name, count in per_name.items():
                bucket[name] = bucket.get(name, 0) + count
        if drain:
            totals["drain"] = drain  # recorded with the checkpoint: `timelapse log` shows the drain
        totals["duration_ms"] = totals.get("duration_ms", 0.0) + round(seconds * 1000, 3)
        add_epoch(self.totals, counts, seconds)

    def checkpoint(self, background: bool = False) -> None:
        """Make every epoch run so far durable: operator state, then the manifest row (the commit point).

        `background`: take the checkpoint now and write it while the next epochs run (engine/checkpoints.py);
        it is durable once `finish_checkpoint` has returned. A checkpoint someone asked for, or one that prunes
        history, is written before this returns."""
        self.finish_checkpoint()
        if self.last_epoch == self.schedule.epoch:
            return
        self._lock.check()  # sinks are read as they are: a run that lost its lease writes none
        # No lease check before the state commits: what they write counts only once the manifest row names it,
        # and the lease is checked just before that row.
        self._checkpoints_since_retention += 1
        prune = self._checkpoints_since_retention >= self.retention.every
        requested = self._checkpoint_requested
        metrics = {
            **self._since_checkpoint,
            "parallelism": self.parallelism,
            **({"rescaled_from": self.previous_parallelism} if self.previous_parallelism != self.parallelism else {}),
            **({"state_memory_bytes": self._memory_bytes()} if self.budget is not None else {}),
            "epochs": [self.schedule.epoch + 1, self.last_epoch],
            **({"requested_by": user} if (user := self._requested_by()) else {}),
        }
        taken = checkpoints.take(self, metrics)
        self.schedule.checkpointed(self.last_epoch, self._state_bytes())
        self._since_checkpoint = {}
        self.previous_parallelism = self.parallelism
        # The run's first checkpoint is written inline: a store that fails (a full disk, a missing permission)
        # fails it before the first epoch is reported, in one line.
        if background and self.background_checkpoints and self._committed_once and not (prune or requested):
            self._writing = checkpoints.start(self, taken, self._lease_guard)
            return
        self._committed(checkpoints.write(self, taken, self._lease_guard))
        if requested:  # answered; a request made since asks for the next one
            self.dir.checkpoint_request.unlink(missing_ok=True)
            self._checkpoint_requested = False
        if prune:
            self._checkpoints_since_retention = 0
            retention.apply(self.dir, self.retention, reason=f"automatic, every {self.retention.every} checkpoints")

    def finish_checkpoint(self, wait: bool = True) -> None:
        """Wait for the checkpoint written in the background, if one is (only if it is done: `wait=False`);
        its error, if it failed, is raised here."""
        writing = self._writing
        if writing is None or not (wait or writing.done()):
            return
        self._writing = None
        self._committed(writing.result())

    def _committed(self, written: checkpoints.Written) -> None:
        self._committed_once = True
        add_checkpoint(self.totals, written.seconds)
        for report in written.reports:
            report()

    def _detach_operators(self) -> tuple[list[Callable[[], None]], dict[str, int], dict[str, int]]:
        """Each operator's commit of its staged state as the last epoch, taken now; their live rows and bytes,
        by state id."""
        operators = list(self.operators.values())
        return (
            [op.detach(self.last_epoch) for op in operators],
            {op.node.state_id: op.state_rows for op in operators},
            {op.node.state_id: op.state_bytes for op in operators},
        )

    def _requested_by(self) -> str | None:
        """Who asked for this checkpoint (a request file's user, or a request served by `engine.requests`)."""
        user, self.requested_by = self.requested_by, None
        if user is None and self._checkpoint_requested:
            user = requests.checkpoint_requester(self.dir)
        return user

    def _memory_bytes(self) -> dict[str, int]:
        """Under a memory budget: the state each operator holds in memory (the rest waits on disk)."""
        return {op.node.state_id: getattr(op, "memory_bytes", op.state_bytes) for op in self.operators.values()}

    def _state_bytes(self) -> int:
        return sum(operator.state_bytes for operator in self.operators.values())

    def _positions(self) -> dict[str, Any]:
        result = {}
        for name, source in self.sources.items():
            position = source.position
            result[name] = {"position": position, **self.watermarks.position(name)}
        return result
