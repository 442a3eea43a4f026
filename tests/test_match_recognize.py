"""MATCH_RECOGNIZE against a brute-force oracle written here, independently of the operator's matcher.

The oracle enumerates the words of the pattern's language in the SQL standard's preference order (greedy:
one more iteration first; reluctant: one fewer; alternatives left to right; concatenation lexicographic),
without looking at the rows, and takes for each start row the first word whose rows all satisfy their
variable's DEFINE (written here again in Python) within WITHIN; then AFTER MATCH SKIP says where the next match
may start. Each case runs as a pipeline at epoch sizes 1, 7 and all rows, drained at the end.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import versioning
from sql.errors import SqlError
from sql.planner import plan_script
from tests.helpers import examples, read_sink, run, write_jsonl

BASE_MS = 1_767_225_600_000
Tree = Any  # a variable name, ("seq", ...), ("alt", ...) or ("rep", item, low, high, greedy)


# -- the oracle ------------------------------------------------------------------------------------------
def words(node: Tree, room: int) -> Iterator[tuple[str, ...]]:
    """The words of the pattern of at most `room` rows, most preferred first."""
    if isinstance(node, str):
        if room >= 1:
            yield (node,)
        return
    kind = node[0]
    if kind == "seq":
        yield from _concat(node[1:], room)
    elif kind == "alt":
        for option in node[1:]:
            yield from words(option, room)
    else:
        _, item, low, high, greedy = node
        yield from _iterations(item, low, high, greedy, 0, room)


def _concat(items: tuple[Tree, ...], room: int) -> Iterator[tuple[str, ...]]:
    if not items:
        yield ()
        return
    for head in words(items[0], room):
        for rest in _concat(items[1:], room - len(head)):
            yield head + rest


def _iterations(item: Tree, low: int, high: int | None, greedy: bool, done: int, room: int) -> Iterator:
    stop = done >= low
    if stop and not greedy:
        yield ()
    if high is None or done < high:
        for one in words(item, room):
            for rest in _iterations(item, low, high, greedy, done + 1, room - len(one)):
                yield one + rest
    if stop and greedy:
        yield ()


class Rows:
    """The rows of a (partial) match and their variables, as DEFINE and MEASURES see them."""

    def __init__(self, rows: list[dict[str, Any]], labels: tuple[str, ...]) -> None:
        self.rows, self.labels = rows, labels

    def of(self, var: str | None) -> list[dict[str, Any]]:
        return [r for r, label in zip(self.rows, self.labels, strict=True) if var is None or label == var]

    def cur(self, col: str) -> Any:
        return self.rows[-1][col]

    def last(self, var: str | None, col: str, k: int = 0) -> Any:
        bound = self.of(var)
        return bound[-1 - k][col] if len(bound) > k else None

    def first(self, var: str | None, col: str, k: int = 0) -> Any:
        bound = self.of(var)
        return bound[k][col] if len(bound) > k else None

    def prev(self, col: str, k: int = 1) -> Any:
        return self.rows[-1 - k][col] if len(self.rows) > k else None

    def values(self, var: str, col: str) -> list[Any]:
        return [r[col] for r in self.of(var) if r[col] is not None]


def lt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a < b


def gt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a > b


@dataclass
class Case:
    name: str
    pattern_sql: str
    tree: Tree
    define_sql: str
    defines: dict[str, Callable[[Rows], bool]]
    measures_sql: str
    measures: Callable[[Rows], tuple[Any, ...]]
    columns: str  # the sink's measure columns
    after: str = "PAST LAST ROW"
    within_ms: int | None = None
    partition: bool = True
    rows: Callable[[int], list[dict[str, Any]]] = field(default=lambda seed: prices(seed, 28))


def oracle(case: Case, data: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    parts: dict[Any, list[dict[str, Any]]] = {}
    for arrival, row in enumerate(data):
        parts.setdefault(row["k"] if case.partition else None, []).append({**row, "_arrival": arrival})
    out = []
    for key, rows in parts.items():
        rows.sort(key=lambda r: (r["ts"], r["_arrival"]))
        start = 0
        while start < len(rows):
            match = next((w for w in words(case.tree, len(rows) - start) if fits(case, rows, start, w)), None)
            if match is None:
                start += 1
                continue
            bound = Rows(rows[start : start + len(match)], match)
            out.append(((key,) if case.partition else ()) + case.measures(bound))
            start = skip(case.after, start, match)
    return sorted(out, key=repr)


def fits(case: Case, rows: list[dict[str, Any]], start: int, word: tuple[str, ...]) -> bool:
    for i, var in enumerate(word):
        if case.within_ms is not None and rows[start + i]["ts"] - rows[start]["ts"] >= case.within_ms:
            return False
        define = case.defines.get(var)
        if define is not None and not define(Rows(rows[start : start + i + 1], word[: i + 1])):
            return False
    return True


def skip(after: str, start: int, word: tuple[str, ...]) -> int:
    if after == "PAST LAST ROW":
        return start + len(word)
    if after == "TO NEXT ROW":
        return start + 1
    _, which, var = after.split()
    at = [start + i for i, label in enumerate(word) if label == var]
    if not at:
        return start + 1
    return max(at[0] if which == "FIRST" else at[-1], start + 1)


# -- inputs ----------------------------------------------------------------------------------------------
def prices(seed: int, count: int, keys: str = "ab", ties: bool = False, step: int = 1000) -> list[dict[str, Any]]:
    """Prices per key, `step` ms apart, arriving up to 750 ms out of order (the watermark allows 1 s: nothing is
    late); with `ties`, rows come in pairs with the same time."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        ts = BASE_MS + (i // 2) * step if ties else BASE_MS + i * step - rng.randint(0, 3) * 250
        rows.append({"k": rng.choice(keys), "v": rng.randint(0, 9), "ok": rng.random() < 0.4, "ts": ts})
    return rows


