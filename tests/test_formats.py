"""Record formats (engine/formats): encode then decode gives the rows back, bad records are dead letters with
their reason, and decoding never depends on how records are split into batches."""

from __future__ import annotations

import datetime as dt
import decimal
import random

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.formats import FORMATS, FormatError, make_format
from sql.plan import OP_COLUMN

COLUMNS: dict[str, pl.DataType] = {
    "i": pl.Int64(),
    "n": pl.Int16(),
    "s": pl.String(),
    "f": pl.Float64(),
    "b": pl.Boolean(),
    "d": pl.Decimal(18, 3),
    "t": pl.Datetime("ms", "UTC"),
    "day": pl.Date(),
    "bin": pl.Binary(),
}
TEXT_FORMATS = ("json", "csv", "avro", "debezium-json", "canal-json")
OPS = ("+I", "-U", "+U", "-D")

_times = st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=dt.UTC)
)
_row = st.fixed_dictionaries(
    {
        "i": st.none() | st.integers(-(2**63), 2**63 - 1),
        "n": st.none() | st.integers(-(2**15), 2**15 - 1),
        # CSV reads an empty field as NULL (the file source's rule), so empty strings are not generated
        "s": st.none() | st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12),
        "f": st.none() | st.floats(allow_nan=False, width=64),
        "b": st.none() | st.booleans(),
        "d": st.none() | st.decimals(-(10**14), 10**14, places=3, allow_nan=False, allow_infinity=False),
        "t": st.none() | _times,
        "day": st.none() | st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)),
        "bin": st.none() | st.binary(min_size=1, max_size=8),
    }
)


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


def decode(fmt, values: list[bytes | None]):
    return fmt.decode(pl.Series(values, dtype=pl.Binary))


@pytest.mark.parametrize("name", TEXT_FORMATS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, max_size=8), ops=st.lists(st.sampled_from(OPS), min_size=8, max_size=8))
def test_encode_then_decode_gives_the_rows_back(name: str, rows: list[dict], ops: list[str]) -> None:
    fmt = make_format(name, COLUMNS, {})
    data = frame(rows)
    if fmt.changelog:
        data = data.with_columns(pl.Series(OP_COLUMN, ops[: len(rows)], dtype=pl.String))
    decoded = fmt.decode(fmt.encode(data))
    assert decoded.dead.height == 0, decoded.dead.to_dicts()
    assert decoded.record.to_list() == list(range(len(rows)))
    if fmt.changelog:
        # Flink's encoding keeps what a row does, not its kind: +I/+U are written as inserts, -U/-D as deletes
        expected = ["+I" if op in ("+I", "+U") else "-D" for op in ops[: len(rows)]]
        assert decoded.rows.get_column(OP_COLUMN).to_list() == expected
    assert decoded.rows.drop(OP_COLUMN, strict=False).equals(data.drop(OP_COLUMN, strict=False))


def test_json_writes_what_flink_writes() -> None:
    fmt = make_format("json", COLUMNS, {})
    row = {
        "i": 1,
        "n": None,
        "s": 'a"b',
        "f": float("nan"),
        "b": True,
        "d": decimal.Decimal("12345678901234.500"),
        "t": dt.datetime(2020, 12, 30, 12, 13, 14, 123000, tzinfo=dt.UTC),
        "day": dt.date(2020, 12, 30),
        "bin": b"\x00\xff",
    }
    (text,) = fmt.encode(frame([row])).to_list()
    assert text == (
        b'{"i":1,"n":null,"s":"a\\"b","f":"NaN","b":true,"d":12345678901234.500,'
        b'"t":"2020-12-30 12:13:14.123","day":"2020-12-30","bin":"AP8="}'
    )
    iso = make_format("json", {"t": pl.Datetime("ms", "UTC")}, {"json.timestamp-format.standard": "ISO-8601"})
    assert iso.encode(frame([row]).select("t")).to_list() == [b'{"t":"2020-12-30T12:13:14.123"}']
    with pytest.raises(FormatError, match="SQL' or 'ISO-8601"):
        make_format("json", COLUMNS, {"json.timestamp-format.standard": "RFC"})


