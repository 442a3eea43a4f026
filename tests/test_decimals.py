"""DECIMAL aggregates stay exact: SUM is DECIMAL(38, s), AVG DECIMAL(38, max(6, s)), MIN/MAX the input type, in
GROUP BY, window aggregation and OVER, across restarts and epoch sizes; an overflow beyond 38 digits is one line.

The oracle is DuckDB's DECIMAL arithmetic over the same input text (cast to DECIMAL inside DuckDB); AVG is
computed there on the unscaled HUGEINT sums, rounded half up like Flink's decimal division.
"""

from __future__ import annotations

import random
import subprocess
import sys
from decimal import Decimal, localcontext
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import duck, read_sink, run

BASE_MS = 1_767_225_600_000
AVG_SCALE = 6


def source(p: int, s: int) -> str:
    return f"""
CREATE TABLE orders (id BIGINT, k STRING, amount DECIMAL({p}, {s}), ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'json');
"""


def make(seed: int, count: int, digits: int, s: int, start: int = 0) -> list[dict[str, object]]:
    """Rows whose amounts have `digits` integer digits (up to the type's edge), as exact decimal text."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(start, start + count):
        whole = rng.choice([10**digits - 1, rng.randrange(10**digits), rng.randrange(10 ** max(1, digits // 2)), 0])
        fraction = rng.randrange(10**s) if s else 0
        text = f"{'-' if rng.random() < 0.2 else ''}{whole}" + (f".{fraction:0{s}d}" if s else "")
        rows.append({"id": i, "k": rng.choice(["a", "b", "c"]), "amount": None if rng.random() < 0.1 else text})
        rows[-1]["ts"] = BASE_MS + i * 1000
    return rows


def write(path: Path, rows: list[dict[str, object]], quoted: bool) -> None:
    """JSON lines with the amounts as bare JSON numbers (or as JSON strings): both must parse exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in rows:
        amount = "null" if r["amount"] is None else (f'"{r["amount"]}"' if quoted else str(r["amount"]))
        lines.append(f'{{"id": {r["id"]}, "k": "{r["k"]}", "amount": {amount}, "ts": {r["ts"]}}}')
    path.write_text("".join(line + "\n" for line in lines))


def src(rows: list[dict[str, object]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={"id": pl.Int64, "k": pl.String, "amount": pl.String, "ts": pl.Int64})
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))


def avg_sql(p: int, s: int) -> str:
    """DuckDB: the exact average, rounded half up at scale 6, as text, from the unscaled HUGEINT sum."""
    unscaled = f"replace(CAST(sum(CAST(amount AS DECIMAL({p},{s}))) AS VARCHAR), '.', '')::HUGEINT"
    n = "count(amount)::HUGEINT"
    shift = 10 ** (AVG_SCALE - s)
    return (
        f"CASE WHEN {n} = 0 THEN NULL ELSE CAST(sign({unscaled}) * ((abs({unscaled}) // {n}) * {shift} + "
        f"((abs({unscaled}) % {n}) * {shift} * 2 + {n}) // (2 * {n})) AS VARCHAR) END"
    )


def scaled(unscaled: str | None) -> Decimal | None:
    """The AVG oracle's unscaled integer text as a DECIMAL(38, 6) value, exactly (Python rounds to 28 digits)."""
    if unscaled is None:
        return None
    with localcontext() as context:
        context.prec = 80
        return Decimal(int(unscaled)).scaleb(-AVG_SCALE)


def oracle(rows: list[dict[str, object]], p: int, s: int, group: str, where: str = "TRUE") -> list[tuple]:
    d = f"CAST(amount AS DECIMAL({p},{s}))"
    query = (
        f"SELECT {group}, count(*)::BIGINT AS n, sum({d}) AS total, {avg_sql(p, s)} AS mean, min({d}) AS lo, "
        f"max({d}) AS hi FROM src WHERE {where} GROUP BY {group} ORDER BY {group}"
    )
    result = duck(query, src=src(rows))
    return [(*r[:-4], r[-4], scaled(r[-3]), r[-2], r[-1]) for r in result.rows()]