def ms(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, dt.datetime) else value


def run_case(root: Path, case: Case, data: list[dict[str, Any]], max_rows: int | None) -> list[tuple[Any, ...]]:
    write_jsonl(root / "events" / "1.json", data)
    run(root, run_case_sql(case), max_epoch_rows=max_rows, drain=True)
    out = read_sink(root / "out")
    return sorted((tuple(ms(v) for v in row) for row in out.iter_rows()), key=repr)


def run_case_sql(case: Case) -> str:
    partition = "PARTITION BY k" if case.partition else ""
    within = ""
    if case.within_ms:
        minutes, seconds = divmod(case.within_ms // 1000, 60)
        within = f"WITHIN INTERVAL '{minutes}' MINUTE" if not seconds else f"WITHIN INTERVAL '{seconds}' SECOND"
    key_column = "k STRING, " if case.partition else ""
    # checkpoints every 10 epochs: state is still committed mid-run, and the runs take less time
    return f"""
SET 'checkpoint.interval' = '10 epochs';
CREATE TABLE events (k STRING, v INT, ok BOOLEAN, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'events', 'format' = 'json');
CREATE TABLE out ({key_column}{case.columns}) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT /*+ STATE_ID('mr') */ * FROM events MATCH_RECOGNIZE (
  {partition} ORDER BY ts
  MEASURES {case.measures_sql}
  ONE ROW PER MATCH AFTER MATCH SKIP {case.after}
  PATTERN ({case.pattern_sql}) {within}
  DEFINE {case.define_sql}
) AS T;
"""


def _avg(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


# -- the corpus ------------------------------------------------------------------------------------------
V_SHAPE = Case(
    "stock V-shape (Flink's Ticker example)",
    "START_ROW PRICE_DOWN+ PRICE_UP",
    ("seq", "START_ROW", ("rep", "PRICE_DOWN", 1, None, True), "PRICE_UP"),
    "PRICE_DOWN AS (LAST(PRICE_DOWN.v, 1) IS NULL AND PRICE_DOWN.v < START_ROW.v) "
    "OR PRICE_DOWN.v < LAST(PRICE_DOWN.v, 1), PRICE_UP AS PRICE_UP.v > LAST(PRICE_DOWN.v, 0)",
    {
        "PRICE_DOWN": lambda m: (
            (m.last("PRICE_DOWN", "v", 1) is None and lt(m.cur("v"), m.last("START_ROW", "v")))
            or lt(m.cur("v"), m.last("PRICE_DOWN", "v", 1))
        ),
        "PRICE_UP": lambda m: gt(m.cur("v"), m.last("PRICE_DOWN", "v")),
    },
    "START_ROW.ts AS start_ts, LAST(PRICE_DOWN.ts) AS bottom_ts, LAST(PRICE_UP.ts) AS end_ts, "
    "COUNT(PRICE_DOWN.v) AS downs, MATCH_ROWTIME() AS mt",
    lambda m: (
        m.first("START_ROW", "ts"),
        m.last("PRICE_DOWN", "ts"),
        m.last("PRICE_UP", "ts"),
        len(m.of("PRICE_DOWN")),
        m.rows[-1]["ts"],
    ),
    "start_ts TIMESTAMP(3), bottom_ts TIMESTAMP(3), end_ts TIMESTAMP(3), downs BIGINT, mt TIMESTAMP(3)",
    after="TO LAST PRICE_UP",
)
FAILED_LOGINS = Case(
    "three failed logins within a minute",
    "F{3}",
    ("rep", "F", 3, 3, True),
    "F AS NOT F.ok",
    {"F": lambda m: not m.cur("ok")},
    "FIRST(F.ts) AS first_ts, LAST(F.ts) AS last_ts",
    lambda m: (m.first("F", "ts"), m.last("F", "ts")),
    "first_ts TIMESTAMP(3), last_ts TIMESTAMP(3)",
    within_ms=60_000,
    rows=lambda seed: prices(seed, 28, step=20_000),
)
GREEDY_LAST = Case(
    "a greedy quantifier last, cut by WITHIN (decided when the watermark passes it)",
    "A B+",
    ("seq", "A", ("rep", "B", 1, None, True)),
    "A AS A.v >= 5, B AS B.v < 8",
    {"A": lambda m: m.cur("v") >= 5, "B": lambda m: m.cur("v") < 8},
    "A.v AS a, COUNT(B.v) AS bs, MATCH_ROWTIME() AS mt",
    lambda m: (m.last("A", "v"), len(m.of("B")), m.rows[-1]["ts"]),
    "a INT, bs BIGINT, mt TIMESTAMP(3)",
    within_ms=60_000,
    rows=lambda seed: prices(seed, 28, step=20_000),
)
SENSOR_RISE = Case(
    "sensor rises (A B+ C with PREV and LAST)",
    "A B+ C",
    ("seq", "A", ("rep", "B", 1, None, True), "C"),
    "B AS B.v > PREV(B.v), C AS C.v < LAST(B.v)",
    {"B": lambda m: gt(m.cur("v"), m.prev("v")), "C": lambda m: lt(m.cur("v"), m.last("B", "v"))},
    "A.v AS base, LAST(B.v) AS peak, SUM(B.v) AS total, AVG(B.v) AS mean, MAX(B.v) AS hi, MIN(B.v) AS lo, "
    "FIRST(B.v, 1) AS second",
    lambda m: (
        m.last("A", "v"),
        m.last("B", "v"),
        sum(m.values("B", "v")),
        _avg(m.values("B", "v")),
        max(m.values("B", "v")),
        min(m.values("B", "v")),
        m.first("B", "v", 1),
    ),
    "base INT, peak INT, total BIGINT, mean DOUBLE, hi INT, lo INT, second INT",
)
ALTERNATION = Case(
    "alternation in a group, {n}",
    "S (UP | DOWN){2} E",
    ("seq", "S", ("rep", ("alt", "UP", "DOWN"), 2, 2, True), "E"),
    "UP AS UP.v > PREV(UP.v), DOWN AS DOWN.v < PREV(DOWN.v), E AS E.v = PREV(E.v) OR E.v > 7",
    {
        "UP": lambda m: gt(m.cur("v"), m.prev("v")),
        "DOWN": lambda m: lt(m.cur("v"), m.prev("v")),
        "E": lambda m: m.cur("v") == m.prev("v") or m.cur("v") > 7,
    },
    "S.v AS s, COUNT(UP.v) AS ups, LAST(E.v) AS e",
    lambda m: (m.last("S", "v"), len(m.of("UP")), m.last("E", "v")),
    "s INT, ups BIGINT, e INT",
)
BOUNDED = Case(
    "{n,m} greedy",
    "A B{1,3} C",
    ("seq", "A", ("rep", "B", 1, 3, True), "C"),
    "A AS A.v < 5, B AS B.v >= 3, C AS C.v >= 4",
    {"A": lambda m: m.cur("v") < 5, "B": lambda m: m.cur("v") >= 3, "C": lambda m: m.cur("v") >= 4},
    "FIRST(A.ts) AS a_ts, COUNT(B.v) AS bs, LAST(C.v) AS c",
    lambda m: (m.first("A", "ts"), len(m.of("B")), m.last("C", "v")),
    "a_ts TIMESTAMP(3), bs BIGINT, c INT",
)
RELUCTANT = Case(
    "reluctant {n,m}? and *?",
    "A B{1,3}? C*? D",
    ("seq", "A", ("rep", "B", 1, 3, False), ("rep", "C", 0, None, False), "D"),
    "A AS A.v < 5, B AS B.v >= 3, C AS C.v >= 2, D AS D.v >= 4",
    {
        "A": lambda m: m.cur("v") < 5,
        "B": lambda m: m.cur("v") >= 3,
        "C": lambda m: m.cur("v") >= 2,
        "D": lambda m: m.cur("v") >= 4,
    },
    "FIRST(A.ts) AS a_ts, COUNT(B.v) AS bs, COUNT(C.v) AS cs, LAST(D.ts) AS d_ts",
    lambda m: (m.first("A", "ts"), len(m.of("B")), len(m.of("C")), m.last("D", "ts")),
    "a_ts TIMESTAMP(3), bs BIGINT, cs BIGINT, d_ts TIMESTAMP(3)",
)
OPTIONAL = Case(
    "optional (greedy ?, reluctant ??), {,m}, no PARTITION BY, ties in time",
    "A X?? Y? B{,2} C",
    ("seq", "A", ("rep", "X", 0, 1, False), ("rep", "Y", 0, 1, True), ("rep", "B", 0, 2, True), "C"),
    "A AS A.v > 6, X AS X.v < 5, Y AS Y.v < 3, B AS B.v <= 5, C AS C.v > PREV(C.v)",
    {
        "A": lambda m: m.cur("v") > 6,
        "X": lambda m: m.cur("v") < 5,
        "Y": lambda m: m.cur("v") < 3,
        "B": lambda m: m.cur("v") <= 5,
        "C": lambda m: gt(m.cur("v"), m.prev("v")),
    },
    "FIRST(A.ts) AS a_ts, COUNT(X.v) AS xs, COUNT(Y.v) AS ys, COUNT(B.v) AS bs, LAST(C.v) AS c",
    lambda m: (m.first("A", "ts"), len(m.of("X")), len(m.of("Y")), len(m.of("B")), m.last("C", "v")),
    "a_ts TIMESTAMP(3), xs BIGINT, ys BIGINT, bs BIGINT, c INT",
    partition=False,
    rows=lambda seed: prices(seed, 28, ties=True),
)


def _skip_case(after: str) -> Case:
    return Case(
        f"AFTER MATCH SKIP {after}",
        "A B+ C",
        ("seq", "A", ("rep", "B", 1, None, True), "C"),
        "A AS A.v <= 6, B AS B.v >= 2, C AS C.v >= 5",
        {"A": lambda m: m.cur("v") <= 6, "B": lambda m: m.cur("v") >= 2, "C": lambda m: m.cur("v") >= 5},
        "FIRST(A.ts) AS a_ts, COUNT(B.v) AS bs, LAST(C.ts) AS c_ts",
        lambda m: (m.first("A", "ts"), len(m.of("B")), m.last("C", "ts")),
        "a_ts TIMESTAMP(3), bs BIGINT, c_ts TIMESTAMP(3)",
        after=after,
    )


CORPUS = [
    V_SHAPE,
    FAILED_LOGINS,
    GREEDY_LAST,
    SENSOR_RISE,
    ALTERNATION,
    BOUNDED,
    RELUCTANT,
    OPTIONAL,
    *[_skip_case(a) for a in ("PAST LAST ROW", "TO NEXT ROW", "TO FIRST B", "TO LAST B")],
]


@pytest.mark.parametrize("case", CORPUS, ids=[re.sub(r"\W+", "-", c.name).strip("-") for c in CORPUS])
def test_corpus_equals_the_oracle_at_every_epoch_size(tmp_path: Path, case: Case) -> None:
    data = case.rows(7)
    expected = oracle(case, data)
    assert expected, "the input should give matches"
    for max_rows in (1, 7, None):
        got = run_case(tmp_path / f"rows-{max_rows}", case, data, max_rows)
        assert got == expected, f"epochs of {max_rows} rows"


def test_under_a_memory_budget_equals_the_oracle(tmp_path: Path) -> None:
    # the operator then runs in parts by key group, each part's state read back from disk when it runs
    data = SENSOR_RISE.rows(11)
    write_jsonl(tmp_path / "events" / "1.json", data)
    run(tmp_path, "SET 'state.memory.budget' = '1 mb';\n" + run_case_sql(SENSOR_RISE), max_epoch_rows=5, drain=True)
    got = sorted((tuple(ms(v) for v in row) for row in read_sink(tmp_path / "out").iter_rows()), key=repr)
    assert got == oracle(SENSOR_RISE, data)


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 100_000),
    count=st.integers(1, 30),
    which=st.sampled_from([V_SHAPE, SENSOR_RISE, RELUCTANT, FAILED_LOGINS, GREEDY_LAST]),
    max_rows=st.one_of(st.none(), st.integers(1, 9)),
)
def test_random_inputs_and_epoch_splits_equal_the_oracle(
    tmp_path_factory: pytest.TempPathFactory, seed: int, count: int, which: Case, max_rows: int | None
) -> None:
    data = prices(seed, count, keys="ab", step=20_000 if which.within_ms else 1000)
    got = run_case(tmp_path_factory.mktemp("random"), which, data, max_rows)
    assert got == oracle(which, data)


