"""Option validation at planning time: `SET 'key' = 'value'` and every connector's `WITH ('key' = 'value')`.

Pure (no I/O): a wrong value, a missing required option or an unknown key fails before anything runs, with the
line and column of the option (or of the CREATE TABLE when an option is missing). Unknown connector keys are an
error, as in Flink ("Unsupported options found"), with the closest known key suggested: a typo such as
'scan.max-epoch-row' would otherwise be ignored silently. Unknown SET keys pass (Flink's configuration is open),
except under the namespaces timelapse reads (`checkpoint.`, `state.`, `parallelism.`), where a typo would also
be ignored silently.

The connector lists mirror the runtime registries (`engine.sources.SOURCES`, `engine.sinks.SINKS`); a test
checks that they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlglot import exp

from sql import kafka_options, storage_keys
from sql.catalog import TableDef
from sql.errors import SqlError, UnsupportedError, did_you_mean, error_at, position
from sql.option_values import (
    Check,
    choice,
    duration,
    duration_or_zero,
    not_empty,
    number,
    one_character,
    size,
    text,
    timestamp,
    whole,
)
from sql.plan import KEY_GROUPS, Join, Plan


class OptionError(SqlError):
    """A run option with a wrong value (`Pipeline.run(max_epoch_rows=0)`): a user error, without a position."""


def check_run_options(values: Mapping[str, object]) -> None:
    """`Pipeline.run`'s options, checked by the same rules as the CLI flags and SET options they mirror.

    Whole-number options must be at least 1, `parallelism` at most KEY_GROUPS, `trigger` positive seconds."""
    text_rules: dict[str, Check] = {
        "checkpoint_interval": checkpoint_interval,
        "checkpoint_state_growth": size,
        "retain_count": retention_count,
        "retain_age": duration,
    }
    for name, value in values.items():
        if value is None:
            continue
        if name in text_rules:
            problem = text_rules[name](str(value))
        elif name == "trigger":
            problem = None if isinstance(value, int | float) and value > 0 else "must be a positive number of seconds"
        else:
            top = KEY_GROUPS if name == "parallelism" else None
            whole_number = isinstance(value, int) and not isinstance(value, bool)
            fits = whole_number and value >= 1 and (top is None or value <= top)  # type: ignore[operator]
            problem = None if fits else f"must be a whole number from 1{f' to {top}' if top else ''}"
        if problem:
            raise OptionError(f"{name}={value!r}: {problem}")


# -- value checks (sql.option_values) ------------------------------------------------------------------------------
def checkpoint_interval(value: str) -> str | None:
    words = value.strip().lower().split()
    if len(words) == 2 and words[1] in ("epoch", "epochs"):
        return None if words[0].isdigit() and int(words[0]) > 0 else "must be a positive number of epochs"
    problem = duration(value)
    return f"{problem}, or a number of epochs such as '5 epochs'" if problem else None


def retention_count(value: str) -> str | None:
    text_ = value.strip().lower()
    if text_ in ("all", "unlimited", "none") or (text_.isdigit() and int(text_) > 0):
        return None
    return "must be a positive number or 'all'"


# -- SET ----------------------------------------------------------------------------------------------------------
PIPELINE_OPTIONS: dict[str, Check] = {
    "checkpoint.interval": checkpoint_interval,
    "checkpoint.state-growth": size,
    "checkpoint.retention.count": retention_count,
    "checkpoint.retention.age": duration,
    "parallelism.default": lambda v: (
        None if v.strip().isdigit() and 0 < int(v) <= KEY_GROUPS else f"must be a number of workers, 1 to {KEY_GROUPS}"
    ),
    "state.memory.budget": size,
    "state.ttl": duration,
    "state.ttl.time": choice("processing", "event"),
}


# Column-level encryption (engine/encryption.py, docs/encryption.md): on any table, or SET for the pipeline.
def _encrypt_key(value: str) -> str | None:
    value = value.strip()
    return None if value.startswith(("env:", "file:")) and len(value) > 5 else "must be 'env:VARIABLE' or 'file:/path'"


ENCRYPT_OPTIONS: dict[str, Check] = {"encrypt.columns": not_empty, "encrypt.key": _encrypt_key}
PIPELINE_OPTIONS.update(ENCRYPT_OPTIONS)
_OWN_NAMESPACES = ("checkpoint.", "state.", "parallelism.", "encrypt.")


def pipeline_option_problem(key: str, value: str) -> str | None:
    """Why `SET key = value` is wrong, or None."""
    check = PIPELINE_OPTIONS.get(key)
    if check is None:
        if key.lower().startswith(_OWN_NAMESPACES):
            return f"unknown option '{key}'{did_you_mean(key, PIPELINE_OPTIONS)}"
        return None
    problem = check(value)
    return f"'{key}' = '{value}': {problem}" if problem else None


# -- connectors ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connector:
    options: Mapping[str, Check]
    required: tuple[str, ...] = ()
    source: bool = False
    sink: bool = False
    lookup: bool = False  # may be the versioned side of a lookup join (read whole)


# An idle timeout of 0 marks a source idle as soon as an epoch brings it no rows.
_SOURCE = {"scan.max-epoch-rows": whole(1), "scan.watermark.idle-timeout": duration_or_zero}
_GENERATED = {"seed": whole(), "start-time": timestamp}
CONNECTORS: dict[str, Connector] = {
    "filesystem": Connector(
        {
            **_SOURCE,
            "path": not_empty,
            "format": choice("json", "csv", "parquet", "debezium-json", "canal-json"),
            "csv.header": choice("true", "false"),
            # the changelog formats' options that mean something for lines of a file (engine/formats)
            "debezium-json.schema-include": choice("true", "false"),
            "debezium-json.ignore-parse-errors": choice("true", "false"),
            "canal-json.ignore-parse-errors": choice("true", "false"),
            "canal-json.database.include": not_empty,
            "canal-json.table.include": not_empty,
            "debezium-json.timestamp-format.standard": choice("sql", "iso-8601"),
            "canal-json.timestamp-format.standard": choice("sql", "iso-8601"),
            "csv.field-delimiter": one_character,
            "scan.max-record-bytes": size,
            "source.missing-files": choice("fail", "skip"),
            "source.partial-line-timeout": duration_or_zero,
        },
        required=("path",),
        source=True,
        lookup=True,
    ),
    "delta": Connector(
        {
            **_SOURCE,
            "path": not_empty,
            "starting-version": whole(0),
            "read.change-data-feed": choice("true", "false"),
            "partition-by": text,
            "sink.partition-by": text,
        },
        required=("path",),
        source=True,
        sink=True,
        lookup=True,
    ),
    "datagen": Connector(
        {**_SOURCE, **_GENERATED, "number-of-rows": whole(0), "rows-per-second": number(positive=True)},
        source=True,
    ),
    "nexmark": Connector(
        {
            **_SOURCE,
            **_GENERATED,
            "nexmark.table": choice("person", "auction", "bid"),
            "events.num": whole(1),
            "rate": number(positive=True),
        },
        source=True,
    ),
    "kafka": Connector(kafka_options.KAFKA, source=True, sink=True),
    "upsert-kafka": Connector(kafka_options.UPSERT_KAFKA, source=True, sink=True),
    "print": Connector({"print-identifier": text}, sink=True),
    "blackhole": Connector({}, sink=True),
}
DATAGEN_FIELD_OPTIONS: dict[str, Check] = {
    "kind": choice("random", "sequence"),
    "min": number(),
    "max": number(),
    "start": whole(),
    "end": whole(),
    "length": whole(0),
    "values": not_empty,
    "null-rate": number(at_most=1),
}

Positions = Mapping[str, tuple[int | None, int | None]]
KAFKA_CONNECTORS = ("kafka", "upsert-kafka")
#: connectors whose 'path' may be in an object store, configured by `'storage.<key>'` options
STORAGE_CONNECTORS = ("filesystem", "delta")


def read_with(statement: exp.Create) -> tuple[dict[str, str], Positions, Positions]:
    """A CREATE TABLE's `WITH ('key' = 'value', ...)`: the options, and each key's and value's position."""
    options: dict[str, str] = {}
    keys: dict[str, tuple[int | None, int | None]] = {}
    values: dict[str, tuple[int | None, int | None]] = {}
    for prop in (statement.args.get("properties") or exp.Properties(expressions=[])).expressions:
        if type(prop) is not exp.Property:
            text = prop.sql(dialect="spark") or type(prop).__name__.removesuffix("Property").upper()
            raise error_at(prop, f"'{text}' after WITH (...) is not supported (is a ';' missing?)", UnsupportedError)
        key, value = prop.this, prop.args.get("value")
        if not isinstance(key, exp.Literal | exp.Var | exp.Identifier) or not isinstance(value, exp.Literal):
            raise error_at(prop, "options are written 'key' = 'value', both quoted")
        if key.name in options:
            raise error_at(key, f"option '{key.name}' is given twice")
        options[key.name] = str(value.name)
        keys[key.name], values[key.name] = position(prop), position(value)
    return options, keys, values


