"""The changelog formats: 'debezium-json' and 'canal-json'. Each message is one change of a database table;
its rows enter the plan with their row kind in `__op` (+I, -U, +U, -D).

debezium-json: {"before": {...}, "after": {...}, "op": "c|r|u|d", ...} (inside {"schema": ..., "payload": ...}
with 'debezium-json.schema-include' = 'true'). c and r give +I(after); u gives -U(before) then +U(after);
d gives -D(before). A message without a value or with an empty one (the Kafka tombstone after a delete) is
skipped, as in Flink.
Written as Flink writes it: +I and +U as {"before": null, "after": row, "op": "c"}, -U and -D as
{"before": row, "after": null, "op": "d"}.

canal-json: {"data": [...], "old": [...], "type": "INSERT|UPDATE|DELETE", "database": ..., "table": ...}; one
message can hold several rows. An UPDATE's `old[i]` holds the previous values of the fields that changed in
`data[i]` (a field NULL or absent there did not change, as in Flink). 'canal-json.database.include' and
'canal-json.table.include' (regular expressions matching the whole name) skip other tables' messages (a message
without the name is a dead letter); a CREATE message (a DDL change) is skipped, as in Flink. Written as Flink
writes it: {"data": [row], "type": "INSERT"} for +I and +U, {"data": [row], "type": "DELETE"} for -U and -D.

Anything else (malformed JSON, an unknown op or type, a missing before/after/data, a value of the wrong type)
is a dead letter saying which. The envelope is read one message at a time with the JSON rules of
engine.sources.json_lines (`loads`); the column values are typed in one vectorised pass, and a message whose
rows cannot all be read gives no row at all (never half an update).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from engine.formats.base import Decoded, Format, FormatError, dead, index, merge, timestamp_standard, typed, utf8
from engine.formats.json import json_ready, unquote_numbers
from engine.sources.json_lines import _needs_exact_path, as_text, loads, quote_decimals
from sql.plan import DELETE, INSERT, OP_COLUMN, UPDATE_AFTER, UPDATE_BEFORE

ADDS = (INSERT, UPDATE_AFTER)


class ChangelogJson(Format):
    changelog = True

    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        super().__init__(columns, options)
        self.standard = timestamp_standard(self.options)

    def decode(self, values: pl.Series, required: tuple[str, ...] = ()) -> Decoded:
        values = values.cast(pl.Binary)
        text = utf8(values)
        records = index(len(values))
        # a NULL or empty value (Kafka's tombstone after a delete) is skipped, not a dead letter, as in Flink
        present = values.is_not_null() & (values.bin.size() > 0)
        invalid = present & text.is_null()
        lines = quote_decimals(text.filter(present & ~invalid), self.columns)
        schema = {**{n: pl.String for n in self.columns}, OP_COLUMN: pl.String, "\x00record": pl.Int64}
        problems: list[tuple[int, str]] = [(r, "the record is not valid UTF-8") for r in records.filter(invalid)]
        fast = self.vectorised(lines, records.filter(present & ~invalid))
        frame = fast if fast is not None else self.exact(lines, records.filter(present & ~invalid), problems, schema)
        decoded = typed(
            frame.drop("\x00record"),
            frame.get_column("\x00record"),
            self.columns,
            required,
            self.flag("ignore-parse-errors"),
            keep=(OP_COLUMN,),
        )
        decoded = _whole_messages(decoded, frame.get_column("\x00record"))
        unreadable = dead(
            pl.Series([r for r, _ in problems], dtype=pl.Int64), pl.Series([p for _, p in problems], dtype=pl.String)
        )
        out = merge([decoded], [unreadable], {**self.columns, OP_COLUMN: pl.String()})
        out.dead = out.dead.group_by("record", maintain_order=True).agg(pl.col("reason").str.join("; "))
        return out

    def vectorised(self, lines: pl.Series, records: pl.Series) -> pl.DataFrame | None:
        """The rows of a batch read in one vectorised pass, when every message is sure to read there as on the
        exact path; None sends the batch to the exact path."""
        return None

    def exact(
        self, lines: pl.Series, records: pl.Series, problems: list[tuple[int, str]], schema: dict[str, Any]
    ) -> pl.DataFrame:
        """The rows of a batch read one message at a time with `loads`; what cannot be read goes to `problems`."""
        rows: list[dict[str, str | None]] = []
        for record, line in zip(records.to_list(), lines.to_list(), strict=True):
            try:
                message = loads(line)
            except ValueError as err:
                problems.append((record, f"malformed JSON: {err}"))
                continue
            if not isinstance(message, dict):
                problems.append((record, "malformed JSON: the message is not a JSON object"))
                continue
            reason = self.changes(message, record, rows)
            if reason is not None:
                problems.append((record, reason))
        return pl.DataFrame(rows, schema=schema)

    def changes(self, message: dict[str, Any], record: int, rows: list[dict[str, str | None]]) -> str | None:
        """Append the message's rows (texts, with __op and the record) to `rows`; or say why it cannot be read."""
        raise NotImplementedError

    def row(self, values: dict[str, Any], op: str, record: int) -> dict[str, str | None]:
        return {**{n: as_text(values.get(n)) for n in self.columns}, OP_COLUMN: op, "\x00record": record}

    def row_json(self, rows: pl.DataFrame) -> pl.Expr:
        """Each row's columns as a JSON object, under Flink's JSON format rules."""
        present = {n: t for n, t in self.columns.items() if n in rows.columns}
        exprs, numbers = json_ready(present, self.standard)
        return unquote_numbers(pl.struct(exprs).struct.json_encode(), numbers)