# -- state -----------------------------------------------------------------------------------------------
RISE_SQL = """
CREATE TABLE events (k STRING, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'filesystem', 'path' = 'events', 'format' = 'json');
CREATE TABLE out (k STRING, base INT, peak INT, last_v INT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT /*+ STATE_ID('mr') */ * FROM events MATCH_RECOGNIZE (
  PARTITION BY k ORDER BY ts
  MEASURES A.v AS base, LAST(B.v) AS peak, C.v AS last_v
  PATTERN (A B+ C)
  DEFINE B AS B.v > PREV(B.v), C AS C.v < PREV(C.v)
);
"""


def _rise_rows(values: list[int], key: str = "x", offset: int = 0) -> list[dict[str, Any]]:
    return [{"k": key, "v": v, "ts": BASE_MS + (offset + i) * 1000} for i, v in enumerate(values)]


def test_state_at_a_savepoint_holds_exactly_the_open_partial_matches(tmp_path: Path) -> None:
    # Epoch 1 releases 1, 2, 3 (the watermark is the last time): A B B waits for another B or a C, and so do the
    # runs that start at 2 (A B) and at 3 (A). Epoch 2's 2 is a C: the match ends, and nothing stays open.
    write_jsonl(tmp_path / "events" / "1.json", _rise_rows([1, 2, 3, 2]))
    run(tmp_path, RISE_SQL, max_epoch_rows=3)
    versioning.create_savepoint(tmp_path / "state", "open", epoch=1)
    history = engine.open(tmp_path / "state")
    rows = history.state("mr", at="open")
    runs = history.state("mr/runs", at="open")
    value = dict(zip(rows["__seq"], rows["v"], strict=True))
    assert sorted(value.values()) == [1, 2, 3]
    found = sorted((value[r["__start"]], r["__pos"], value[r["__seq"]], r["__var"]) for r in runs.iter_rows(named=True))
    assert found == [
        (1, 0, 1, "A"),
        (1, 1, 2, "B"),
        (1, 2, 3, "B"),
        (2, 0, 2, "A"),
        (2, 1, 3, "B"),
        (3, 0, 3, "A"),
    ]
    assert set(runs["k"]) == {"x"}
    assert history.sink("out", at="open").height == 0
    # After epoch 2 (the watermark passed the last row): the match, and no run open (nothing is released after
    # the match's last row).
    assert history.sink("out", at=2).rows() == [("x", 1, 3, 2)]
    assert history.state("mr", at=2).height == 0
    assert history.state("mr/runs", at=2).height == 0


