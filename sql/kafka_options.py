"""The options of `'connector' = 'kafka'` and `'upsert-kafka'`, named as Flink's Kafka connectors name them.

Pure, like sql.options (which registers these connectors): a Flink user's WITH clause is accepted as written,
and anything wrong in it fails at planning time with the option's line and column. `properties.*` keys go to
the Kafka client unchanged (librdkafka checks them when the pipeline starts); format options may carry the
`key.` or `value.` prefix, as in Flink (`'value.json.ignore-parse-errors' = 'true'`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from sql.catalog import TableDef
from sql.errors import SqlError, did_you_mean
from sql.option_values import Check, choice, duration_or_zero, not_empty, text, whole

Positions = Mapping[str, tuple[int | None, int | None]]

#: value formats a Kafka table can read and write; the changelog formats carry inserts, updates and deletes
FORMATS = ("json", "csv", "raw", "avro", "debezium-json", "canal-json")
CHANGELOG_FORMATS = ("debezium-json", "canal-json")
#: formats a message key can have (a changelog has no meaning for a key)
KEY_FORMATS = ("json", "csv", "raw", "avro")
STARTUP_MODES = ("earliest-offset", "latest-offset", "group-offsets", "timestamp", "specific-offsets")
BOUNDED_MODES = ("unbounded", "latest-offset", "group-offsets", "timestamp", "specific-offsets")
#: the metadata a Kafka table's columns can declare with METADATA FROM '...', and each one's SQL type
METADATA = {
    "topic": "STRING",
    "partition": "INT",
    "offset": "BIGINT",
    "timestamp": "TIMESTAMP_LTZ(3)",
    "timestamp-type": "STRING",
    "headers": "MAP<STRING, BYTES>",
    "key": "BYTES",
    "leader-epoch": "INT",
}
#: per-format options (after the format's name: 'json.ignore-parse-errors'), as Flink's formats name them
FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "json": (
        "fail-on-missing-field",
        "ignore-parse-errors",
        "timestamp-format.standard",
        "map-null-key.mode",
        "map-null-key.literal",
        "encode.decimal-as-plain-number",
    ),
    "csv": (
        "field-delimiter",
        "ignore-parse-errors",
        "allow-comments",
        "quote-character",
        "disable-quote-character",
        "escape-character",
        "null-literal",
        "array-element-delimiter",
    ),
    "raw": ("charset", "endianness"),
    "avro": ("encoding", "codec"),
    "debezium-json": (
        "schema-include",
        "ignore-parse-errors",
        "timestamp-format.standard",
        "map-null-key.mode",
        "map-null-key.literal",
        "encode.decimal-as-plain-number",
    ),
    "canal-json": (
        "ignore-parse-errors",
        "timestamp-format.standard",
        "map-null-key.mode",
        "map-null-key.literal",
        "encode.decimal-as-plain-number",
        "database.include",
        "table.include",
    ),
}


def _boolean(value: str) -> str | None:
    return None if value.strip().lower() in ("true", "false") else "must be 'true' or 'false'"


def _specific_offsets(value: str) -> str | None:
    """Flink's 'partition:0,offset:42;partition:1,offset:300'."""
    return (
        None
        if parse_specific_offsets(value) is not None
        else (
            "must list 'partition:<n>,offset:<n>' pairs separated by ';', "
            "e.g. 'partition:0,offset:42;partition:1,offset:300'"
        )
    )


def parse_specific_offsets(value: str) -> dict[int, int] | None:
    found: dict[int, int] = {}
    for part in (p.strip() for p in value.split(";") if p.strip()):
        match = re.fullmatch(r"partition\s*:\s*(\d+)\s*,\s*offset\s*:\s*(\d+)", part)
        if match is None:
            return None
        found[int(match.group(1))] = int(match.group(2))
    return found or None


def _regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as err:
        return f"is not a regular expression: {err}"
    return None


