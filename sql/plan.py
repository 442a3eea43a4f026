"""The plan: a DAG of operators from sources to sinks, with Polars expressions inside.

The planner builds it; the engine executes it. Nodes are plain data: the engine maps each node type to the
operator module that runs it. `changelog` says what rows a node emits: `append` (inserts only) or `retract`
(rows carry a row kind in the hidden column `__op`: +I, -U, +U, -D).

Hidden columns start with `__` and never reach a sink: `__wm` is the watermark in force before each row
arrived (what decides whether the row is late), `__op` the row kind of an updating stream.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass, field

import polars as pl

from sql import types
from sql.catalog import TableDef
from sql.match_pattern import Pattern
from sql.match_pattern import text as pattern_text
from sql.udf import AggregateUdf

#: Keyed state is split into this many key groups (hash of the key); work is spread over workers by key group,
#: so it is also the most workers a keyed operator can use.
KEY_GROUPS = 128


@dataclass(eq=False)
class Node:
    id: str
    inputs: list[Node]
    schema: dict[str, pl.DataType]
    changelog: str = "append"
    stateful = False

    def describe(self) -> str:
        return self.id

    def walk(self) -> list[Node]:
        """This node and everything upstream of it, inputs first, each once."""
        seen: dict[int, Node] = {}

        def visit(node: Node) -> None:
            if id(node) in seen:
                return
            for child in node.inputs:
                visit(child)
            seen[id(node)] = node

        visit(self)
        return list(seen.values())

    @functools.cached_property
    def upstream_watermarks(self) -> tuple[str, ...]:
        """The source tables with a WATERMARK upstream of this node: its watermark is the minimum of theirs."""
        return tuple(
            sorted({n.table.name for n in self.walk() if isinstance(n, Scan) and n.table.watermark is not None})
        )


@dataclass(eq=False)
class Scan(Node):
    """Rows of one source table, with computed columns applied."""

    table: TableDef = field(kw_only=True)

    def describe(self) -> str:
        wm = f", watermark {self.table.watermark.sql}" if self.table.watermark else ""
        return f"Scan {self.table.name} [{self.table.connector}{wm}]"


@dataclass(eq=False)
class Calc(Node):
    """Filter then project: the stateless operator every SELECT compiles to."""

    projections: list[tuple[str, pl.Expr]] = field(kw_only=True)
    predicate: pl.Expr | None = field(default=None, kw_only=True)
    sql: str = field(default="", kw_only=True)

    def describe(self) -> str:
        return f"Calc {self.sql}" if self.sql else "Calc"


WATERMARK_COLUMN = "__wm"
OP_COLUMN = "__op"
INSERT, UPDATE_BEFORE, UPDATE_AFTER, DELETE = "+I", "-U", "+U", "-D"


@dataclass(frozen=True)
class WindowSpec:
    """A window over the event-time column `time_col`: TUMBLE, HOP, CUMULATE or SESSION."""

    kind: str
    time_col: str
    size: dt.timedelta | None = None  # TUMBLE, HOP, CUMULATE (the maximum size)
    slide: dt.timedelta | None = None  # HOP slide, CUMULATE step
    offset: dt.timedelta = dt.timedelta(0)
    gap: dt.timedelta | None = None  # SESSION
    partition_by: tuple[str, ...] = ()
    proctime: bool = False  # over a PROCTIME() attribute: windows close on the epochs' clock, not a watermark
    #: the input already carries window_start and window_end (the output of a window aggregation, or of a window
    #: TVF through a projection): a cascaded window aggregation groups by them instead of assigning windows
    attached: bool = False
    #: for attached windows: the input's columns holding window_start and window_end (renamed, as in Nexmark q5)
    start_col: str = "window_start"
    end_col: str = "window_end"

    @property
    def unassigned_session(self) -> bool:
        """A SESSION TVF in FROM: its windows exist only inside the aggregation that merges them."""
        return self.kind == "SESSION" and not self.attached

    def describe(self) -> str:
        if self.attached:
            plain = dataclasses.replace(self, attached=False, start_col="window_start", end_col="window_end")
            return f"windows of the input ({self.start_col}, {self.end_col}: {plain.describe()})"
        if self.proctime:
            return (
                WindowSpec(
                    self.kind, self.time_col, self.size, self.slide, self.offset, self.gap, self.partition_by
                ).describe()
                + " [processing time]"
            )
        if self.kind == "SESSION":
            return f"SESSION({self.time_col}, gap {self.gap})"
        if self.kind == "TUMBLE":
            return f"TUMBLE({self.time_col}, {self.size})"
        step = "slide" if self.kind == "HOP" else "step"
        return f"{self.kind}({self.time_col}, {step} {self.slide}, size {self.size})"


@dataclass(eq=False)
class WindowAssign(Node):
    """TUMBLE, HOP or CUMULATE without aggregation: adds window_start, window_end, window_time. Stateless."""

    window: WindowSpec = field(kw_only=True)

    def describe(self) -> str:
        return f"WindowAssign {self.window.describe()}"


@dataclass(frozen=True)
class StateTtl:
    """How long an unused state row is kept: by processing time (epoch clock) or event time (watermark)."""

    duration: dt.timedelta
    time: str = "processing"  # processing | event

    def describe(self) -> str:
        return f"TTL {self.duration} ({self.time} time)"


@dataclass(frozen=True)
class AggCall:
    """One aggregate: `function(args) [FILTER (WHERE filter)]`, its result column and type."""

    function: str  # COUNT, SUM, AVG, MIN, MAX, or a UDAF's name (then `udaf` holds it)
    args: tuple[pl.Expr, ...]
    arg_types: tuple[pl.DataType, ...]
    output: str
    dtype: pl.DataType
    distinct: bool = False
    filter: pl.Expr | None = None
    sql: str = ""
    #: the Python aggregate itself, not its name: a plan runs wherever it is sent, without a registry there, and
    #: a UDAF registered under the same name after planning does not change it. Not part of equality (callables).
    udaf: AggregateUdf | None = field(default=None, compare=False)


@dataclass(eq=False)
class Aggregate(Node):
    """GROUP BY, over a window or unbounded, with HAVING and the SELECT list computed from keys and aggregates.

    `keys` are computed from the input; `aggs` produce their `output` columns; `projections` and `having`
    see the key and aggregate columns (and window_start/window_end/window_time for windows).
    """

    keys: list[tuple[str, pl.Expr]] = field(kw_only=True)
    aggs: list[AggCall] = field(kw_only=True)
    projections: list[tuple[str, pl.Expr]] = field(kw_only=True)
    having: pl.Expr | None = field(default=None, kw_only=True)
    window: WindowSpec | None = field(default=None, kw_only=True)
    ttl: StateTtl | None = field(default=None, kw_only=True)
    state_id: str = field(kw_only=True)
    sql: str = field(default="", kw_only=True)
    stateful = True

    def describe(self) -> str:
        keys = ", ".join(name for name, _ in self.keys) or "()"
        aggs = ", ".join(a.sql for a in self.aggs)
        kind = f"WindowAggregate {self.window.describe()}" if self.window else "GroupAggregate"
        ttl = f" {self.ttl.describe()}" if self.ttl else ""
        return f"{kind} [{self.state_id}] keys ({keys}) aggs ({aggs}){ttl}"


@dataclass(frozen=True)
class TimeBound:
    """One bound of an interval join's condition: `right - left <op> constant` (op `>=` or `<=`), on input columns."""

    left: str
    right: str
    op: str
    constant: dt.timedelta