def test_rollback_to_a_savepoint_and_rerun_equals_a_straight_run(tmp_path: Path) -> None:
    straight, rolled = tmp_path / "straight", tmp_path / "rolled"
    rng = random.Random(5)
    data = [r for k in "xy" for r in _rise_rows([rng.randint(0, 9) for _ in range(30)], k)]
    data.sort(key=lambda r: r["ts"])
    for root in (straight, rolled):
        write_jsonl(root / "events" / "1.json", data)
    run(straight, RISE_SQL, max_epoch_rows=4)
    run(rolled, RISE_SQL, max_epoch_rows=4)
    versioning.create_savepoint(rolled / "state", "sp", epoch=6)
    versioning.rollback(rolled / "state", savepoint="sp", reason="test")
    run(rolled, RISE_SQL, max_epoch_rows=4)
    assert sorted(read_sink(rolled / "out").rows()) == sorted(read_sink(straight / "out").rows())
    # arrival numbers (__seq) count epochs, which go on after a rollback: compare rows by their time instead
    for root in (straight, rolled):
        rows = engine.open(root / "state").state("mr")
        runs = engine.open(root / "state").state("mr/runs")
        time = dict(zip(rows["__seq"], rows["ts"], strict=True))
        kept = sorted(rows.drop("__seq", "_kg", strict=False).rows())
        open_runs = sorted(
            (time[r["__start"]], r["__pos"], time[r["__seq"]], r["__var"]) for r in runs.iter_rows(named=True)
        )
        if root == straight:
            expected = (kept, open_runs)
        else:
            assert (kept, open_runs) == expected