def _whole_messages(decoded: Decoded, expected: pl.Series) -> Decoded:
    """Drop what is left of a message some of whose rows could not be typed: an update is both rows or none."""
    wanted = expected.alias("record").value_counts(name="n")
    got = decoded.record.alias("record").value_counts(name="m")
    short = wanted.join(got, on="record", how="left").filter(pl.col("m").fill_null(0) < pl.col("n"))
    if short.height == 0:
        return decoded
    cut = ~decoded.record.is_in(short.get_column("record").implode())
    return Decoded(decoded.rows.filter(cut), decoded.record.filter(cut), decoded.dead)


class DebeziumJson(ChangelogJson):
    def changes(self, message: dict[str, Any], record: int, rows: list[dict[str, str | None]]) -> str | None:
        if self.flag("schema-include"):
            message = message.get("payload")  # type: ignore[assignment]
            if not isinstance(message, dict):
                return "no 'payload' object ('debezium-json.schema-include' is 'true': {\"schema\", \"payload\"})"
        elif "payload" in message and "op" not in message:
            return "the message is a {\"schema\", \"payload\"} envelope: set 'debezium-json.schema-include' = 'true'"
        op = message.get("op")
        before, after = message.get("before"), message.get("after")
        if op in ("c", "r"):
            if not isinstance(after, dict):
                return f"op '{op}' without an 'after' object"
            rows.append(self.row(after, INSERT, record))
        elif op == "u":
            if not isinstance(before, dict):
                return (
                    "op 'u' without a 'before' object (with Debezium's Postgres connector, set the table's "
                    "REPLICA IDENTITY to FULL)"
                )
            if not isinstance(after, dict):
                return "op 'u' without an 'after' object"
            rows.append(self.row(before, UPDATE_BEFORE, record))
            rows.append(self.row(after, UPDATE_AFTER, record))
        elif op == "d":
            if not isinstance(before, dict):
                return (
                    "op 'd' without a 'before' object (with Debezium's Postgres connector, set the table's "
                    "REPLICA IDENTITY to FULL)"
                )
            rows.append(self.row(before, DELETE, record))
        elif op is None:
            return "no 'op' field"
        else:
            return f"unknown op '{str(op)[:40]}' (expected c, r, u or d)"
        return None

    def vectorised(self, lines: pl.Series, records: pl.Series) -> pl.DataFrame | None:
        """Polars' JSON reader reads a message as `loads` does unless a key repeats (Polars keeps the first
        value, `loads` the last), a key is spelled with escapes, or the message is deep or holds a lone
        surrogate; what it cannot read at all (NaN, nested values in a column, ...) fails the whole batch.
        A repeat is ruled out by counting `"name":` in the message: one per object where the reader found the
        column (not NULL) and none elsewhere; an explicit NULL, or a name also used by "source", sends the batch
        to the exact path. So does any message the exact path would refuse: only its reasons are written once."""
        if lines.is_empty() or _needs_exact_path(lines, []):
            return None
        names = list(self.columns)
        side = pl.Struct({n: pl.String for n in names})
        body = pl.Struct({"before": side, "after": side, "op": pl.String})
        envelope = ("payload", "op", "before", "after") if self.flag("schema-include") else ("op", "before", "after")
        try:
            decoded = lines.str.json_decode(pl.Struct({"payload": body}) if self.flag("schema-include") else body)
        except pl.exceptions.PolarsError:
            return None
        if decoded.null_count():
            return None
        frame = decoded.struct.unnest()
        if self.flag("schema-include"):
            if frame.get_column("payload").null_count():
                return None
            frame = frame.get_column("payload").struct.unnest()
        op, before, after = pl.col("op"), pl.col("before"), pl.col("after")
        valid = (
            (op.is_in(["c", "r"]) & after.is_not_null())
            | ((op == "u") & before.is_not_null() & after.is_not_null())
            | ((op == "d") & before.is_not_null())
        )
        text = pl.DataFrame({"line": lines})
        checks = [text.select(pl.col("line").str.count_matches(_key(k)).le(1).all()).item() for k in envelope]
        counted = text.select(
            *[
                (
                    pl.col("line").str.count_matches(_key(n)).cast(pl.Int64)
                    == pl.lit(frame.get_column("before").struct.field(n).is_not_null().cast(pl.Int64))
                    + pl.lit(frame.get_column("after").struct.field(n).is_not_null().cast(pl.Int64))
                )
                .all()
                .alias(n)
                for n in names
            ]
        )
        if not all(checks) or not all(counted.row(0)) or not frame.select(valid.all()).item():
            return None
        frame = frame.with_columns(records.alias("\x00record"))
        parts = [
            _side(frame.filter(op.is_in(["c", "r"])), "after", INSERT, 0),
            _side(frame.filter(op == "u"), "before", UPDATE_BEFORE, 0),
            _side(frame.filter(op == "u"), "after", UPDATE_AFTER, 1),
            _side(frame.filter(op == "d"), "before", DELETE, 0),
        ]
        return pl.concat(parts).sort("\x00record", "\x00half").drop("\x00half")

    def encode(self, rows: pl.DataFrame) -> pl.Series:
        row = self.row_json(rows)
        adds = _adds(rows)
        return rows.select(
            pl.when(adds)
            .then(pl.concat_str([pl.lit('{"before":null,"after":'), row, pl.lit(',"op":"c"}')]))
            .otherwise(pl.concat_str([pl.lit('{"before":'), row, pl.lit(',"after":null,"op":"d"}')]))
            .cast(pl.Binary)
            .alias("value")
        ).to_series()