def check_table(table: TableDef, keys: Positions, values: Positions, at: tuple[int | None, int | None]) -> None:
    """Validate a CREATE TABLE's options; `keys` and `values` hold each option's key and value positions and
    `at` the statement's."""

    def fail(message: str, where: tuple[int | None, int | None] = at) -> SqlError:
        return SqlError(f"table '{table.name}': {message}", *where)

    if "connector" not in table.options:
        raise fail("option 'connector' is missing, e.g. WITH ('connector' = 'filesystem', 'path' = '...')")
    name = table.connector.strip().lower()
    connector = CONNECTORS.get(name)
    if connector is None:
        known = ", ".join(sorted(CONNECTORS))
        suggestion = did_you_mean(name, CONNECTORS)
        raise fail(f"unknown connector '{table.connector}'{suggestion}; connectors are {known}", values["connector"])
    for key, value in table.options.items():
        if key == "connector":
            continue
        check = connector.options.get(key)
        if check is None and name == "datagen" and key.startswith("fields."):
            check = _datagen_field(table, key, keys[key])
        if check is None and name in KAFKA_CONNECTORS:
            check = kafka_options.option_check(name, key)
        if check is None and name in STORAGE_CONNECTORS and key.startswith(storage_keys.PREFIX):
            check = _storage_option(table, key, keys[key], values.get("path", at))
        if check is None and key.startswith("encrypt."):
            check = ENCRYPT_OPTIONS.get(key)
        if check is None:
            suggestion = did_you_mean(key, connector.options)
            known = sorted(connector.options) + (["fields.<column>.<option>"] if name == "datagen" else [])
            known += ["properties.<client option>", "<format>.<option>"] if name in KAFKA_CONNECTORS else []
            known += ["storage.<object store option>"] if name in STORAGE_CONNECTORS else []
            takes = f"; it takes {', '.join(known)}" if known else "; it takes no other options"
            raise fail(f"unsupported option '{key}' for connector '{name}'{suggestion}{takes}", keys[key])
        problem = check(value)
        if problem:
            raise fail(f"'{key}' = '{value}': {problem}", values[key])
    for key in connector.required:
        if key not in table.options:
            raise fail(f"connector '{name}' needs the option '{key}'")
    if name in STORAGE_CONNECTORS:
        problem = storage_keys.path_problem(table.options["path"])
        if problem:
            raise fail(f"'path' = '{table.options['path']}': {problem}", values["path"])
    if name == "datagen":
        _check_datagen_ranges(table, values, fail)
    if name in KAFKA_CONNECTORS:
        kafka_options.check_kafka_table(table, values, fail)
    if name == "delta":
        for key in ("partition-by", "sink.partition-by"):
            for column in (c.strip() for c in table.options.get(key, "").split(",") if c.strip()):
                if table.column(column) is None:
                    known = [c.name for c in table.columns]
                    raise fail(f"'{key}' names '{column}', not a column{did_you_mean(column, known)}", values[key])