# -- refusals --------------------------------------------------------------------------------------------
TICKS = """
CREATE TABLE t (k STRING, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'filesystem', 'path' = 't', 'format' = 'json');
CREATE TABLE plain (k STRING, v INT, ts TIMESTAMP(3))
WITH ('connector' = 'filesystem', 'path' = 'p', 'format' = 'json');
CREATE TABLE o (k STRING, x INT) WITH ('connector' = 'delta', 'path' = 'o');
"""


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ("ORDER BY ts MEASURES A.v AS x ALL ROWS PER MATCH PATTERN (A) DEFINE A AS A.v > 1", "ALL ROWS PER MATCH"),
        ("ORDER BY ts MEASURES A.v AS x PATTERN (A*) DEFINE A AS A.v > 1", "can match no rows"),
        ("ORDER BY v MEASURES A.v AS x PATTERN (A B) DEFINE A AS A.v > 1", "time attribute"),
        ("ORDER BY ts DESC MEASURES A.v AS x PATTERN (A B)", "ascending"),
        ("ORDER BY ts MEASURES Z.v AS x PATTERN (A B)", "unknown pattern variable 'Z'"),
        ("ORDER BY ts MEASURES A.v AS x PATTERN (A B) DEFINE Q AS Q.v > 1", "not in the PATTERN"),
        ("ORDER BY ts MEASURES MATCH_PROCTIME() AS x PATTERN (A B)", "MATCH_PROCTIME"),
        ("ORDER BY ts MEASURES A.v AS x AFTER MATCH SKIP TO LAST Z PATTERN (A B)", "not a pattern variable"),
        ("ORDER BY ts MEASURES A.v AS x PATTERN (A PERMUTE(B))", "PERMUTE"),
        ("ORDER BY ts MEASURES A.v AS x PATTERN (A B{x})", "number"),
    ],
)
def test_refusals_are_one_line_with_a_position(clause: str, message: str) -> None:
    sql = TICKS + f"INSERT INTO o SELECT * FROM t MATCH_RECOGNIZE (PARTITION BY k {clause}) AS T;"
    with pytest.raises(SqlError) as raised:
        plan_script(sql)
    text = str(raised.value)
    assert message in text and "\n" not in text
    assert re.match(r"line \d+, column \d+: ", text), text


