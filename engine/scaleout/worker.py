"""A worker of a scaled-out run: one Ray actor (plain Python here, so it runs without Ray in tests too).

It plans the pipeline from the same SQL text as the coordinator (the planner is deterministic), opens its own
source connectors, and holds the live state of the key groups it owns, loaded from the state tables at the
checkpoint the coordinator names. Per epoch, driven by the coordinator:

1. `read`: its share of every source's slice (`Source.split`), scanned, with the maxima of the WATERMARK
   expressions over it (the coordinator computes the watermarks from every worker's);
2. `begin`: its rows' watermarks raised by the shares before it (`partitioning.watermark_offsets`), then the
   inputs of the first stage's stateful operators, cut by the owner of each row's key group: one part per worker;
3. `stage(k, parts)`: the parts every worker sent it, in worker order, through its stage-k operators; then the
   next stage's parts, or, after the last stage, its share of every sink's rows;
4. at a checkpoint, `staged`: the state changes and late rows staged since the last one, which the coordinator
   commits (it is the only writer of every Delta table).

Rows travel as Arrow tables through Ray's object store.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from engine import encryption, faults, python_functions
from engine.operators import OPERATORS, scan, stateful
from engine.operators.base import OperatorSettings, StatefulOperator
from engine.operators.context import EpochContext
from engine.operators.late import LateRows
from engine.scaleout.partitioning import Marks, owned_range, owner, stages
from engine.sources import Source, make_source
from engine.sources.base import SPLIT_COLUMN
from engine.state_store import StateTable
from engine.storage import Location, location
from engine.watermarks import maxima
from sql import ScalarUdf, plan_script
from sql.plan import WATERMARK_COLUMN, Node, Scan

WM_TYPE = pl.Datetime("ms", "UTC")


@dataclass
class WorkerSpec:
    """Everything a worker needs to start, sent by the coordinator."""

    sql: str
    udfs: dict[str, ScalarUdf] | None
    fingerprint: str
    base_dir: str
    state: str
    storage_options: dict[str, str] | None
    pipeline_id: str
    index: int
    count: int
    versions: dict[str, int]  # state table (manifest name) -> Delta version at the checkpoint
    operator_dirs: dict[str, str]  # state id -> directory
    watermarks: dict[str, dt.datetime | None]  # node id -> the operator's watermark at the checkpoint
    sources: dict[str, tuple[Any, list[dict[str, Any]]]]  # name -> (position, logged slices), as Source.restore
    crash: tuple[str, int] | None = None  # a fault point armed in this worker (crash tests)
    polars_threads: int | None = None


@dataclass
class _Epoch:
    ctx: EpochContext
    late_before: dict[str, int] = field(default_factory=dict)
    built: dict[str, pl.DataFrame] = field(default_factory=dict)  # stateful node id -> its output here
    #: seconds spent here: reading and scanning, cutting and receiving parts (the shuffle), the operators
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "shuffle": 0.0, "operators": 0.0})


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.index, self.count = spec.index, spec.count
        if spec.crash is not None:
            faults.arm(spec.crash[0], spec.crash[1])
        location(spec.state, options=spec.storage_options)  # the bucket's options, for every table in it
        plan = plan_script(spec.sql, spec.udfs, python_functions.loader(spec.base_dir))
        if plan.fingerprint != spec.fingerprint:
            raise RuntimeError("a worker planned the SQL differently from the coordinator")
        encryption.configure(plan)
        base_dir = Path(spec.base_dir)
        self.scans = {n.table.name: n for n in plan.nodes if isinstance(n, Scan)}
        self.watermarked = {name: n for name, n in self.scans.items() if n.table.watermark is not None}
        self.sources: dict[str, Source] = {name: make_source(n.table, base_dir) for name, n in self.scans.items()}
        for name, source in self.sources.items():
            source.read_columns = plan.read_columns(name)
            position, history = spec.sources.get(name, (None, []))
            source.restore(position, history)
        by_table: dict[str, list[Node]] = {}
        for sink in plan.sinks:
            by_table.setdefault(sink.table.name, []).append(sink)
        self.outputs = [node for nodes in by_table.values() for node in nodes]  # the coordinator's order
        self.stages = stages(self.outputs)
        lo, hi = owned_range(self.index, self.count)
        settings = OperatorSettings(base_dir=base_dir, worker=self.index, workers=self.count)
        self.operators: dict[str, StatefulOperator] = {}
        for node in plan.nodes:
            if node.stateful:
                operator = stateful(node, settings)
                # a Location: an object store's URI must not go through Path (s3://b/p would become s3:/b/p)
                self._open(operator, location(spec.operator_dirs[node.state_id]), lo, hi)  # type: ignore[attr-defined]
                self.operators[node.id] = operator
        self.epoch: _Epoch | None = None

    def _open(self, operator: StatefulOperator, directory: Path | Location, lo: int, hi: int) -> None:
        """The operator's tables as this worker sees them: state read at the checkpoint, rows of its key groups."""
        state_id = operator.node.state_id
        tables: dict[str, StateTable | LateRows] = {}
        for name, spec in operator.specs.items():
            app_id = f"{self.spec.pipeline_id}/{spec.qualified(state_id)}"
            if spec.role == "late":
                tables[name] = LateRows(None, app_id, spec.columns)  # collected here, appended by the coordinator
            else:
                kg = operator.state_key_group(name)
                owned = kg.is_between(lo, hi, closed="left")
                tables[name] = StateTable(
                    directory / spec.directory, spec.keys, spec.values, app_id, spec.key_types, owned
                )
        operator.attach(tables)
        operator.restore(self.spec.versions, self.spec.watermarks.get(operator.node.id))

    # -- an epoch ------------------------------------------------------------------------------
    def ready(self) -> int:
        """The worker's process id, once it has started (and loaded its state)."""
        return os.getpid()

    def read(self, common: dict[str, Any], share: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
        """Read and scan this worker's share; report counts, dead letters and the watermark maxima."""
        started = time.perf_counter()
        batches = {name: self.sources[name].read(piece) for name, piece in share.items() if piece is not None}
        frames = {name: batches[name].rows if name in batches else s.empty() for name, s in self.sources.items()}
        ctx = EpochContext(
            common["epoch"],
            common["proctime"],
            frames,
            previous_watermarks=common["previous"],
            idle=frozenset(common["idle"]),
            drain=common["drain"],
            dimension_versions=common["dimensions"],
            previous_dimension_versions=common["previous_dimensions"],
        )
        scanned = pl.collect_all([scan.run(node, [], ctx) for node in self.scans.values()])
        ctx.scanned = dict(zip(self.scans, scanned, strict=True))
        for name, piece in common["pieces"].items():  # every worker's sources follow the whole slice
            self.sources[name].advance(piece)
        self.epoch = _Epoch(ctx, {i: op.late_count for i, op in self.operators.items()})
        highest, per_split = maxima(self.watermarked, ctx.scanned)
        self.epoch.seconds["read"] += time.perf_counter() - started
        faults.point("worker.read")
        return {
            "highest": highest,
            "per_split": per_split,
            "rows_in": {n: b.rows.height for n, b in batches.items()},
            "records_read": {n: b.rows.height + b.dead_letters.height for n, b in batches.items()},
            "dead_letters": {n: b.dead_letters.to_arrow() for n, b in batches.items() if b.dead_letters.height},
        }

    def begin(
        self,
        offsets: tuple[Marks, dict[str, Marks]],
        source_watermarks: Marks,
        watermark: dt.datetime | None,
    ) -> Any:
        """Raise the rows' watermarks by the shares before this one; then the first stage's parts (or the
        sinks' rows of a plan without state)."""
        assert self.epoch is not None
        ctx = self.epoch.ctx
        ctx.source_watermarks, ctx.watermark = source_watermarks, watermark
        highest, per_split = offsets
        for name, frame in ctx.scanned.items():
            if WATERMARK_COLUMN not in frame.columns:
                continue
            if (mark := highest.get(name)) is not None:
                raised = pl.max_horizontal(pl.col(WATERMARK_COLUMN), pl.lit(mark, WM_TYPE))
                ctx.scanned[name] = frame.with_columns(raised.alias(WATERMARK_COLUMN))
            elif (marks := per_split.get(name)) and SPLIT_COLUMN in frame.columns:
                table = pl.DataFrame(
                    {SPLIT_COLUMN: list(marks), "__offset": list(marks.values())},
                    schema={SPLIT_COLUMN: pl.String(), "__offset": WM_TYPE},
                )
                joined = frame.join(table, on=SPLIT_COLUMN, how="left", maintain_order="left")
                raised = pl.max_horizontal(pl.col(WATERMARK_COLUMN), pl.col("__offset"))
                ctx.scanned[name] = joined.with_columns(raised.alias(WATERMARK_COLUMN)).drop("__offset")
        return self._next(0)

    def stage(self, level: int, parts: list[Any]) -> Any:
        """Run the stage-`level` operators over the parts every worker sent here (in worker order)."""
        assert self.epoch is not None
        started = time.perf_counter()
        if parts and not isinstance(parts[0], dict):  # Ray object references, resolved here
            import ray

            parts = ray.get(list(parts))
        received = time.perf_counter()
        self.epoch.seconds["shuffle"] += received - started
        for node in self.stages[level]:
            inputs = [
                pl.concat([pl.from_arrow(p[f"{node.id}/{i}"]) for p in parts], how="vertical_relaxed")  # type: ignore[misc]
                for i in range(len(node.inputs))
            ]
            own = self.epoch.ctx.for_operator(node.upstream_watermarks)
            self.epoch.built[node.id] = self.operators[node.id].process(inputs, own)  # type: ignore[arg-type]
        self.epoch.seconds["operators"] += time.perf_counter() - received
        faults.point("worker.processed")
        return self._next(level)

    def _next(self, level: int) -> Any:
        if level + 1 < len(self.stages):
            assert self.epoch is not None
            started = time.perf_counter()
            parts = self._shuffle(level + 1)
            self.epoch.seconds["shuffle"] += time.perf_counter() - started
            faults.point("worker.shuffled")
            return parts[0] if self.count == 1 else tuple(parts)
        return self._finish()

    def _build(self, node: Node, memo: dict[int, pl.LazyFrame]) -> pl.LazyFrame:
        """A node's rows here: stateful nodes' outputs of this epoch, stateless ones built lazily over them."""
        assert self.epoch is not None
        if id(node) not in memo:
            if node.stateful:
                memo[id(node)] = self.epoch.built[node.id].lazy()
            else:
                inputs = [self._build(child, memo) for child in node.inputs]
                memo[id(node)] = OPERATORS[type(node)](node, inputs, self.epoch.ctx)
        return memo[id(node)]

    def _shuffle(self, level: int) -> list[dict[str, pa.Table]]:
        """The inputs of the stage-`level` operators, one part per worker: the rows of its key groups."""
        memo: dict[int, pl.LazyFrame] = {}
        keys = [(node, i) for node in self.stages[level] for i in range(len(node.inputs))]
        frames = pl.collect_all([self._build(node.inputs[i], memo) for node, i in keys])
        parts: list[dict[str, pa.Table]] = [{} for _ in range(self.count)]
        for (node, i), frame in zip(keys, frames, strict=True):
            name = f"{node.id}/{i}"
            key_groups = self.operators[node.id].input_key_group(i)
            if key_groups is None or self.count == 1:  # stays here
                for d in range(self.count):
                    parts[d][name] = (frame if d == self.index else frame.head(0)).to_arrow()
                continue
            owned = frame.with_columns(owner(key_groups, self.count).alias("__owner"))
            split = owned.partition_by("__owner", as_dict=True, maintain_order=True, include_key=False)
            for d in range(self.count):
                parts[d][name] = split.get((d,), frame.head(0)).to_arrow()
        return parts

    def _finish(self) -> dict[str, Any]:
        """This worker's share of every output node's rows, and what the epoch did here."""
        assert self.epoch is not None
        memo: dict[int, pl.LazyFrame] = {}
        results = pl.collect_all([self._build(output, memo) for output in self.outputs])
        late = {
            op.node.state_id: op.late_count - self.epoch.late_before[i]
            for i, op in self.operators.items()
            if op.late_count > self.epoch.late_before[i]
        }
        return {
            "results": [frame.to_arrow() for frame in results],
            "late_rows": late,
            "dead_letters": {n: f.to_arrow() for n, f in self.epoch.ctx.dead_letters.items() if f.height},
            "state_bytes": sum(op.state_bytes for op in self.operators.values()),
            "seconds": self.epoch.seconds,
        }

    # -- checkpoints and timers --------------------------------------------------------------------
    def staged(self) -> dict[str, Any]:
        """Hand over the state changes and late rows staged since the last checkpoint, by table (manifest name)."""
        faults.point("worker.staged")
        changes: dict[str, pa.Table] = {}
        late: dict[str, pa.Table] = {}
        live: dict[str, int] = {}
        state_bytes: dict[str, int] = {}
        for operator in self.operators.values():
            state_id = operator.node.state_id
            rows = operator.live_rows()
            for name, table in operator.state_tables.items():
                qualified = operator.specs[name].qualified(state_id)
                live[qualified] = rows[name]
                if (frame := table.take_staged()) is not None:
                    changes[qualified] = frame.to_arrow()
            for name, rows_late in operator.late_tables.items():
                if rows_late.pending:
                    late[operator.specs[name].qualified(state_id)] = pl.concat(rows_late.pending).to_arrow()
                    rows_late.pending = []
            state_bytes[state_id] = operator.state_bytes
        return {"changes": changes, "late": late, "live": live, "state_bytes": state_bytes}

    def timer_due(self, now: dt.datetime) -> bool:
        return any(op.timer_due(now) for op in self.operators.values())

    def close(self) -> None:
        for source in self.sources.values():
            source.close()
