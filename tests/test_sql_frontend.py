"""The front end alone: Flink syntax parses, errors name their position, unsupported constructs say so."""

from __future__ import annotations

import pytest

from sql import SqlError, UnsupportedError, parse, plan_script
from sql.dialect import Flink, TableArgument, WindowCall

DDL = """
CREATE TABLE t (
  k STRING, v BIGINT, epoch_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(epoch_ms, 3),
  proc AS PROCTIME(),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND,
  PRIMARY KEY (k) NOT ENFORCED
) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE o (k STRING, v BIGINT) WITH ('connector' = 'blackhole');
"""


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))",
        "SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' SECOND))",
        "SELECT * FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))",
        "SELECT * FROM TABLE(CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))",
        "SELECT * FROM TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), INTERVAL '10' SECOND))",
        "SELECT * FROM TABLE(SESSION(TABLE t PARTITION BY (k, v), DESCRIPTOR(ts), INTERVAL '10' SECOND))",
        "SELECT * FROM TABLE(TUMBLE(DATA => TABLE t, TIMECOL => DESCRIPTOR(ts), SIZE => INTERVAL '10' SECOND))",
    ],
)
def test_window_tvfs_parse_and_round_trip(query: str) -> None:
    tree = parse(query)[0]
    call = tree.find(WindowCall)
    assert call is not None and call.is_tvf
    assert tree.find(TableArgument) is not None
    again = parse(tree.sql(dialect=Flink))[0]
    assert again == tree


def test_legacy_group_windows_parse() -> None:
    tree = parse(
        "SELECT TUMBLE_START(ts, INTERVAL '1' MINUTE), COUNT(*) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), k"
    )[0]
    call = tree.find(WindowCall)
    assert call is not None and not call.is_tvf and call.kind == "TUMBLE"


def test_ddl_with_computed_columns_watermark_and_primary_key() -> None:
    plan = plan_script(DDL + "INSERT INTO o SELECT k, v FROM t;")
    table = plan.tables["t"]
    assert [c.name for c in table.computed] == ["ts", "proc"]
    assert table.watermark is not None and table.watermark.column == "ts"
    assert table.primary_key == ("k",)
    assert table.options["number-of-rows"] == "10"
    assert set(table.physical_schema) == {"k", "v", "epoch_ms"}


@pytest.mark.parametrize(
    ("statement", "message", "line", "col"),
    [
        ("INSERT INTO o SELECT k, vv FROM t;", "unknown column 'vv' (did you mean 'v'?)", 10, 25),
        ("INSERT INTO o SELECT k, v FROM tt;", "unknown table 'tt' (did you mean 't'?)", 10, 32),
        ("INSERT INTO o SELECT k, v FROM t WHERE k > 1;", "cannot compare STRING with", 10, 40),
        ("INSERT INTO o SELECT v, k FROM t;", "column 'k' is STRING but the query gives BIGINT", 10, 22),
        ("INSERT INTO o SELECT k FROM t;", "the query produces 1 column(s) but the table takes 2", 10, 22),
        ("INSERT INTO o SELECT k, v FROM t WHERE v;", "expected a BOOLEAN condition", 10, 40),
        ("INSERT INTO o SELECT k, UPPER(v) FROM t;", "expected a STRING, got BIGINT", 10, 31),
        ("INSERT INTO o SELECT k, v FROM t WHERE (;", "syntax error", 10, 40),
    ],
)
def test_errors_carry_line_and_column(statement: str, message: str, line: int, col: int) -> None:
    with pytest.raises(SqlError) as caught:
        plan_script(DDL + statement)
    assert message in caught.value.message
    assert (caught.value.line, caught.value.col) == (line, col), str(caught.value)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("INSERT INTO o SELECT k, v FROM t ORDER BY v;", "ORDER BY is not supported yet"),
        (
            "INSERT INTO o SELECT k, v FROM TABLE(SESSION(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND));",
            "SESSION windows need GROUP BY window_start, window_end",
        ),
        ("INSERT INTO o SELECT a.k, b.v FROM t a JOIN t b ON a.k > b.k;", "at least one equality"),
        ("INSERT INTO o SELECT k, SUM(v) OVER (PARTITION BY k ORDER BY v) FROM t;", "time attribute"),
        ("INSERT INTO o SELECT k, v FROM t UNION SELECT k, v FROM t;", "UNION without ALL"),
        ("INSERT INTO o SELECT k, FOO(v) FROM t;", "function FOO is not supported"),
    ],
)
def test_unsupported_constructs_fail_at_planning_with_a_position(statement: str, message: str) -> None:
    with pytest.raises(UnsupportedError) as caught:
        plan_script(DDL + statement)
    assert message in caught.value.message
    assert caught.value.line == 10


def test_a_script_needs_an_insert() -> None:
    with pytest.raises(SqlError, match="no INSERT INTO"):
        plan_script(DDL)


def test_statement_sets_share_their_sources() -> None:
    plan = plan_script(DDL + "INSERT INTO o SELECT k, v FROM t WHERE v > 1;\nINSERT INTO o SELECT k, v * 2 FROM t;")
    scans = [n for n in plan.nodes if type(n).__name__ == "Scan"]
    assert len(scans) == 1 and len(plan.sinks) == 2
    assert (
        plan.fingerprint
        == plan_script(
            DDL + "INSERT INTO o SELECT k, v FROM t WHERE v > 1;\nINSERT INTO o SELECT k, v * 2 FROM t;"
        ).fingerprint
    )