@dataclass(frozen=True)
class TimeBounds:
    """An interval join's condition on time, and when each side's rows leave the state.

    `left_time`/`right_time` are the time attributes: a row behind its input's watermark by them is late. A left
    row matches only right rows with right_time <= left[left_until] + upper, so it leaves once the watermark passes
    that; a right row matches only left rows with left_time <= right[right_until] - lower. In the classic form
    (right_time - left_time in [lower, upper]) `left_until` is left_time and `right_until` right_time; in the
    column-bounded one (q4's `B.dateTime BETWEEN A.dateTime AND A.expires`) one of them is another column.
    `conditions` (every bound of the ON clause) filters the pairs; empty: the classic form's two bounds.
    """

    left_time: str
    right_time: str
    lower: dt.timedelta
    upper: dt.timedelta
    left_until: str = ""
    right_until: str = ""
    conditions: tuple[TimeBound, ...] = ()

    @property
    def left_bound(self) -> str:
        return self.left_until or self.left_time

    @property
    def right_bound(self) -> str:
        return self.right_until or self.right_time

    @property
    def column_bounded(self) -> bool:
        return self.left_bound != self.left_time or self.right_bound != self.right_time

    def all_conditions(self) -> tuple[TimeBound, ...]:
        if self.conditions:
            return self.conditions
        return (
            TimeBound(self.left_time, self.right_time, ">=", self.lower),
            TimeBound(self.left_time, self.right_time, "<=", self.upper),
        )

    def describe(self, right_names: dict[str, str]) -> str:
        """The bounds in the join's output names (a right column clashing with a left one is renamed)."""
        r_time, r_bound = right_names.get(self.right_time, self.right_time), right_names.get(self.right_bound, "")
        if not self.column_bounded:
            return f"time {r_time} - {self.left_time} in [{self.lower}, {self.upper}]"
        return (
            f"time {self.left_time} <= {r_bound or self.right_bound} - ({self.lower}), "
            f"{r_time} <= {self.left_bound} + ({self.upper})"
        )


