"""Regular LEFT/RIGHT/FULL joins over updating inputs (changelog sources, GROUP BY results, other outer joins) and
with conditions other than equalities, against DuckDB over the final contents of the inputs.

The operator-level property test feeds random changelogs (inserts, updates that move rows between keys, deletes;
NULL keys included) in random epoch splits, restoring the operator from its committed state now and then, and
applies what it emits to a multiset: every retraction must retract a row emitted before, and the final multiset
must be DuckDB's join of the inputs' final tables. The pipeline tests run the same joins as a user would, into a
keyed Delta sink, for several epoch sizes.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.operators import join as join_operator
from sql import SqlError, plan_script
from sql.plan import Join
from tests.helpers import duck, examples, read_sink, replay_changes, run, sort_all
from tests.operator_harness import OperatorHarness

KEYS = [1, 2, 3, None]
# the same text in Flink SQL and DuckDB
RESIDUALS = {
    "none": "",
    "lt": " AND a.v < b.v",  # partners depend on the pair, not the key alone
    "mixed": " AND (a.v + b.v) % 3 <> 0 AND b.v > 2",  # one side's part is also pushed below the join
    "one side": " AND a.v > 3",  # on a preserved side: its rows failing it are padded, never dropped
}


def table(name: str, updating: bool, path: str | None = None) -> str:
    fmt = "debezium-json" if updating else "json"
    return (
        f"CREATE TABLE {name} (id BIGINT, k BIGINT, v INT) "
        f"WITH ('connector' = 'filesystem', 'path' = '{path or name}', 'format' = '{fmt}');\n"
    )


SINK = """CREATE TABLE out (aid BIGINT, ak BIGINT, av INT, bid BIGINT, bk BIGINT, bv INT,
  PRIMARY KEY (aid, bid) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'out');