def _storage_option(
    table: TableDef, key: str, where: tuple[int | None, int | None], path_at: tuple[int | None, int | None]
) -> Check:
    """`'storage.<key>'`: a known object-store option, on a table whose 'path' is in an object store."""
    problem = storage_keys.key_problem(key[len(storage_keys.PREFIX) :])
    if problem:
        raise SqlError(f"table '{table.name}': option '{key}': {problem}", *where)
    path = table.options.get("path", "")
    if path and not storage_keys.is_object_uri(path) and storage_keys.path_problem(path) is None:
        raise SqlError(
            f"table '{table.name}': option '{key}' configures object storage, but 'path' = '{path}' is local; "
            "remove the 'storage.*' options or point 'path' at s3://, gs:// or az://",
            *where,
        )
    return text


def _datagen_field(table: TableDef, key: str, where: tuple[int | None, int | None]) -> Check | None:
    parts = key.split(".")
    if len(parts) != 3:
        return None
    _, column, prop = parts
    if table.column(column) is None:
        known = [c.name for c in table.columns]
        raise SqlError(
            f"table '{table.name}': option '{key}' names '{column}', not a column{did_you_mean(column, known)}", *where
        )
    check = DATAGEN_FIELD_OPTIONS.get(prop)
    if check is None:
        suggestion = did_you_mean(prop, DATAGEN_FIELD_OPTIONS)
        suggestion = suggestion.replace("'", f"'fields.{column}.", 1) if suggestion else ""
        raise SqlError(f"table '{table.name}': unsupported option '{key}' for connector 'datagen'{suggestion}", *where)
    return check


def _check_datagen_ranges(table: TableDef, values: Positions, fail: Callable[..., SqlError]) -> None:
    options = table.options
    for column in table.columns:
        for low, high in (("min", "max"), ("start", "end")):
            low_key, high_key = f"fields.{column.name}.{low}", f"fields.{column.name}.{high}"
            if low_key in options and high_key in options and float(options[low_key]) > float(options[high_key]):
                message = f"'{low_key}' ({options[low_key]}) is above '{high_key}' ({options[high_key]})"
                raise fail(message, values[low_key])


def check_roles(plan: Plan) -> None:
    """Each table's connector can play the part the statements give it: read, written, or looked up."""
    lookups = [n.dimension for n in plan.nodes if isinstance(n, Join) and n.dimension is not None]
    uses = (
        (list(plan.sources.values()), "source", "read"),
        ([s.table for s in plan.sinks], "sink", "written"),
        (lookups, "lookup", "looked up in a lookup join"),
    )
    for tables, role, verb in uses:
        for table in tables:
            connector = CONNECTORS[table.connector.strip().lower()]
            if not getattr(connector, role):
                able = sorted(n for n, c in CONNECTORS.items() if getattr(c, role))
                raise SqlError(
                    f"table '{table.name}': connector '{table.connector}' cannot be {verb}; "
                    f"{role} connectors are {', '.join(able)}",
                    *table.option_at.get("connector", (table.line, table.col)),
                )