@dataclass(eq=False)
class Join(Node):
    """An equi-join of two inputs: regular, interval (with time bounds) or lookup (the right side a dimension).

    Key expressions are evaluated on each input's own columns; `residual` (INNER only) on the joined row.
    `left_names`/`right_names` map each input column to its name in the output.
    """

    kind: str = field(kw_only=True)  # INNER, LEFT, RIGHT, FULL
    left_keys: list[pl.Expr] = field(kw_only=True)
    right_keys: list[pl.Expr] = field(kw_only=True)
    left_names: dict[str, str] = field(kw_only=True)
    right_names: dict[str, str] = field(kw_only=True)
    residual: pl.Expr | None = field(default=None, kw_only=True)
    bounds: TimeBounds | None = field(default=None, kw_only=True)
    lookup: bool = field(default=False, kw_only=True)
    dimension: TableDef | None = field(default=None, kw_only=True)  # the right side of a lookup join
    ttl: StateTtl | None = field(default=None, kw_only=True)
    # A window join (window_end = window_end between two windowed inputs): (left column, right input column).
    # A row leaves the state once the watermark passes its window's end: no later row can share the window.
    window_ends: tuple[str, str] | None = field(default=None, kw_only=True)
    state_id: str = field(kw_only=True)
    sql: str = field(default="", kw_only=True)
    stateful = True

    def describe(self) -> str:
        flavour = (
            "LookupJoin"
            if self.lookup
            else "IntervalJoin"
            if self.bounds
            else "WindowJoin"
            if self.window_ends
            else "Join"
        )
        extra = ""
        if self.bounds:
            extra = f" {self.bounds.describe(self.right_names)}"
        if self.ttl:
            extra += f" {self.ttl.describe()}"
        return f"{flavour} {self.kind} [{self.state_id}] on {self.sql}{extra}"


