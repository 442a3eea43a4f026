"""Run one stateful operator in memory: planned from a tiny SQL script, fed batches and watermarks, no state
directory. The same evaluation path as the runner (`evaluate_epoch`): the sources' rows are scanned, the
watermarks advance, the operator fires; its output rows, its live state and its committed change log (an
in-memory StateTable) can be asserted, and a restore from the committed state replayed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from engine.operators import evaluate_epoch, stateful
from engine.operators.base import OperatorSettings, StatefulOperator, StateStore
from engine.operators.context import EpochContext
from engine.watermarks import Watermarks
from sql.plan import OP_COLUMN, Node, Scan
from sql.planner import plan_script

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """A timestamp `seconds` after the start of 2026 (UTC)."""
    return START + dt.timedelta(seconds=seconds)


def _source_schema(scan: Scan) -> dict[str, pl.DataType]:
    """What a source gives: its physical columns, and the row kind of a changelog source."""
    op = {OP_COLUMN: pl.String()} if OP_COLUMN in scan.schema else {}
    return {**scan.table.physical_schema, **op}


class OperatorHarness:
    """The stateful operator of kind `kind` planned from `sql` (the only one, or the last one upstream of the
    first sink), with every stateful operator upstream of it, all in memory."""

    def __init__(self, sql: str, kind: type[Node], parallelism: int = 1) -> None:
        plan = plan_script(sql)
        candidates = [n for n in plan.sinks[0].walk() if isinstance(n, kind)]
        assert candidates, f"the plan has no {kind.__name__}:\n{plan.explain()}"
        self.node = candidates[0]
        self.scans = {n.table.name: n for n in self.node.walk() if isinstance(n, Scan)}
        self.settings = OperatorSettings(parallelism=parallelism)
        self.operators = {n.id: stateful(n, self.settings) for n in self.node.walk() if n.stateful}
        for op in self.operators.values():
            op.open(StateStore(None), {}, None)
        self.watermarks = Watermarks(self.scans, started_at=0.0)
        self.epoch = 0

    @property
    def operator(self) -> StatefulOperator:
        return self.operators[self.node.id]

    def feed(
        self, proctime: dt.datetime | None = None, drain: bool = False, **rows: list[dict[str, Any]]
    ) -> pl.DataFrame:
        """One epoch: `rows` per source table (dicts of its physical columns); returns the operator's output."""
        self.epoch += 1
        frames = {
            name: pl.DataFrame(rows.get(name, []), schema=_source_schema(scan), orient="row")
            if rows.get(name)
            else pl.DataFrame(schema=_source_schema(scan))
            for name, scan in self.scans.items()
        }
        ctx = EpochContext(
            self.epoch,
            proctime or at(0),
            frames,
            previous_watermarks=dict(self.watermarks.marks),
            drain=drain,
        )
        (output,) = evaluate_epoch(self.scans, [self.node], ctx, self.operators, self.watermarks)
        return output

    def commit(self) -> None:
        """A checkpoint of every operator at the current epoch."""
        for op in self.operators.values():
            op.commit(self.epoch)

    def state(self, table: str = "") -> pl.DataFrame:
        """The operator's live state of one table (bookkeeping columns dropped)."""
        return self.operator.frames()[table].drop("_kg")

    def change_log(self, table: str = "") -> pl.DataFrame:
        """The rows the operator's checkpoints appended to one state table."""
        log = self.operator.state_tables[table].memory
        return pl.concat(log, how="vertical_relaxed") if log else pl.DataFrame()

    def late_rows(self, table: str = "late") -> pl.DataFrame:
        late = self.operator.late_tables[table]
        frames = [*late.memory, *late.pending]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def restored(self) -> StatefulOperator:
        """A new operator of the same node, restored from what the checkpoints committed."""
        copy = stateful(self.node, self.settings)
        copy.attach({**self.operator.state_tables, **self.operator.late_tables})
        versions = {
            spec.qualified(self.node.state_id): len(self.operator.state_tables[name].memory)
            for name, spec in copy.specs.items()
            if spec.role == "state"
        }
        copy.restore(versions, self.watermarks.pipeline())
        return copy