def test_ordering_by_a_column_without_watermark_is_refused_with_its_position() -> None:
    sql = TICKS + (
        "INSERT INTO o SELECT * FROM plain MATCH_RECOGNIZE (PARTITION BY k ORDER BY ts\n"
        "  MEASURES A.v AS x PATTERN (A B)) AS T;"
    )
    with pytest.raises(SqlError) as raised:
        plan_script(sql)
    assert str(raised.value).startswith("line 7, column 76: ") and "WATERMARK" in str(raised.value)


def open_state(case: Case, data: list[dict[str, Any]], watermark: int) -> tuple[set[Any], set[Any]]:
    """What the state must hold once the watermark is at `watermark` (no drain): the rows it has not passed,
    the released rows from each partition's first undecided start row on, and the open runs: for every start
    row from there, each binding of the rows up to the last released one that fits and that a later row could
    extend (a prefix of a longer word, not past WITHIN by the watermark), in preference order."""
    parts: dict[Any, list[dict[str, Any]]] = {}
    for arrival, row in enumerate(data):
        parts.setdefault(row["k"], []).append({**row, "_arrival": arrival})
    rows_left: set[Any] = {(r["k"], r["v"], r["ts"]) for r in data if r["ts"] > watermark}
    runs: set[Any] = set()
    for key, part in parts.items():
        rows = sorted((r for r in part if r["ts"] <= watermark), key=lambda r: (r["ts"], r["_arrival"]))
        n = len(rows)

        start = 0
        while start < n:
            first = next(_bindings(case, rows, start, watermark), None)
            if first is None:
                start += 1
            elif first[-1] == "...":
                break
            else:
                start = skip(case.after, start, first)
        for row in rows[start:]:
            rows_left.add((key, row["v"], row["ts"]))
        for s in range(start, n):
            seen: list[tuple[str, ...]] = []
            for found in _bindings(case, rows, s, watermark):
                if found[-1] == "..." and found[:-1] not in seen:
                    seen.append(found[:-1])
            runs |= {(key, rows[s]["ts"], path, labels) for path, labels in enumerate(seen)}
    return rows_left, runs