def test_changelog_formats_write_flinks_shapes() -> None:
    cols = {"k": pl.Int64(), "v": pl.String()}
    rows = pl.DataFrame({"k": [1, 1, 1, 2], "v": ["a", "a", "b", "c"], OP_COLUMN: ["+I", "-U", "+U", "-D"]})
    debezium = make_format("debezium-json", cols, {}).encode(rows).to_list()
    assert debezium == [
        b'{"before":null,"after":{"k":1,"v":"a"},"op":"c"}',
        b'{"before":{"k":1,"v":"a"},"after":null,"op":"d"}',
        b'{"before":null,"after":{"k":1,"v":"b"},"op":"c"}',
        b'{"before":{"k":2,"v":"c"},"after":null,"op":"d"}',
    ]
    canal = make_format("canal-json", cols, {}).encode(rows).to_list()
    assert canal[0] == b'{"data":[{"k":1,"v":"a"}],"type":"INSERT"}'
    assert canal[3] == b'{"data":[{"k":2,"v":"c"}],"type":"DELETE"}'


# -- dead letters -----------------------------------------------------------------------------------------------
KV = {"k": pl.Int64(), "v": pl.Int32()}


def reasons(name: str, values: list[bytes | None], options: dict[str, str] | None = None, columns=KV) -> dict:
    decoded = decode(make_format(name, columns, options or {}), values)
    return dict(decoded.dead.rows())


def test_json_dead_letters() -> None:
    found = reasons("json", [b'{"k": 1, "v": 2}', b'{"k": "x"}', b"{oops", b"[1]", b"\xff", None])
    assert found == {
        1: "column 'k': cannot read 'x' as BIGINT",
        2: found[2],
        3: "malformed JSON: the record is not a JSON object",
        4: "the record is not valid UTF-8",
        5: "the message has no value (a tombstone)",
    }
    assert found[2].startswith("malformed JSON")


def test_ignore_parse_errors_nulls_the_field_and_still_records_the_record() -> None:
    fmt = make_format("json", KV, {"json.ignore-parse-errors": "true"})
    decoded = decode(fmt, [b'{"k": 1, "v": "x"}', b"{oops"])
    assert decoded.rows.to_dicts() == [{"k": 1, "v": None}]
    assert decoded.dead.to_dicts()[0] == {
        "record": 0,
        "reason": "column 'v': cannot read 'x' as INT (set to NULL: 'ignore-parse-errors' is 'true')",
    }
    assert decoded.dead.get_column("record").to_list() == [0, 1]


def test_fail_on_missing_field() -> None:
    strict = {"json.fail-on-missing-field": "true"}
    assert reasons("json", [b'{"k": 1, "v": null}', b'{"k": 2}', b"{}"], strict) == {
        1: "field 'v' is missing ('json.fail-on-missing-field' is 'true')",
        2: "field 'k' is missing ('json.fail-on-missing-field' is 'true'); field 'v' is missing "
        "('json.fail-on-missing-field' is 'true')",
    }
    assert reasons("json", [b'{"k": 2}'], {}) == {}  # by default a missing field is NULL


def test_event_time_null_is_a_dead_letter() -> None:
    cols = {"k": pl.Int64(), "ts": pl.Datetime("ms", "UTC")}
    decoded = make_format("json", cols, {}).decode(pl.Series([b'{"k": 1}'], dtype=pl.Binary), ("ts",))
    assert decoded.rows.height == 0
    assert decoded.dead.get_column("reason").to_list() == ["column 'ts' is NULL or missing, and it is the event time"]


def test_csv_dead_letters_and_options() -> None:
    assert reasons("csv", [b"1,2", b"1", b"1,2,3", b'1,"2', b"x,2", b'"1",2\n']) == {
        1: "expected 2 fields, found 1",
        2: "expected 2 fields, found 3",
        3: "malformed CSV: unexpected end of data",
        4: "column 'k': cannot read 'x' as BIGINT",
    }
    options = {"csv.field-delimiter": ";", "csv.null-literal": "N/A", "csv.allow-comments": "true"}
    decoded = decode(make_format("csv", KV, options), [b"1;N/A", b"# a comment", b"2;3"])
    assert decoded.rows.to_dicts() == [{"k": 1, "v": None}, {"k": 2, "v": 3}]
    assert decoded.record.to_list() == [0, 2] and decoded.dead.height == 0
    text = {"s": pl.String(), "v": pl.Int32()}
    awkward = pl.DataFrame({"s": ["a,b", 'x"y', "l1\nl2", "back\\slash"], "v": [1, 2, 3, 4]}, schema=text)
    for options in [
        {"csv.escape-character": "\\"},
        {"csv.disable-quote-character": "true", "csv.escape-character": "\\"},
    ]:
        fmt = make_format("csv", text, options)
        assert decode(fmt, fmt.encode(awkward).to_list()).rows.equals(awkward), options
    unquoted = make_format("csv", text, {"csv.disable-quote-character": "true"})
    assert reasons("csv", [b"l1\nl2,3"], {"csv.disable-quote-character": "true"}, text) == {
        0: "malformed CSV: new-line character seen in unquoted field"
    }
    assert decode(unquoted, [b'x"y,2']).rows.rows() == [('x"y', 2)]
    quoted = make_format("csv", text, {"csv.quote-character": "'"})
    assert quoted.encode(pl.DataFrame({"s": ["a,'b"], "v": [1]})).to_list() == [b"'a,''b',1"]