_COMMON: dict[str, Check] = {
    "topic": not_empty,
    "properties.bootstrap.servers": not_empty,
    "key.format": choice(*KEY_FORMATS),
    "value.format": choice(*FORMATS),
    "key.fields-prefix": text,
    "value.fields-include": choice("all", "except_key"),
    "sink.parallelism": whole(0),
    "sink.delivery-guarantee": choice("exactly-once", "at-least-once", "none"),
    "sink.transactional-id-prefix": not_empty,
    "scan.max-epoch-rows": whole(1),
    "scan.watermark.idle-timeout": duration_or_zero,
    "scan.max-record-bytes": text,
}
KAFKA: dict[str, Check] = {
    **_COMMON,
    "topic-pattern": _regex,
    "format": choice(*FORMATS),
    "key.fields": not_empty,
    "scan.startup.mode": choice(*STARTUP_MODES),
    "scan.startup.specific-offsets": _specific_offsets,
    "scan.startup.timestamp-millis": whole(0),
    "scan.bounded.mode": choice(*BOUNDED_MODES),
    "scan.bounded.specific-offsets": _specific_offsets,
    "scan.bounded.timestamp-millis": whole(0),
    "scan.topic-partition-discovery.interval": duration_or_zero,
    "sink.partitioner": text,  # default | fixed | round-robin (a Java class name is refused below)
    "sink.semantic": choice("exactly-once", "at-least-once", "none"),  # Flink's older name of delivery-guarantee
}
UPSERT_KAFKA: dict[str, Check] = {
    **_COMMON,
    "sink.buffer-flush.max-rows": whole(0),
    "sink.buffer-flush.interval": duration_or_zero,
}


def option_check(connector: str, key: str) -> Check | None:
    """The check of a key that is not in the fixed list: `properties.*`, and format options with or without
    the `key.` / `value.` prefix."""
    if key.startswith("properties.") and len(key) > len("properties."):
        return text
    bare = key.removeprefix("key.").removeprefix("value.")
    for fmt, names in FORMAT_OPTIONS.items():
        if bare.startswith(fmt + ".") and bare[len(fmt) + 1 :] in names:
            return (
                _boolean if bare.endswith(("ignore-parse-errors", "fail-on-missing-field", "schema-include")) else text
            )
    return None


