"""Changelog-mode inference, one function per node kind: which rows a node emits, `append` (inserts only) or
`retract` (rows carry +I/-U/+U/-D in `__op`). The planner asks here when it builds the node; a sink that
is not keyed refuses `retract` (see statements.insert)."""

from __future__ import annotations

from sql.catalog import TableDef
from sql.kafka_options import CHANGELOG_FORMATS
from sql.plan import Node, Scan

#: `upsert`: a source's upserts (+U) and deletes (-D) by PRIMARY KEY, which only ChangelogNormalize consumes
APPEND, RETRACT, UPSERT = "append", "retract", "upsert"


def updating(*inputs: Node) -> bool:
    return any(node.changelog != APPEND for node in inputs)


def source(table: TableDef) -> str:
    """What a source table's Scan emits: a changelog format (debezium-json, canal-json) gives inserts, updates
    and deletes; the upsert-kafka connector gives upserts and deletes by key; any other source inserts."""
    connector = table.connector.strip().lower()
    if connector == "upsert-kafka":
        return UPSERT
    value_format = table.options.get("value.format") or table.options.get("format") or ""
    if connector in ("kafka", "filesystem") and value_format.strip().lower() in CHANGELOG_FORMATS:
        return RETRACT
    if connector == "delta" and table.options.get("read.change-data-feed", "").strip().lower() == "true":
        return RETRACT
    return APPEND


def origin(node: Node, lead: str = " (", tail: str = ")") -> str:
    """Where the updates in `node`'s rows come from, for messages: " (table 'cdc' is a changelog: format
    'debezium-json')"; '' when they come from an operator (an unbounded GROUP BY, an outer join, ...)."""
    sources = [n for n in node.walk() if isinstance(n, Scan) and n.changelog != APPEND]
    if not sources:
        return ""
    table = sources[0].table
    if sources[0].changelog == UPSERT:
        return f"{lead}table '{table.name}' is an upsert source: connector '{table.connector}'{tail}"
    if table.connector.strip().lower() == "delta":
        return f"{lead}table '{table.name}' is a changelog: a Delta change data feed{tail}"
    value_format = table.options.get("value.format") or table.options.get("format") or ""
    return f"{lead}table '{table.name}' is a changelog: format '{value_format}'{tail}"


def passthrough(child: Node) -> str:
    """Calc, WindowAssign, a sink's cast: row by row, so the input's mode."""
    return child.changelog


def union(left: Node, right: Node) -> str:
    return RETRACT if updating(left, right) else APPEND


def join(kind: str, lookup: bool, interval: bool, left: Node, right: Node) -> str:
    """A lookup join follows its stream side (the dimension is read as of each row). An interval join, or an
    inner join of two append-only inputs, only ever adds matches. Otherwise +I and -D rows: an outer side's padded
    row is retracted when the row gains its first partner and emitted again when it loses its last, and an
    updating input's retractions retract the joined rows."""
    if lookup:
        return left.changelog
    if interval or (kind == "INNER" and not updating(left, right)):
        return APPEND
    return RETRACT


def aggregate(windowed: bool) -> str:
    """A window's result is final once the watermark passes its end; an unbounded group's result changes."""
    return APPEND if windowed else RETRACT


def top_n(final: bool) -> str:
    """Keeping the first row by time, or a window's ranking (window Top-N), is final once the watermark passes
    it; any other ranking can change."""
    return APPEND if final else RETRACT


def over() -> str:
    """Each row is emitted once, when the watermark passes its time, with the aggregates up to it."""
    return APPEND