@dataclass(eq=False)
class TemporalJoin(Node):
    """An event-time temporal join (`JOIN versioned FOR SYSTEM_TIME AS OF probe.rowtime`): each probe row (input
    0) joins the version of the versioned table's row (input 1, keyed by its PRIMARY KEY) in force at the probe
    row's time, once the watermark passes that time. Append-only. `left_keys` are evaluated on the probe rows and
    equal the versioned input's `right_keys` (its primary key columns, in order); `left_time` and `right_time`
    are the two inputs' time attributes; `residual` (other ON conditions) is evaluated on the joined row."""

    kind: str = field(kw_only=True)  # INNER, LEFT
    left_keys: list[pl.Expr] = field(kw_only=True)
    right_keys: list[str] = field(kw_only=True)
    left_names: dict[str, str] = field(kw_only=True)
    right_names: dict[str, str] = field(kw_only=True)
    left_time: str = field(kw_only=True)
    right_time: str = field(kw_only=True)
    residual: pl.Expr | None = field(default=None, kw_only=True)
    ttl: StateTtl | None = field(default=None, kw_only=True)
    versioned: str = field(kw_only=True)  # the versioned table's name
    state_id: str = field(kw_only=True)
    sql: str = field(default="", kw_only=True)
    stateful = True

    def describe(self) -> str:
        ttl = f" {self.ttl.describe()}" if self.ttl else ""
        return (
            f"TemporalJoin {self.kind} [{self.state_id}] on {self.sql} as of {self.left_time}, versions of "
            f"{self.versioned} by {self.right_time}{ttl}"
        )


@dataclass(eq=False)
class TopN(Node):
    """`ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) AS rn ... WHERE rn <= n`: the first n rows per partition.

    `partition` and `order` name columns of the input (hidden `__p*`/`__o*` columns computed below it).
    `first_by_time`: n = 1 ordered ascending by a time attribute: the row is final once the watermark passes
    its time, so the output is append-only (deduplication keeping the first row).
    `window_end`: window Top-N (or window deduplication): PARTITION BY holds window_start and window_end of a
    windowed input; this names the partition column holding window_end. Each window's top n is final once the
    watermark passes its end: emitted then, append-only, and the window leaves the state.
    `ttl`: a partition whose state has not changed for the TTL leaves the state (not for window Top-N).
    """

    partition: list[str] = field(kw_only=True)
    order: list[tuple[str, bool]] = field(kw_only=True)  # (column, descending)
    limit: int = field(kw_only=True)
    rank_column: str | None = field(default=None, kw_only=True)
    first_by_time: bool = field(default=False, kw_only=True)
    window_end: str | None = field(default=None, kw_only=True)
    ttl: StateTtl | None = field(default=None, kw_only=True)
    state_id: str = field(kw_only=True)
    sql: str = field(default="", kw_only=True)
    stateful = True

    def describe(self) -> str:
        what = "Deduplicate keep first" if self.first_by_time else f"TopN {self.limit}"
        if self.window_end is not None:
            what = f"Window {'Deduplicate' if self.limit == 1 else f'TopN {self.limit}'}"
        ttl = f" {self.ttl.describe()}" if self.ttl else ""
        return f"{what} [{self.state_id}] partition ({', '.join(self.partition)}) order ({self.sql}){ttl}"


@dataclass(eq=False)
class OverAggregate(Node):
    """`agg(x) OVER (PARTITION BY p ORDER BY t ROWS|RANGE BETWEEN ... PRECEDING AND CURRENT ROW)`.

    One output row per input row, emitted in event-time order once the watermark passes the row's time.
    Partition and time are hidden input columns (`__p*`, `__o0`); each aggregate writes `call.output`.
    `rows` (ROWS n PRECEDING), `range` (RANGE INTERVAL PRECEDING), or neither (UNBOUNDED PRECEDING).
    """

    partition: list[str] = field(kw_only=True)
    time: str = field(kw_only=True)
    aggs: list[AggCall] = field(kw_only=True)
    rows: int | None = field(default=None, kw_only=True)
    range: dt.timedelta | None = field(default=None, kw_only=True)
    frame_kind: str = field(default="ROWS", kw_only=True)
    state_id: str = field(kw_only=True)
    sql: str = field(default="", kw_only=True)
    stateful = True

    def describe(self) -> str:
        frame = (
            f"ROWS {self.rows} PRECEDING"
            if self.rows is not None
            else f"RANGE {self.range} PRECEDING"
            if self.range is not None
            else f"{self.frame_kind} UNBOUNDED"
        )
        return f"OverAggregate [{self.state_id}] {frame} aggs ({', '.join(a.sql for a in self.aggs)})"