class CanalJson(ChangelogJson):
    def __init__(self, columns: Mapping[str, pl.DataType], options: Mapping[str, str]) -> None:
        super().__init__(columns, options)
        self.filters: dict[str, re.Pattern[str]] = {}
        for field in ("database", "table"):
            pattern = self.options.get(f"{field}.include")
            if pattern is not None:
                try:
                    self.filters[field] = re.compile(pattern)
                except re.error as err:
                    raise FormatError(
                        f"'canal-json.{field}.include' = '{pattern}' is not a regular expression: {err}"
                    ) from None

    def changes(self, message: dict[str, Any], record: int, rows: list[dict[str, str | None]]) -> str | None:
        for field, pattern in self.filters.items():
            name = message.get(field)
            if not isinstance(name, str):
                return f"no '{field}' text to match 'canal-json.{field}.include'"
            if pattern.fullmatch(name) is None:
                return None  # another table's change: not for this table, and not a dead letter
        kind = message.get("type")
        data = message.get("data")
        if kind == "CREATE":
            return None  # a DDL change: no rows (Flink skips it too)
        if kind not in ("INSERT", "UPDATE", "DELETE"):
            return (
                "no 'type' field"
                if kind is None
                else f"unknown type '{str(kind)[:40]}' (expected INSERT, UPDATE or DELETE)"
            )
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            return f"type {kind} without a 'data' array of objects"
        if kind == "INSERT":
            rows.extend(self.row(d, INSERT, record) for d in data)
        elif kind == "DELETE":
            rows.extend(self.row(d, DELETE, record) for d in data)
        else:
            old = message.get("old")
            if not isinstance(old, list) or len(old) != len(data) or not all(isinstance(o, dict) for o in old):
                return "type UPDATE without an 'old' array of objects as long as 'data'"
            for after, changed in zip(data, old, strict=True):
                # as in Flink: a field NULL or absent in `old` did not change (so a change from NULL is lost)
                before = {**after, **{k: v for k, v in changed.items() if v is not None}}
                rows.append(self.row(before, UPDATE_BEFORE, record))
                rows.append(self.row(after, UPDATE_AFTER, record))
        return None

    def vectorised(self, lines: pl.Series, records: pl.Series) -> pl.DataFrame | None:
        """As debezium-json's: the batch in one pass when no message can read differently there. A field NULL or
        absent in `old` takes the value in `data`, which is what the reader's NULL for an absent field gives.
        The include filters are Python regular expressions, applied to the few distinct names."""
        if lines.is_empty() or _needs_exact_path(lines, []):
            return None
        names = list(self.columns)
        side = pl.Struct({n: pl.String for n in names})
        body = {"data": pl.List(side), "old": pl.List(side), "type": pl.String}
        body |= {"database": pl.String, "table": pl.String}
        try:
            decoded = lines.str.json_decode(pl.Struct(body))
        except pl.exceptions.PolarsError:
            return None
        if decoded.null_count():
            return None
        text = pl.DataFrame({"line": lines})
        # a key given twice is read differently (first or last value): any repeat sends the batch on
        if not all(text.select(pl.col("line").str.count_matches(_key(k)).le(1).all()).item() for k in body):
            return None
        frame = decoded.struct.unnest().with_columns(records.alias("\x00record"), text.get_column("line"))
        keep = pl.lit(True)
        for field, pattern in self.filters.items():
            # the name must be JSON text (the exact path refuses a number there)
            if not frame.select(pl.col("line").str.contains(_key(field) + r'\s*"').all()).item():
                return None
            matched = [n for n in frame.get_column(field).unique().to_list() if pattern.fullmatch(n)]
            keep = keep & pl.col(field).is_in(matched)
        frame = frame.filter(keep & (pl.col("type") != "CREATE"))
        kind, data, old = pl.col("type"), pl.col("data"), pl.col("old")
        whole = data.is_not_null() & ~data.list.eval(pl.element().is_null()).list.any()
        paired = (
            old.is_not_null() & (old.list.len() == data.list.len()) & ~old.list.eval(pl.element().is_null()).list.any()
        )
        valid = whole & (kind.is_in(["INSERT", "DELETE"]) | ((kind == "UPDATE") & paired))
        if not frame.select(valid.all()).item():
            return None
        found = [
            data.list.eval(pl.element().struct.field(n).is_not_null().cast(pl.Int64)).list.sum()
            + old.list.eval(pl.element().struct.field(n).is_not_null().cast(pl.Int64)).list.sum().fill_null(0)
            for n in names
        ]
        counted = [
            pl.col("line").str.count_matches(_key(n)).cast(pl.Int64) == f for n, f in zip(names, found, strict=True)
        ]
        if counted and not frame.select(pl.all_horizontal(counted).all()).item():
            return None
        rows = (
            frame.filter(data.list.len() > 0)  # no rows (exploding an empty list would give one of NULLs)
            .with_columns(old.fill_null(data).alias("old"))  # INSERT and DELETE have no `old` to pair
            .with_columns(pl.int_ranges(0, data.list.len()).alias("\x00i"))
            .explode("data", "old", "\x00i")
        )
        after = pl.col("data").struct.field
        before = [pl.coalesce(pl.col("old").struct.field(n), after(n)).alias(n) for n in names]
        adds = [after(n).alias(n) for n in names]
        keys = ["\x00record", "\x00i", "\x00half"]
        parts = [
            rows.filter(kind == "INSERT").select(*adds, pl.lit(INSERT).alias(OP_COLUMN), *_order(0)),
            rows.filter(kind == "UPDATE").select(*before, pl.lit(UPDATE_BEFORE).alias(OP_COLUMN), *_order(0)),
            rows.filter(kind == "UPDATE").select(*adds, pl.lit(UPDATE_AFTER).alias(OP_COLUMN), *_order(1)),
            rows.filter(kind == "DELETE").select(*adds, pl.lit(DELETE).alias(OP_COLUMN), *_order(0)),
        ]
        return pl.concat(parts).sort(keys).drop("\x00i", "\x00half")

    def encode(self, rows: pl.DataFrame) -> pl.Series:
        row = self.row_json(rows)
        kind = pl.when(_adds(rows)).then(pl.lit("INSERT")).otherwise(pl.lit("DELETE"))
        return rows.select(
            pl.concat_str([pl.lit('{"data":['), row, pl.lit('],"type":"'), kind, pl.lit('"}')])
            .cast(pl.Binary)
            .alias("value")
        ).to_series()


def _key(name: str) -> str:
    """A pattern for `name` used as a key: `"name":` cannot occur inside a JSON string (its quotes are escaped)."""
    return re.escape(json.dumps(name, ensure_ascii=False)) + r"\s*:"


def _side(frame: pl.DataFrame, side: str, op: str, half: int) -> pl.DataFrame:
    """One row per message of `frame`: the columns of its `side` object, with the row kind."""
    return frame.select(
        pl.col(side).struct.unnest(), pl.lit(op).alias(OP_COLUMN), "\x00record", pl.lit(half).alias("\x00half")
    )


def _order(half: int) -> list[pl.Expr]:
    return [pl.col("\x00record"), pl.col("\x00i"), pl.lit(half).alias("\x00half")]


def _adds(rows: pl.DataFrame) -> pl.Expr:
    if OP_COLUMN not in rows.columns:
        return pl.lit(True)
    return pl.col(OP_COLUMN).is_in(list(ADDS))