def check_kafka_table(table: TableDef, values: Positions, fail: Callable[..., SqlError]) -> None:
    """What single options cannot say: which options go together, and what they must name."""
    options = {k: v.strip() for k, v in table.options.items()}
    upsert = table.connector.strip().lower() == "upsert-kafka"
    has_topic, has_pattern = "topic" in options, "topic-pattern" in options
    if has_topic == has_pattern:
        raise fail(
            "give exactly one of the options 'topic' and 'topic-pattern'"
            if has_topic
            else (f"connector '{table.connector}' needs the option 'topic'")
        )
    if "properties.bootstrap.servers" not in options:
        raise fail(f"connector '{table.connector}' needs the option 'properties.bootstrap.servers'")
    if "format" in options and "value.format" in options:
        raise fail("give 'format' or 'value.format', not both", values["value.format"])
    if upsert:
        if not table.primary_key:
            raise fail("connector 'upsert-kafka' needs a PRIMARY KEY (k) NOT ENFORCED: it is the message key")
        for key in ("key.format", "value.format"):
            if key not in options:
                raise fail(f"connector 'upsert-kafka' needs the option '{key}'")
    elif "format" not in options and "value.format" not in options:
        raise fail("connector 'kafka' needs the option 'format' (or 'value.format'), e.g. 'format' = 'json'")
    value_format = (options.get("value.format") or options.get("format", "")).lower()
    if "key.fields" in options:
        if "key.format" not in options:
            raise fail("'key.fields' needs 'key.format' as well", values["key.fields"])
        prefix = options.get("key.fields-prefix", "")
        for name in (n.strip() for n in options["key.fields"].split(";") if n.strip()):
            if table.column(name) is None:
                known = [c.name for c in table.columns]
                raise fail(
                    f"'key.fields' names '{name}', not a column{did_you_mean(name, known)}", values["key.fields"]
                )
            if prefix and not name.startswith(prefix):
                raise fail(f"'key.fields' names '{name}', which does not start with 'key.fields-prefix' '{prefix}'")
        if prefix and options.get("value.fields-include", "all").lower() != "except_key":
            raise fail(
                "'key.fields-prefix' needs 'value.fields-include' = 'EXCEPT_KEY' (as in Flink): the value's "
                "columns are then the others",
                values["key.fields-prefix"],
            )
    elif "key.format" in options and not upsert:
        raise fail("'key.format' needs 'key.fields': the columns the message key holds", values["key.format"])
    if value_format in CHANGELOG_FORMATS and "key.format" in options:
        raise fail(f"format '{value_format}' carries the whole row; it takes no 'key.format'", values["key.format"])
    mode = options.get("scan.startup.mode", "").lower()
    _needs(options, values, fail, "scan.startup.mode", mode, "timestamp", "scan.startup.timestamp-millis")
    _needs(options, values, fail, "scan.startup.mode", mode, "specific-offsets", "scan.startup.specific-offsets")
    bounded = options.get("scan.bounded.mode", "").lower()
    _needs(options, values, fail, "scan.bounded.mode", bounded, "timestamp", "scan.bounded.timestamp-millis")
    _needs(options, values, fail, "scan.bounded.mode", bounded, "specific-offsets", "scan.bounded.specific-offsets")
    partitioner = options.get("sink.partitioner", "").lower()
    if partitioner and partitioner not in ("default", "fixed", "round-robin"):
        raise fail(
            f"'sink.partitioner' = '{options['sink.partitioner']}': must be 'default', 'fixed' or 'round-robin' "
            "(a custom Java partitioner class cannot run here)",
            values["sink.partitioner"],
        )
    for column in table.columns:
        if column.metadata is not None and column.metadata not in METADATA:
            known = list(METADATA)
            suggestion = did_you_mean(column.metadata, known)
            raise fail(
                f"column '{column.name}': unknown metadata key '{column.metadata}'{suggestion};"
                f" Kafka tables have {', '.join(known)}"
            )


def _needs(
    options: dict[str, str],
    values: Positions,
    fail: Callable[..., SqlError],
    key: str,
    mode: str,
    when: str,
    other: str,
) -> None:
    if mode == when and other not in options:
        raise fail(f"'{key}' = '{when}' needs the option '{other}'", values[key])


#: metadata a Kafka sink can write (the message's timestamp and headers); the rest is read-only, as in Flink
WRITABLE_METADATA = ("timestamp", "headers")


def sink_problem(table: TableDef, updating: bool) -> tuple[str, str | None] | None:
    """Why `table` cannot be written by an INSERT (with an `updating` result, if so), and the option to point
    at; None if it can. Flink's rules: one topic, writable metadata only, and rows that change need upserts
    (upsert-kafka) or a format that carries row kinds."""
    connector = table.connector.strip().lower()
    if connector not in ("kafka", "upsert-kafka"):
        return None
    if "topic-pattern" in table.options:
        return (
            f"'{table.name}' is written, so it needs one 'topic'; 'topic-pattern' only reads topics",
            "topic-pattern",
        )
    for column in table.columns:
        if column.metadata is not None and not column.virtual and column.metadata not in WRITABLE_METADATA:
            return (
                f"'{table.name}' is written, but its column '{column.name}' is metadata '{column.metadata}', which "
                f"a sink cannot write (only {' and '.join(WRITABLE_METADATA)}); declare it VIRTUAL",
                None,
            )
    value_format = (table.options.get("value.format") or table.options.get("format", "")).strip().lower()
    if connector == "kafka" and updating and value_format not in CHANGELOG_FORMATS:
        return (
            f"the query gives an updating result (rows change as more input arrives), but '{table.name}' is a "
            f"Kafka topic written with format '{value_format}', which has no row kinds. Use 'connector' = "
            f"'upsert-kafka' with a PRIMARY KEY (updates upsert by key, deletes are tombstones), or a changelog "
            f"format ({', '.join(repr(f) for f in CHANGELOG_FORMATS)})",
            None,
        )
    return None