def test_avro_dead_letters_and_schema() -> None:
    fmt = make_format("avro", KV, {})
    assert fmt.schema == {
        "type": "record",
        "name": "record",
        "fields": [
            {"name": "k", "type": ["null", "long"], "default": None},
            {"name": "v", "type": ["null", "int"], "default": None},
        ],
    }
    keyed = make_format("avro", KV, {}, not_null=["k"])
    assert keyed.schema["fields"][0] == {"name": "k", "type": "long"}  # a PRIMARY KEY column is NOT NULL
    assert decode(keyed, keyed.encode(pl.DataFrame({"k": [7], "v": [None]}, schema=KV)).to_list()).rows.rows() == [
        (7, None)
    ]
    with pytest.raises(FormatError, match="NOT NULL"):
        keyed.encode(pl.DataFrame({"k": [None], "v": [1]}, schema=KV))
    good = fmt.encode(pl.DataFrame({"k": [1], "v": [2]}, schema=KV)).item()
    found = reasons("avro", [good, good[:2], good + b"\x00", b"\x09", None])
    assert set(found) == {1, 2, 3, 4}
    assert found[2] == "not one Avro record: 1 bytes follow the record"
    assert found[1].startswith("not an Avro record of the table's schema")
    small = make_format("avro", {"k": pl.Int64(), "v": pl.Int8()}, {})
    assert reasons("avro", [good], columns={"k": pl.Int64(), "v": pl.Int8()}) == {}
    wide = make_format("avro", {"k": pl.Int64(), "v": pl.Int32()}, {}).encode(
        pl.DataFrame({"k": [1], "v": [300]}, schema=KV)
    )
    assert decode(small, wide.to_list()).dead.get_column("reason").to_list() == [
        "column 'v': the value 300 does not fit TINYINT"
    ]


def test_debezium_reads_each_op_and_refuses_the_rest() -> None:
    messages = [
        b'{"op":"c","before":null,"after":{"k":1,"v":1}}',
        b'{"op":"r","after":{"k":2,"v":1}}',
        b'{"op":"u","before":{"k":1,"v":1},"after":{"k":1,"v":5}}',
        b'{"op":"d","before":{"k":2,"v":1},"after":null}',
        None,  # the tombstone after a delete: skipped, not a dead letter (an empty value too)
        b'{"op":"u","before":null,"after":{"k":1,"v":5}}',
        b'{"op":"t"}',
        b'{"op":"u","before":{"k":1,"v":1},"after":{"k":1,"v":"x"}}',
        b'{"after":{"k":1}}',
        b'{"schema":{},"payload":{"op":"c","after":{"k":1,"v":1}}}',
    ]
    decoded = decode(make_format("debezium-json", KV, {}), messages)
    assert decoded.rows.rows() == [(1, 1, "+I"), (2, 1, "+I"), (1, 1, "-U"), (1, 5, "+U"), (2, 1, "-D")]
    assert decoded.record.to_list() == [0, 1, 2, 2, 3]
    found = dict(decoded.dead.rows())
    assert set(found) == {5, 6, 7, 8, 9}
    assert found[5].startswith("op 'u' without a 'before' object")
    assert found[6] == "unknown op 't' (expected c, r, u or d)"
    assert found[7] == "column 'v': cannot read 'x' as INT"  # and neither half of the update is read
    assert found[8] == "no 'op' field"
    assert "debezium-json.schema-include" in found[9]
    envelope = decode(make_format("debezium-json", KV, {"debezium-json.schema-include": "true"}), messages[-1:])
    assert envelope.rows.rows() == [(1, 1, "+I")]