@dataclass(eq=False)
class ChangelogNormalize(Node):
    """After the Scan of an upsert source (upsert-kafka): the last row of each PRIMARY KEY, kept in state, turns
    the source's upserts (+U) and deletes (-D) into a changelog: +I for a new key, -U/+U for a changed row, -D
    for a deleted key; an unchanged upsert and the delete of an unknown key emit nothing (Flink's
    ChangelogNormalize)."""

    keys: list[str] = field(kw_only=True)
    state_id: str = field(kw_only=True)
    stateful = True

    def describe(self) -> str:
        return f"ChangelogNormalize [{self.state_id}] key ({', '.join(self.keys)})"


@dataclass(frozen=True)
class Navigation:
    """One value a MATCH_RECOGNIZE expression reads from the rows of a (partial) match, as a column `__navN`.

    `kind`: LAST / FIRST (the `offset`-th row from the end / start of the rows bound to `var`, None: every row of
    the match; `LAST(x, 0)` is the current row in DEFINE, the last row in MEASURES), PREV (`offset` rows before
    the last row bound to `var`, within the match), COUNT / SUM / AVG / MIN / MAX over `column` of the rows
    bound to `var`, or MATCH_ROWTIME (the time of the match's last row)."""

    kind: str
    var: str | None
    column: str | None
    offset: int
    dtype: pl.DataType


@dataclass(eq=False)
class MatchRecognize(Node):
    """`MATCH_RECOGNIZE (PARTITION BY .. ORDER BY time MEASURES .. ONE ROW PER MATCH AFTER MATCH SKIP ..
    PATTERN (..) WITHIN .. DEFINE ..)`: rows wait until the watermark passes them, then are matched in event-time
    order per partition (ties by arrival); one row per match, append-only.

    `defines` (per variable) and `measures` are Polars expressions over `__navN` columns: `navigations[N]`
    says what each holds. A variable without DEFINE matches every row."""

    partition: list[str] = field(kw_only=True)
    time: str = field(kw_only=True)
    pattern: Pattern = field(kw_only=True)
    navigations: list[Navigation] = field(kw_only=True)
    defines: dict[str, pl.Expr] = field(kw_only=True)
    measures: list[tuple[str, pl.Expr]] = field(kw_only=True)
    after: str = field(kw_only=True)  # PAST LAST ROW | TO NEXT ROW | TO FIRST <var> | TO LAST <var>
    within: dt.timedelta | None = field(default=None, kw_only=True)
    state_id: str = field(kw_only=True)
    sql: str = field(default="", kw_only=True)
    stateful = True

    def describe(self) -> str:
        within = f" WITHIN {self.within}" if self.within else ""
        return (
            f"MatchRecognize [{self.state_id}] partition ({', '.join(self.partition)}) order ({self.time}) "
            f"pattern ({pattern_text(self.pattern)}){within} skip {self.after}"
        )


@dataclass(eq=False)
class UnionAll(Node):
    def describe(self) -> str:
        return f"UnionAll ({len(self.inputs)} inputs)"


@dataclass(eq=False)
class Unnest(Node):
    """`CROSS JOIN UNNEST(value) AS t (...)`: each input row once per element of the ARRAY (or entry of the MAP)
    `value`, with the element (or its ROW fields, or the entry's key and value) as `names`. Stateless, row by
    row: a row kind passes through (an updating input's -U row retracts each row it expanded to)."""

    value: pl.Expr = field(kw_only=True)
    names: list[str] = field(kw_only=True)
    fields: list[str] | None = field(default=None, kw_only=True)  # the element's ROW fields, when expanded
    ordinality: str | None = field(default=None, kw_only=True)  # WITH ORDINALITY: the position's column (from 1)
    keep_empty: bool = field(default=False, kw_only=True)  # LEFT JOIN ... ON TRUE: an empty one gives NULLs
    sql: str = field(default="", kw_only=True)

    def describe(self) -> str:
        return f"Unnest {self.sql}" + (" (left)" if self.keep_empty else "")