def group_by_sql(p: int, s: int) -> str:
    return (
        source(p, s)
        + f"""
CREATE TABLE totals (k STRING, n BIGINT, total DECIMAL(38, {s}), mean DECIMAL(38, {AVG_SCALE}),
  lo DECIMAL({p}, {s}), hi DECIMAL({p}, {s}), PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT k, COUNT(*), SUM(amount), AVG(amount), MIN(amount), MAX(amount) FROM orders GROUP BY k;
"""
    )


def sink_rows(path: Path, order: list[str]) -> list[tuple]:
    return read_sink(path).sort(order).rows()


# (precision, scale, integer digits of the amounts): a sum of DECIMAL(10, 2) exceeds 10 digits, DECIMAL(18, 2)
# runs past 2^53, and DECIMAL(38, 0) amounts of 31 digits leave AVG's DECIMAL(38, 6) just enough room.
CASES = [(10, 2, 8), (18, 2, 16), (38, 0, 31), (38, 4, 26)]


def splits(cases: list[tuple[int, ...]], every: tuple[int | None, ...] = (1, 3, None)) -> list[tuple[object, ...]]:
    """The first case at every epoch size, the others in one epoch: split independence is tested at length
    elsewhere (tests/test_multi_source_watermarks.py); here the point is exactness at each precision."""
    return [(*cases[0], m) for m in every] + [(*case, None) for case in cases[1:]]


@pytest.mark.parametrize(("p", "s", "digits", "max_rows"), splits(CASES))
def test_group_by_decimals_equal_duckdb(tmp_path: Path, p: int, s: int, digits: int, max_rows: int | None) -> None:
    rows = make(p * 10 + s, 40, digits, s)
    write(tmp_path / "in" / "1.json", rows[:25], quoted=False)
    write(tmp_path / "in" / "2.json", rows[25:], quoted=True)
    run(tmp_path, group_by_sql(p, s), max_epoch_rows=max_rows)
    sink = read_sink(tmp_path / "totals")
    assert sink.schema["total"] == pl.Decimal(38, s) and sink.schema["mean"] == pl.Decimal(38, AVG_SCALE)
    assert sink.schema["lo"] == pl.Decimal(p, s)
    assert sink.sort("k").rows() == oracle(rows, p, s, "k")


def test_issue_sum_of_decimal_10_2_exceeds_its_precision(tmp_path: Path) -> None:
    rows = [{"id": i, "k": "a", "amount": a, "ts": BASE_MS + i} for i, a in enumerate(["59999999.99", "49999999.99"])]
    write(tmp_path / "in" / "1.json", rows, quoted=False)
    run(tmp_path, group_by_sql(10, 2))
    assert read_sink(tmp_path / "totals").row(0)[2] == Decimal("109999999.98")


def test_restart_keeps_decimals_exact(tmp_path: Path) -> None:
    rows = make(7, 60, 16, 2)
    write(tmp_path / "in" / "1.json", rows[:30], quoted=False)
    run(tmp_path, group_by_sql(18, 2), max_epoch_rows=4)
    write(tmp_path / "in" / "2.json", rows[30:], quoted=False)  # the state comes back from Delta
    run(tmp_path, group_by_sql(18, 2), max_epoch_rows=4)
    assert read_sink(tmp_path / "totals").sort("k").rows() == oracle(rows, 18, 2, "k")
    state = next(p for p in (tmp_path / "state").rglob("_delta_log") if "agg" in str(p)).parent
    stored = pl.read_delta(str(state)).schema  # plain Delta: DECIMAL(38, 2) sums, readable by Polars
    assert pl.Decimal(38, 2) in [t for n, t in stored.items() if n.endswith("__sum")]


WINDOW_SQL = """
CREATE TABLE out (k STRING, ws TIMESTAMP(3), n BIGINT, total DECIMAL(38, {s}), mean DECIMAL(38, 6),
  lo DECIMAL({p}, {s}), hi DECIMAL({p}, {s}))
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT k, window_start, COUNT(*), SUM(amount), AVG(amount), MIN(amount), MAX(amount)
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;
"""