def test_canal_reads_several_rows_a_message_and_filters_tables() -> None:
    options = {"canal-json.database.include": "shop", "canal-json.table.include": "orders_.*"}
    messages = [
        b'{"database":"shop","table":"orders_1","type":"INSERT","data":[{"k":"1","v":"1"},{"k":"2","v":"2"}]}',
        b'{"database":"shop","table":"orders_1","type":"UPDATE","data":[{"k":"1","v":"3"}],"old":[{"v":"1"}]}',
        b'{"database":"shop","table":"users","type":"INSERT","data":[{"k":"9"}]}',
        b'{"database":"other","table":"orders_1","type":"INSERT","data":[{"k":"9"}]}',
        b'{"database":"shop","table":"orders_1","type":"DELETE","data":[{"k":"2","v":"2"}]}',
        b'{"database":"shop","table":"orders_1","type":"CREATE","data":null,"isDdl":true}',
        b'{"database":"shop","table":"orders_1","type":"UPDATE","data":[{"k":"1"}]}',
        b'{"database":"shop","table":"orders_1","type":"ERASE","data":[]}',
        b'{"database":"shop","table":"orders_1","type":"INSERT","data":{"k":"1"}}',
        b'{"type":"INSERT","data":[{"k":"1"}]}',
        b"",  # empty: skipped like a tombstone
        b'{"database":"shop","table":"orders_1","type":"UPDATE","data":[{"k":"3","v":"3"}],"old":[{"v":null}]}',
    ]
    decoded = decode(make_format("canal-json", KV, options), messages)
    assert decoded.rows.rows() == [
        (1, 1, "+I"),
        (2, 2, "+I"),
        (1, 1, "-U"),
        (1, 3, "+U"),
        (2, 2, "-D"),
        (3, 3, "-U"),  # a NULL in `old` means unchanged, as in Flink
        (3, 3, "+U"),
    ]
    assert decoded.record.to_list() == [0, 0, 1, 1, 4, 11, 11]
    found = dict(decoded.dead.rows())
    assert found == {
        6: "type UPDATE without an 'old' array of objects as long as 'data'",
        7: "unknown type 'ERASE' (expected INSERT, UPDATE or DELETE)",
        8: "type INSERT without a 'data' array of objects",
        9: "no 'database' text to match 'canal-json.database.include'",
    }


# -- batch independence -----------------------------------------------------------------------------------------
MIXED = {
    "json": [b'{"k":1,"v":2}', b'{"k":"x"}', b"nope", b'{"k":1,"k":2,"v":3}', b'{"k":1e400}', b"\xff", None],
    "csv": [b"1,2", b'"1",2', b"x,1", b"1", b'"1', b"3,4\n", b"\xff"],
    "debezium-json": [
        b'{"op":"c","after":{"k":1,"v":2}}',
        b'{"op":"u","before":{"k":1,"v":2},"after":{"k":1,"v":3}}',
        b'{"op":"d","before":{"k":1,"v":3}}',
        None,
        b'{"op":"q"}',
        b"{bad",
        b'{"op":"c","after":{"k":"z"}}',
        # read differently by a JSON reader keeping the first of repeated keys: the batch must not take it
        b'{"op":"c","after":{"k":1,"v":2,"v":5}}',
        b'{"op":"u","before":{"k":4,"v":null,"v":7},"after":{"v":8}}',
        b'{"op":"c","op":"d","before":{"k":1,"v":1},"after":{"k":2,"v":2}}',
        b'{"op":"c","after":{"k":1,"\\u0076":9}}',
        b'{"op":"c","after":{"k":3,"v":null},"source":{"v":1}}',
        b'{"op":"r","before":null,"after":{"k":6,"v":6,"extra":{"deep":[1,2]}}}',
    ],
    "canal-json": [
        b'{"type":"INSERT","data":[{"k":"1","v":"2"},{"k":"2","v":"2"}]}',
        b'{"type":"UPDATE","data":[{"k":"1","v":"4"}],"old":[{"v":"2"}]}',
        b'{"type":"DELETE","data":[{"k":"2","v":"2"}]}',
        b'{"type":"INSERT","data":[{"k":"1","v":"y"}]}',
        b'{"type":"nope"}',
        b'{"type":"INSERT","data":[]}',
        b'{"type":"CREATE","data":null,"isDdl":true}',
        b'{"type":"UPDATE","data":[{"k":"3","v":"3"},{"k":"4","v":"4"}],"old":[{"v":null},{}]}',
        b'{"type":"INSERT","data":[{"k":"5","v":"5","v":"6"}]}',
        b'{"type":"INSERT","type":"DELETE","data":[{"k":"7","v":"7"}]}',
        b'{"type":"INSERT","data":[{"k":"8","v":"8"},null]}',
        b'{"type":"UPDATE","data":[{"k":"9","v":"9"}],"old":[]}',
    ],
}


def _avro_mixed() -> list[bytes | None]:
    fmt = make_format("avro", KV, {})
    good = fmt.encode(pl.DataFrame({"k": [1, 2, None], "v": [2, None, 3]}, schema=KV)).to_list()
    return [*good, good[0][:1], b"", None, good[1] + b"\x01"]