"""


def history(rng: random.Random, count: int, updating: bool, first_id: int) -> list[tuple[str, list[dict]]]:
    """Random changes of a table (id, k, v): inserts only, or inserts, updates (of k or v) and deletes."""
    live: dict[int, dict] = {}
    out: list[tuple[str, list[dict]]] = []
    next_id = first_id
    for _ in range(count):
        roll = rng.random()
        if not updating or not live or roll < 0.45:
            row = {"id": next_id, "k": rng.choice(KEYS), "v": rng.randint(0, 9)}
            next_id += 1
            live[row["id"]] = row
            out.append(("insert", [row]))
        elif roll < 0.8:
            before = live[rng.choice(sorted(live))]
            after = {**before, "v": rng.randint(0, 9)} if rng.random() < 0.5 else {**before, "k": rng.choice(KEYS)}
            live[before["id"]] = after
            out.append(("update", [before, after]))
        else:
            out.append(("delete", [live.pop(rng.choice(sorted(live)))]))
    return out


def join_sql(kind: str, up_a: bool, up_b: bool, condition: str) -> str:
    """`a kind JOIN b` on the key and `condition`, into the keyed sink."""
    return (
        table("a", up_a)
        + table("b", up_b)
        + SINK
        + f"INSERT INTO out SELECT * FROM a {kind} JOIN b ON a.k = b.k{condition};"
    )


def final(changes: list[tuple[str, list[dict]]]) -> pl.DataFrame:
    return replay_changes(changes, {"id": pl.Int64, "k": pl.Int64, "v": pl.Int32})


def row_kinds(changes: list[tuple[str, list[dict]]], updating: bool) -> list[dict]:
    """The changes as the rows a source emits (with their row kind when the source is a changelog)."""
    ops = {"insert": ["+I"], "update": ["-U", "+U"], "delete": ["-D"]}
    rows = []
    for kind, values in changes:
        for op, row in zip(ops[kind], values, strict=True):
            rows.append({**row, "__op": op} if updating else dict(row))
    return rows


def expected_join(kind: str, condition: str, a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    return duck(
        "SELECT a.id AS aid, a.k AS ak, a.v AS av, b.id AS bid, b.k AS bk, b.v AS bv "
        f"FROM a {kind} JOIN b ON a.k = b.k{condition}",
        a=a,
        b=b,
    )


@settings(max_examples=examples(40), deadline=None)
@given(
    seed=st.integers(0, 100_000),
    kind=st.sampled_from(["LEFT", "RIGHT", "FULL"]),
    updating=st.sampled_from(["left", "right", "both"]),
    residual=st.sampled_from(sorted(RESIDUALS)),
    epochs=st.integers(1, 8),
    indexed=st.booleans(),
)
def test_the_changelog_applied_is_the_join_of_the_final_inputs(
    seed: int, kind: str, updating: str, residual: str, epochs: int, indexed: bool
) -> None:
    rng = random.Random(seed)
    up_a, up_b = updating in ("left", "both"), updating in ("right", "both")
    changes_a, changes_b = history(rng, rng.randint(0, 25), up_a, 0), history(rng, rng.randint(0, 25), up_b, 100)
    condition = RESIDUALS[residual]
    sql = join_sql(kind, up_a, up_b, condition)
    # cut into epochs anywhere (an update's -U and +U may part)
    stream = _side_ordered(changes_a, changes_b, up_a, up_b, rng)
    cuts = sorted(rng.sample(range(len(stream) + 1), min(epochs, len(stream) + 1)))
    saved = join_operator.INDEX_MIN_ROWS
    join_operator.INDEX_MIN_ROWS = 1 if indexed else saved  # small sides through the key index too
    try:
        harness = OperatorHarness(sql, Join)
        emitted: Counter[tuple[Any, ...]] = Counter()
        for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            batch = stream[lo:hi]
            out = harness.feed(a=[r for s, r in batch if s == "a"], b=[r for s, r in batch if s == "b"])
            ops = out.get_column("__op").to_list()
            assert ops == sorted(ops, key=lambda op: op != "-D")  # net changes, retractions first
            for row in out.rows():
                values, op = row[:-1], row[-1]
                if op in ("-U", "-D"):
                    assert emitted[values] > 0, f"{op} of a row never emitted: {values}"
                    emitted[values] -= 1
                else:
                    emitted[values] += 1
            harness.commit()
            if rng.random() < 0.3:  # as after a restart: the state read back from what was committed
                harness.operators[harness.node.id] = harness.restored()
    finally:
        join_operator.INDEX_MIN_ROWS = saved
    expected = Counter(expected_join(kind, condition, final(changes_a), final(changes_b)).rows())
    assert +emitted == expected


def _side_ordered(
    changes_a: list[tuple[str, list[dict]]],
    changes_b: list[tuple[str, list[dict]]],
    up_a: bool,
    up_b: bool,
    rng: random.Random,
) -> list[tuple[str, dict]]:
    """Both sides' rows interleaved at random, each side's in its own order."""
    rows = {"a": row_kinds(changes_a, up_a), "b": row_kinds(changes_b, up_b)}
    sides = ["a"] * len(rows["a"]) + ["b"] * len(rows["b"])
    rng.shuffle(sides)
    taken = {"a": 0, "b": 0}
    out = []
    for side in sides:
        out.append((side, rows[side][taken[side]]))
        taken[side] += 1
    return out


# -- pipelines ---------------------------------------------------------------------------------------------------
def write_changes(root: Path, name: str, changes: list[tuple[str, list[dict]]], updating: bool) -> None:
    lines = []
    for kind, rows in changes:
        if not updating:
            lines.append(json.dumps(rows[0]))
        elif kind == "insert":
            lines.append(json.dumps({"before": None, "after": rows[0], "op": "c"}))
        elif kind == "update":
            lines.append(json.dumps({"before": rows[0], "after": rows[1], "op": "u"}))
        else:
            lines.append(json.dumps({"before": rows[0], "after": None, "op": "d"}))
    cut = len(lines) // 2
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "part-0.json").write_text("".join(line + "\n" for line in lines[:cut]))
    (root / name / "part-1.json").write_text("".join(line + "\n" for line in lines[cut:]))


@pytest.mark.parametrize(
    ("kind", "updating", "residual"),
    [("LEFT", "left", "lt"), ("RIGHT", "both", "none"), ("FULL", "right", "mixed"), ("FULL", "both", "lt")],
)
def test_outer_joins_of_changelog_sources_into_a_keyed_sink(
    tmp_path: Path, kind: str, updating: str, residual: str
) -> None:
    rng = random.Random(len(kind) * 7 + len(updating))
    up_a, up_b = updating in ("left", "both"), updating in ("right", "both")
    changes_a, changes_b = history(rng, 40, up_a, 0), history(rng, 40, up_b, 100)
    write_changes(tmp_path, "a", changes_a, up_a)
    write_changes(tmp_path, "b", changes_b, up_b)
    condition = RESIDUALS[residual]
    sql = join_sql(kind, up_a, up_b, condition)
    expected = expected_join(kind, condition, final(changes_a), final(changes_b))
    for max_rows in (None, 7):
        state = f"state{max_rows}"
        run(tmp_path, sql, state=state, max_epoch_rows=max_rows)
        assert_frame_equal(sort_all(read_sink(tmp_path / "out")), sort_all(expected), check_dtypes=False)
        (tmp_path / "out").rename(tmp_path / f"out{max_rows}")


def test_a_group_by_result_left_joined_and_the_outer_join_outer_joined_again(tmp_path: Path) -> None:
    """An updating GROUP BY on the outer side, with a residual on its counts; the result (itself updating) is
    the outer side of a second LEFT JOIN whose residual reads both joins' columns."""
    rng = random.Random(5)
    changes_a, changes_b, changes_c = (
        history(rng, 60, True, 0),
        history(rng, 40, True, 100),
        history(rng, 30, False, 200),
    )
    for name, changes, updating in (("a", changes_a, True), ("b", changes_b, True), ("c", changes_c, False)):
        write_changes(tmp_path, name, changes, updating)
    sql = (
        table("a", True)
        + table("b", True)
        + table("c", False)
        + """CREATE TABLE out (k BIGINT, n BIGINT, bid BIGINT, cid BIGINT, PRIMARY KEY (k, bid, cid) NOT ENFORCED)
        WITH ('connector' = 'delta', 'path' = 'out');
        INSERT INTO out SELECT g.k, g.n, b.id, c.id
        FROM (SELECT k, COUNT(*) AS n, SUM(v) AS s FROM a GROUP BY k) g
          LEFT JOIN b ON g.k = b.k AND g.n <= b.v
          LEFT JOIN c ON c.k = g.k AND c.v > COALESCE(b.v, 4);
        """
    )
    expected = duck(
        """SELECT g.k, g.n, b.id AS bid, c.id AS cid
        FROM (SELECT k, COUNT(*) AS n, SUM(v) AS s FROM a GROUP BY k) g
          LEFT JOIN b ON g.k = b.k AND g.n <= b.v
          LEFT JOIN c ON c.k = g.k AND c.v > COALESCE(b.v, 4)""",
        a=final(changes_a),
        b=final(changes_b),
        c=final(changes_c),
    )
    for max_rows in (None, 5):
        run(tmp_path, sql, state=f"state{max_rows}", max_epoch_rows=max_rows)
        assert_frame_equal(sort_all(read_sink(tmp_path / "out")), sort_all(expected), check_dtypes=False)
        (tmp_path / "out").rename(tmp_path / f"out{max_rows}")