@dataclass(eq=False)
class Sink(Node):
    table: TableDef = field(kw_only=True)

    def describe(self) -> str:
        cols = ", ".join(f"{n} {types.sql_name(t)}" for n, t in self.schema.items() if not n.startswith("__"))
        return f"Sink {self.table.name} [{self.table.connector}] ({cols})"


@dataclass
class Plan:
    tables: dict[str, TableDef]
    sinks: list[Sink]
    options: dict[str, str]
    fingerprint: str

    @property
    def nodes(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for sink in self.sinks:
            for node in sink.walk():
                seen.setdefault(id(node), node)
        return list(seen.values())

    @property
    def sources(self) -> dict[str, TableDef]:
        return {n.table.name: n.table for n in self.nodes if isinstance(n, Scan)}

    def read_columns(self, table: str) -> set[str] | None:
        """The stored columns of source `table` the plan reads, where that is known: every reader of its rows is
        a Calc (a projection and filter), so the columns are those its expressions name, with what computed
        columns and the WATERMARK are computed from. None: every column (another operator reads the rows, or an
        expression names columns by pattern). A connector may leave the others unread (Parquet's projection)."""
        scans = [n for n in self.nodes if isinstance(n, Scan) and n.table.name == table]
        readers = [n for n in self.nodes if any(i in scans for i in n.inputs)]
        if not scans or not readers or not all(isinstance(n, Calc) for n in readers):
            return None
        definition = scans[0].table
        exprs = [e for n in readers for e in (*(e for _, e in n.projections), n.predicate) if e is not None]  # type: ignore[attr-defined]
        exprs += [c.computed for c in definition.computed if c.computed is not None]
        if definition.watermark is not None:
            exprs.append(definition.watermark.expr)
        if any(e.meta.has_multiple_outputs() or e.meta.is_regex_projection() for e in exprs):
            return None
        named = {name for e in exprs for name in e.meta.root_names()}
        return {name for name in definition.physical_schema if name in named}

    def stateful_operators(self) -> dict[str, dict[str, object]]:
        """Every stateful operator by state id: what its state means (see `state_descriptor`), and the sinks
        it feeds. An upgrade compares these with the ones recorded when the state was written."""
        from sql.state_descriptors import state_descriptor as describe_state  # (it imports the node types)

        operators: dict[str, dict[str, object]] = {}
        for sink in self.sinks:
            for node in sink.walk():
                if node.stateful:
                    entry = operators.setdefault(node.state_id, describe_state(node))  # type: ignore[attr-defined]
                    sinks = entry.setdefault("sinks", [])
                    assert isinstance(sinks, list)
                    if sink.table.name not in sinks:
                        sinks.append(sink.table.name)
        return operators

    def graph(self) -> dict[str, object]:
        """The plan as data, for readers without the SQL (the console draws it): every node once, inputs first,
        with what `explain` prints for it. Ids are the planner's, made unique (two INSERTs into one sink)."""
        names: dict[int, str] = {}
        for node in self.nodes:
            name, n = node.id, 1
            while name in names.values():
                n += 1
                name = f"{node.id}#{n}"
            names[id(node)] = name
        return {
            "fingerprint": self.fingerprint,
            "nodes": [
                {
                    "id": names[id(node)],
                    "kind": type(node).__name__.lower(),
                    "label": node.describe(),
                    "stateful": node.stateful,
                    "state_id": getattr(node, "state_id", None) if node.stateful else None,
                    "changelog": node.changelog,
                    "inputs": [names[id(child)] for child in node.inputs],
                }
                for node in self.nodes
            ],
        }

    def explain(self) -> str:
        lines: list[str] = []

        def render(node: Node, prefix: str, last: bool, root: bool) -> None:
            kind = "stateful" if node.stateful else "stateless"
            connector = "" if root else ("└─ " if last else "├─ ")
            lines.append(f"{prefix}{connector}{node.describe()}  ({kind}, {node.changelog})")
            child_prefix = prefix + ("" if root else ("   " if last else "│  "))
            for i, child in enumerate(node.inputs):
                render(child, child_prefix, i == len(node.inputs) - 1, False)

        for sink in self.sinks:
            render(sink, "", True, True)
        return "\n".join(lines)