@pytest.mark.parametrize(("p", "s", "digits", "max_rows"), splits(CASES[:3], (1, None)))
def test_tumble_decimals_equal_duckdb(tmp_path: Path, p: int, s: int, digits: int, max_rows: int | None) -> None:
    rows = make(p + s, 45, digits, s)
    write(tmp_path / "in" / "1.json", rows, quoted=False)
    run(tmp_path, source(p, s) + WINDOW_SQL.format(p=p, s=s), max_epoch_rows=max_rows)
    sink = read_sink(tmp_path / "out")
    assert sink.schema["total"] == pl.Decimal(38, s)
    watermark = max(r["ts"] for r in rows) - 1000  # windows ending by the final watermark have fired
    group = "k, (epoch_ms(ts) // 10000) * 10000"
    expected = oracle(rows, p, s, group, where=f"(epoch_ms(ts) // 10000) * 10000 + 10000 - 1 <= {watermark}")
    got = sink.with_columns(pl.col("ws").dt.epoch("ms")).sort("k", "ws").rows()
    assert got == expected


OVER_SQL = """
CREATE TABLE out (id BIGINT, total DECIMAL(38, {s}), mean DECIMAL(38, 6), lo DECIMAL({p}, {s}), hi DECIMAL({p}, {s}))
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT id, SUM(amount) OVER {w}, AVG(amount) OVER {w}, MIN(amount) OVER {w}, MAX(amount) OVER {w}
FROM orders;
"""


def over_sql(p: int, s: int, frame: str) -> str:
    return source(p, s) + OVER_SQL.format(p=p, s=s, w=f"(PARTITION BY k ORDER BY ts {frame})")


FRAMES = {
    "unbounded": (
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
    ),
    "rows": ("ROWS BETWEEN 2 PRECEDING AND CURRENT ROW", "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW"),
    "range": (
        "RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW",
        "RANGE BETWEEN INTERVAL 3 SECOND PRECEDING AND CURRENT ROW",
    ),
}


def over_oracle(rows: list[dict[str, object]], p: int, s: int, frame: str) -> list[tuple]:
    d = f"CAST(amount AS DECIMAL({p},{s}))"
    window = f"(PARTITION BY k ORDER BY ts {frame})"
    unscaled = f"replace(CAST(sum({d}) OVER {window} AS VARCHAR), '.', '')::HUGEINT"
    n = f"(count(amount) OVER {window})::HUGEINT"
    shift = 10 ** (AVG_SCALE - s)
    mean = (
        f"CASE WHEN {n} = 0 THEN NULL ELSE CAST(sign({unscaled}) * ((abs({unscaled}) // {n}) * {shift} + "
        f"((abs({unscaled}) % {n}) * {shift} * 2 + {n}) // (2 * {n})) AS VARCHAR) END"
    )
    query = (
        f"SELECT id, sum({d}) OVER {window}, {mean}, min({d}) OVER {window}, max({d}) OVER {window} "
        f"FROM src WHERE epoch_ms(ts) <= {max(r['ts'] for r in rows) - 1000} ORDER BY id"  # type: ignore[type-var]
    )
    return [(r[0], r[1], scaled(r[2]), r[3], r[4]) for r in duck(query, src=src(rows)).rows()]


@pytest.mark.parametrize("frame", list(FRAMES))
@pytest.mark.parametrize(("p", "s", "digits", "max_rows"), splits([(18, 2, 16), (38, 0, 31)], (1, None)))
def test_over_decimals_equal_duckdb(
    tmp_path: Path, frame: str, p: int, s: int, digits: int, max_rows: int | None
) -> None:
    rows = make(len(frame) + p, 40, digits, s)
    write(tmp_path / "in" / "1.json", rows[:20], quoted=False)
    write(tmp_path / "in" / "2.json", rows[20:], quoted=True)
    ours, theirs = FRAMES[frame]
    run(tmp_path, over_sql(p, s, ours), max_epoch_rows=max_rows)
    sink = read_sink(tmp_path / "out")
    assert sink.schema["total"] == pl.Decimal(38, s) and sink.schema["mean"] == pl.Decimal(38, 6)
    assert sink.sort("id").rows() == over_oracle(rows, p, s, theirs)


def test_issue_running_sum_of_decimal_18_2_is_exact(tmp_path: Path) -> None:
    rows = [
        {"id": i, "k": "a", "amount": a, "ts": BASE_MS + i * 1000}
        for i, a in enumerate(["1234567890123456.01", "0.01", "0.00"])
    ]
    write(tmp_path / "in" / "1.json", rows, quoted=False)
    frame = FRAMES["unbounded"][0]
    run(tmp_path, over_sql(18, 2, frame))
    assert read_sink(tmp_path / "out").sort("id").get_column("total").to_list() == [
        Decimal("1234567890123456.01"),
        Decimal("1234567890123456.02"),
    ]