def _bindings(case: Case, rows: list[dict[str, Any]], start: int, watermark: int) -> Iterator[tuple[str, ...]]:
    """The bindings from `start` in preference order: a complete word that fits, or the fitting prefix of a longer
    word over the rows left (marked by a last element "..."), if a later row can still extend it."""
    left = len(rows) - start
    extendable = case.within_ms is None or watermark - rows[start]["ts"] < case.within_ms
    for word in words(case.tree, left + 5):
        if len(word) <= left:
            if fits(case, rows, start, word):
                yield word
        elif extendable and fits(case, rows, start, word[:left]):
            yield (*word[:left], "...")


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 100_000),
    count=st.integers(1, 24),
    which=st.sampled_from([V_SHAPE, SENSOR_RISE, RELUCTANT, GREEDY_LAST, ALTERNATION]),
    max_rows=st.integers(1, 9),
)
def test_state_holds_exactly_the_open_partial_matches(
    tmp_path_factory: pytest.TempPathFactory, seed: int, count: int, which: Case, max_rows: int
) -> None:
    root = tmp_path_factory.mktemp("open")
    data = prices(seed, count, keys="ab", step=20_000 if which.within_ms else 1000)
    write_jsonl(root / "events" / "1.json", data)
    (root / "pipeline.sql").write_text(run_case_sql(which))
    engine.Pipeline.from_sql(root / "pipeline.sql", state=root / "state").run(once=True, max_epoch_rows=max_rows)
    history = engine.open(root / "state")
    rows, runs = history.state("mr"), history.state("mr/runs")
    time = dict(zip(rows["__seq"], rows["ts"], strict=True))
    by_start: dict[tuple[Any, Any, int], list[tuple[int, str]]] = {}
    for r in runs.iter_rows(named=True):
        by_start.setdefault((r["k"], ms(time[r["__start"]]), r["__path"]), []).append((r["__pos"], r["__var"]))
    got_runs = {(k, ts, path, tuple(v for _, v in sorted(b))) for (k, ts, path), b in by_start.items()}
    got_rows = {(k, v, ms(ts)) for k, v, ts in rows.select("k", "v", "ts").iter_rows()}
    watermark = max(r["ts"] for r in data) - 1000
    assert (got_rows, got_runs) == open_state(which, data, watermark)