def test_the_outer_side_keeps_its_partner_counts_only_with_a_residual() -> None:
    """An equi-join's partners depend on the key alone (nothing more is stored); with a residual the outer
    side's state table has `__partners`."""
    plan = plan_script(
        table("a", True) + table("b", False) + SINK + "INSERT INTO out SELECT * FROM a FULL JOIN b ON a.k = b.k;"
    )
    (join,) = [n for n in plan.nodes if isinstance(n, Join)]
    specs = {s.name: s for s in join_operator.JoinOperator.table_specs(join)}
    assert "__partners" not in specs["left"].values and "__partners" not in specs["right"].values
    sql = (
        table("a", True)
        + table("b", False)
        + SINK
        + "INSERT INTO out SELECT * FROM a LEFT JOIN b ON a.k = b.k AND a.v < b.v;"
    )
    (join,) = [n for n in plan_script(sql).nodes if isinstance(n, Join)]
    specs = {s.name: s for s in join_operator.JoinOperator.table_specs(join)}
    assert "__partners" in specs["left"].values and "__partners" not in specs["right"].values


@pytest.mark.parametrize("kind", ["LEFT", "RIGHT", "FULL"])
def test_outer_interval_joins_take_other_conditions(tmp_path: Path, kind: str) -> None:
    """A row of an outer interval join is padded when it leaves the state without a partner passing the whole
    condition. Padded rows come out once the join's watermark (the lower of the two inputs') passes their bound:
    compare those the final watermark settled."""
    from tests import test_joins as j

    orders, payments = j.make(8, 80, 0), j.make(9, 80, 1000)
    j.write(tmp_path, orders, payments)
    bounds = "p.ts BETWEEN o.ts - INTERVAL '2' SECOND AND o.ts + INTERVAL '3' SECOND"
    sql = (
        j.SOURCES
        + "CREATE TABLE out (oid BIGINT, pid BIGINT, amount INT, paid INT)\n"
        + "WITH ('connector' = 'delta', 'path' = 'out');\n"
        + f"INSERT INTO out SELECT o.id, p.id, o.amount, p.paid FROM orders o {kind} JOIN payments p "
        f"ON o.cust = p.cust AND o.amount < p.paid AND {bounds};"
    )
    assert "IntervalJoin" in plan_script(sql).explain()
    run(tmp_path, sql, max_epoch_rows=6)
    condition = (
        "o.cust = p.cust AND o.amount < p.paid AND p.ts BETWEEN o.ts - INTERVAL 2 SECOND AND o.ts + INTERVAL 3 SECOND"
    )
    expected = duck(
        f"SELECT o.id AS oid, p.id AS pid, o.amount, p.paid FROM o {kind} JOIN p ON {condition}",
        o=j.frame(orders),
        p=j.frame(payments),
    )
    final = min(max(int(r["ts"]) for r in rows) for rows in (orders, payments)) - 5000  # type: ignore[call-overload]
    settled = {r["id"] for r in orders if int(r["ts"]) + 3000 < final}  # type: ignore[call-overload]
    settled |= {r["id"] for r in payments if int(r["ts"]) + 2000 < final}  # type: ignore[call-overload]
    expected = expected.filter(
        pl.col("pid").is_not_null() & pl.col("oid").is_not_null()
        | pl.col("oid").is_in(settled)
        | pl.col("pid").is_in(settled)
    )
    assert_frame_equal(sort_all(read_sink(tmp_path / "out")), sort_all(expected), check_dtypes=False)