def test_sums_near_ten_to_the_36(tmp_path: Path) -> None:
    """DECIMAL(38, 2) holds 36 integer digits: sums up to there are exact, in every operator."""
    big = "4" + "9" * 35 + ".99"
    amounts = [big, big, "-" + big, "0.01", big]  # 9.99...98e35 at most: it fits
    rows = [{"id": i, "k": "a", "amount": a, "ts": BASE_MS + i * 1000} for i, a in enumerate(amounts)]
    write(tmp_path / "in" / "1.json", rows, quoted=False)
    sql = (
        source(38, 2)
        + """
CREATE TABLE totals (k STRING, total DECIMAL(38, 2), PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'totals');
INSERT INTO totals SELECT k, SUM(amount) FROM orders GROUP BY k;
CREATE TABLE out (id BIGINT, total DECIMAL(38, 2)) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT id, SUM(amount) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND
  CURRENT ROW) FROM orders;
CREATE TABLE out2 (id BIGINT, recent DECIMAL(38, 2)) WITH ('connector' = 'delta', 'path' = 'out2');
INSERT INTO out2 SELECT id, SUM(amount) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
FROM orders;
"""
    )
    run(tmp_path, sql, max_epoch_rows=2)
    total = duck("SELECT sum(CAST(amount AS DECIMAL(38,2))) FROM src", src=src(rows)).item()
    with localcontext() as context:  # Python's own decimals round to 28 digits by default
        context.prec = 60
        assert read_sink(tmp_path / "totals").item(0, "total") == total == Decimal(big) * 2 + Decimal("0.01")
    emitted = rows[:-1]  # the last row waits for the watermark
    running = duck(
        "SELECT sum(CAST(amount AS DECIMAL(38,2))) OVER (ORDER BY id), sum(CAST(amount AS DECIMAL(38,2))) OVER "
        "(ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM src ORDER BY id",
        src=src(emitted),
    )
    assert read_sink(tmp_path / "out").sort("id").get_column("total").to_list() == running.to_series(0).to_list()
    assert read_sink(tmp_path / "out2").sort("id").get_column("recent").to_list() == running.to_series(1).to_list()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("query", ["group_by", "over_rows", "over_unbounded"])
def test_overflow_is_one_line_error_naming_the_aggregate(tmp_path: Path, query: str) -> None:
    big = "9" * 36 + ".00"  # the largest DECIMAL(38, 2): two of them need 37 integer digits
    rows = [{"id": i, "k": "a", "amount": big, "ts": BASE_MS + i * 1000} for i in range(3)]
    write(tmp_path / "in" / "1.json", rows, quoted=False)
    selects = {
        "group_by": "CREATE TABLE t (k STRING, total DECIMAL(38, 2), PRIMARY KEY (k) NOT ENFORCED) "
        "WITH ('connector' = 'delta', 'path' = 't'); INSERT INTO t SELECT k, SUM(amount) FROM orders GROUP BY k;",
        "over_rows": "CREATE TABLE t (id BIGINT, total DECIMAL(38, 2)) WITH ('connector' = 'delta', 'path' = 't'); "
        "INSERT INTO t SELECT id, SUM(amount) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND "
        "CURRENT ROW) FROM orders;",
        "over_unbounded": "CREATE TABLE t (id BIGINT, total DECIMAL(38, 2)) WITH ('connector' = 'delta', "
        "'path' = 't'); INSERT INTO t SELECT id, SUM(amount) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN "
        "UNBOUNDED PRECEDING AND CURRENT ROW) FROM orders;",
    }
    (tmp_path / "pipeline.sql").write_text(source(38, 2) + selects[query])
    for _ in range(2):  # the same clear error again on a restart: nothing of the failing epoch was committed
        result = cli("run", "pipeline.sql", "--state", "st", "--once", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "SUM(amount)" in lines[0] and "DECIMAL(38, 2)" in lines[0] and "epoch" in lines[0]