@pytest.mark.parametrize("name", [*MIXED, "avro"])
def test_decoding_does_not_depend_on_batches(name: str) -> None:
    fmt = make_format(name, KV, {})
    values = MIXED.get(name) or _avro_mixed()
    rng = random.Random(7)
    stream = [rng.choice(values) for _ in range(60)]
    whole = decode(fmt, stream)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 8)))
        rows, records, dead = [], [], []
        for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            part = decode(fmt, stream[lo:hi])
            rows.append(part.rows)
            records.append(part.record + lo)
            dead.append(part.dead.with_columns(pl.col("record") + lo))
        assert pl.concat(rows).equals(whole.rows)
        assert pl.concat(records).to_list() == whole.record.to_list()
        assert pl.concat(dead).equals(whole.dead)
    assert whole.dead.height > 0 and whole.rows.height > 0


def test_debezium_reads_plain_batches_in_one_vectorised_pass() -> None:
    fmt = make_format("debezium-json", KV, {})
    plain = MIXED["debezium-json"][:3]
    lines = pl.Series(plain, dtype=pl.Binary).cast(pl.String)
    fast = fmt.vectorised(lines, pl.Series([0, 1, 2], dtype=pl.Int64))
    assert fast is not None and fast.height == 4
    problems: list = []
    assert fast.equals(fmt.exact(lines, pl.Series([0, 1, 2], dtype=pl.Int64), problems, dict(fast.schema)))
    for tricky in MIXED["debezium-json"][7:-1]:  # the last one is plain: an undeclared nested field
        assert fmt.vectorised(pl.Series([tricky.decode()]), pl.Series([0])) is None, tricky


def test_canal_reads_plain_batches_in_one_vectorised_pass() -> None:
    fmt = make_format("canal-json", KV, {"canal-json.table.include": "orders"})
    plain = [
        '{"table":"orders","type":"INSERT","data":[{"k":"1","v":"2"},{"k":"2","v":"2"}]}',
        '{"table":"orders","type":"UPDATE","data":[{"k":"1","v":"4"},{"k":"2","v":"5"}],"old":[{"v":"2"},{}]}',
        '{"table":"audit","type":"INSERT","data":[{"k":"9"}]}',
        '{"table":"orders","type":"DELETE","data":[{"k":"2","v":"5"}]}',
        '{"table":"orders","type":"INSERT","data":[]}',
    ]
    records = pl.Series(range(len(plain)), dtype=pl.Int64)
    fast = fmt.vectorised(pl.Series(plain), records)
    assert fast is not None and fast.height == 7
    assert fast.equals(fmt.exact(pl.Series(plain), records, [], dict(fast.schema)))
    assert fmt.vectorised(pl.Series(['{"table":5,"type":"INSERT","data":[]}']), records[:1]) is None


@pytest.mark.parametrize("name", ["debezium-json", "canal-json"])
def test_the_vectorised_pass_reads_whatever_it_accepts_as_the_exact_path(name: str) -> None:
    """Whenever a batch takes the vectorised pass, its rows are those of the message-by-message read."""
    fmt = make_format(name, KV, {})
    lines = [v.decode() for v in MIXED[name] if v]
    rng = random.Random(3)
    accepted = 0
    for _ in range(300):
        batch = rng.sample(lines, rng.randint(1, 4))
        records = pl.Series(range(len(batch)), dtype=pl.Int64)
        fast = fmt.vectorised(pl.Series(batch, dtype=pl.String), records)
        if fast is not None:
            accepted += 1
            problems: list = []
            assert fast.equals(fmt.exact(pl.Series(batch), records, problems, dict(fast.schema))), batch
            assert not problems, batch
    assert accepted >= 20


def test_every_format_is_registered_and_refuses_what_it_cannot_hold() -> None:
    assert set(FORMATS) == {"json", "csv", "raw", "avro", "debezium-json", "canal-json"}
    with pytest.raises(FormatError, match="not supported here"):
        make_format("protobuf", KV, {})
    with pytest.raises(FormatError, match="one character"):
        make_format("csv", KV, {"csv.field-delimiter": ";;"})
    with pytest.raises(FormatError, match="regular expression"):
        make_format("canal-json", KV, {"canal-json.table.include": "("})
    with pytest.raises(FormatError, match="raw"):
        make_format("raw", KV, {})


def test_json_numbers_of_a_column_named_beyond_ascii_are_written_as_numbers() -> None:
    from engine.formats.json import encode_json

    rows = pl.DataFrame({"préis": [1.25], "n": [3]})
    assert encode_json(rows, {"préis": pl.Float64(), "n": pl.Int64()}).to_list() == ['{"préis":1.25,"n":3}'.encode()]