def test_a_left_lookup_join_over_an_updating_input_is_refused() -> None:
    sql = """CREATE TABLE a (id BIGINT, k BIGINT, p AS PROCTIME())
    WITH ('connector' = 'filesystem', 'path' = 'a', 'format' = 'debezium-json');
    CREATE TABLE dim (k BIGINT, name STRING) WITH ('connector' = 'delta', 'path' = 'dim');
    CREATE TABLE named (id BIGINT, name STRING, PRIMARY KEY (id) NOT ENFORCED)
    WITH ('connector' = 'delta', 'path' = 'n');
    INSERT INTO named SELECT a.id, d.name FROM a LEFT JOIN dim FOR SYSTEM_TIME AS OF a.p AS d ON a.k = d.k;
    """
    with pytest.raises(SqlError, match="LEFT lookup JOIN over an updating input is not supported yet"):
        plan_script(sql)


def test_kill_9_with_an_outer_join_of_changelogs_and_a_residual(tmp_path: Path) -> None:
    """The partner counts are state like the rest: killed at random instants and restarted, the run's keyed
    sink equals the join of the final inputs."""
    from tests.test_crash_recovery import crash_until_done

    rng = random.Random(9)
    changes_a, changes_b = history(rng, 30, True, 0), history(rng, 30, True, 100)
    write_changes(tmp_path, "a", changes_a, True)
    write_changes(tmp_path, "b", changes_b, True)
    condition = RESIDUALS["lt"]
    sql = (
        table("a", True)
        + table("b", True)
        + SINK
        + f"INSERT INTO out SELECT * FROM a FULL JOIN b ON a.k = b.k{condition};"
    )
    (tmp_path / "pipeline.sql").write_text(sql)
    assert crash_until_done(tmp_path, kills=3, seed=9) >= 1
    expected = expected_join("FULL", condition, final(changes_a), final(changes_b))
    assert_frame_equal(sort_all(read_sink(tmp_path / "out")), sort_all(expected), check_dtypes=False)


UPSERT_LIMITS = """
CREATE TABLE orders (id BIGINT, cust STRING, amount INT)
WITH ('connector' = 'filesystem', 'path' = 'o', 'format' = 'json');
CREATE TABLE limits (cust STRING, cap INT, PRIMARY KEY (cust) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:9',
      'key.format' = 'json', 'value.format' = 'json');
CREATE TABLE capped (id BIGINT, cust STRING, cap INT, PRIMARY KEY (id) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO capped SELECT o.id, o.cust, l.cap FROM orders o LEFT JOIN limits l ON o.cust = l.cust AND o.amount <= l.cap;
"""


def test_an_upsert_source_updating_the_inner_side_pads_and_unpads_a_row() -> None:
    """The inner side is an upsert source (normalized by its key): each update of a customer's cap decides anew
    whether the order has a partner; its padded row is retracted when it gains one and emitted when it loses it."""
    h = OperatorHarness(UPSERT_LIMITS, Join)
    feeds: list[tuple[dict[str, list[dict]], list[tuple]]] = [
        (
            {"orders": [{"id": 1, "cust": "a", "amount": 50}, {"id": 2, "cust": "b", "amount": 5}]},
            [(2, "b", 5, None, None, "+I"), (1, "a", 50, None, None, "+I")],
        ),
        (
            {"limits": [{"cust": "a", "cap": 100, "__op": "+U"}]},
            [(1, "a", 50, None, None, "-D"), (1, "a", 50, "a", 100, "+I")],
        ),
        (
            {"limits": [{"cust": "a", "cap": 10, "__op": "+U"}]},
            [(1, "a", 50, "a", 100, "-D"), (1, "a", 50, None, None, "+I")],
        ),
        (  # b's cap is below its order: no partner, nothing changes for it
            {"limits": [{"cust": "a", "cap": 60, "__op": "+U"}, {"cust": "b", "cap": 1, "__op": "+U"}]},
            [(1, "a", 50, None, None, "-D"), (1, "a", 50, "a", 60, "+I")],
        ),
        (
            {"limits": [{"cust": "a", "cap": None, "__op": "-D"}]},
            [(1, "a", 50, "a", 60, "-D"), (1, "a", 50, None, None, "+I")],
        ),
    ]
    for rows, expected in feeds:
        out = h.feed(**rows).rows()
        ops = [row[-1] for row in out]
        assert ops == sorted(ops, key=lambda op: op != "-D")  # retractions first (a keyed sink keeps the last)
        assert sorted(out, key=str) == sorted(expected, key=str)
        h.commit()
    assert sort_all(h.state("left")).rows() == [("a", 1, "a", 50, 1, 0), ("b", 2, "b", 5, 1, 0)]
