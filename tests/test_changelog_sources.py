"""Changelog sources: debezium-json and canal-json files feed a GROUP BY whose Delta sink (keyed) equals DuckDB
over the CDC table's final state, for several epoch sizes; upsert sources get a ChangelogNormalize (checked on
the plan and in memory); what cannot consume updates is refused at plan time with its line and column."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from sql.errors import SqlError
from sql.plan import ChangelogNormalize
from sql.planner import plan_script
from tests.helpers import duck, read_sink, replay_changes, run, sort_all
from tests.operator_harness import OperatorHarness

SINK = """
CREATE TABLE per_k (k STRING, n BIGINT, total BIGINT, lo INT, hi INT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO per_k SELECT k, COUNT(*), SUM(v), MIN(v), MAX(v) FROM cdc GROUP BY k;
"""
MALFORMED = {
    "debezium-json": ["{not json", '{"op":"x","after":{"id":1}}', '{"op":"u","before":null,"after":{"id":1}}'],
    "canal-json": [
        "{not json",
        '{"table":"orders","type":"UPSERT","data":[{"id":"1"}]}',
        '{"table":"orders","type":"UPDATE","data":[{"id":"1"}]}',
    ],
}


def history(seed: int, changes: int = 80) -> list[tuple[str, list[dict]]]:
    """Random changes of a table (id, k, v): ('insert', [row]), ('update', [before, after]), ('delete', [row])."""
    rng = random.Random(seed)
    live: dict[int, dict] = {}
    out: list[tuple[str, list[dict]]] = []
    next_id = 0
    for _ in range(changes):
        roll = rng.random()
        if not live or roll < 0.45:
            row = {"id": next_id, "k": rng.choice("abcde"), "v": rng.randint(-50, 100)}
            next_id += 1
            live[row["id"]] = row
            out.append(("insert", [row]))
        elif roll < 0.8:
            before = live[rng.choice(sorted(live))]
            after = {**before, "v": rng.randint(-50, 100)}
            if rng.random() < 0.4:
                after["k"] = rng.choice("abcde")  # moves between groups: a retraction of the old group
            live[before["id"]] = after
            out.append(("update", [before, after]))
        else:
            row = live.pop(rng.choice(sorted(live)))
            out.append(("delete", [row]))
    for row_id in [i for i, row in sorted(live.items()) if row["k"] == "e"]:  # group 'e' empties: the sink loses it
        out.append(("delete", [live.pop(row_id)]))
    return out


def final_state(changes: list[tuple[str, list[dict]]]) -> pl.DataFrame:
    return replay_changes(changes, {"id": pl.Int64, "k": pl.String, "v": pl.Int32})


def debezium_lines(changes: list[tuple[str, list[dict]]], rng: random.Random) -> list[str]:
    lines = []
    for kind, rows in changes:
        if kind == "insert":
            message = {"before": None, "after": rows[0], "op": rng.choice("cr"), "source": {"table": "t"}}
        elif kind == "update":
            message = {"before": rows[0], "after": rows[1], "op": "u", "ts_ms": 0}
        else:
            message = {"before": rows[0], "after": None, "op": "d"}
        lines.append(json.dumps(message))
    return lines


def canal_lines(changes: list[tuple[str, list[dict]]], rng: random.Random) -> list[str]:
    """Canal messages, several changes of one kind in one message where they follow each other."""
    lines: list[str] = []
    i = 0
    text = lambda row: {c: str(v) for c, v in row.items()}  # canal writes every value as text
    while i < len(changes):
        kind = changes[i][0]
        j = i + 1
        ids = {changes[i][1][0]["id"]}
        while j < len(changes) and j - i < 3 and changes[j][0] == kind and changes[j][1][0]["id"] not in ids:
            ids.add(changes[j][1][0]["id"])
            j += 1
        batch = changes[i:j]
        message: dict = {"database": "shop", "table": "orders", "type": kind.upper(), "isDdl": False}
        message["data"] = [text(rows[-1]) for _, rows in batch]
        if kind == "update":
            message["old"] = [{c: str(v) for c, v in rows[0].items() if rows[1][c] != v} for _, rows in batch]
        lines.append(json.dumps(message))
        if rng.random() < 0.1:  # another table's change: filtered out by 'canal-json.table.include'
            lines.append(json.dumps({**message, "table": "audit"}))
        i = j
    return lines


def write_cdc(root: Path, lines: list[str], rng: random.Random, malformed: list[str]) -> None:
    for bad in malformed:
        lines.insert(rng.randrange(len(lines) + 1), bad)
    cut = len(lines) // 2
    (root / "in").mkdir(parents=True, exist_ok=True)
    (root / "in" / "part-0.json").write_text("".join(line + "\n" for line in lines[:cut]))
    (root / "in" / "part-1.json").write_text("".join(line + "\n" for line in lines[cut:]))


@pytest.mark.parametrize("fmt", ["debezium-json", "canal-json"])
def test_group_by_over_a_cdc_file_equals_the_oracle_for_every_epoch_size(tmp_path: Path, fmt: str) -> None:
    rng = random.Random(11)
    changes = history(seed=5)
    lines = debezium_lines(changes, rng) if fmt == "debezium-json" else canal_lines(changes, rng)
    extra = ", 'canal-json.table.include' = 'orders'" if fmt == "canal-json" else ""
    source = f"""
    CREATE TABLE cdc (id BIGINT, k STRING, v INT)
    WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = '{fmt}'{extra});
    """
    oracle = duck(
        "SELECT k, COUNT(*)::BIGINT AS n, SUM(v)::BIGINT AS total, MIN(v) AS lo, MAX(v) AS hi FROM state GROUP BY k",
        state=final_state(changes),
    )
    for size in (2, 9, 10_000):
        root = tmp_path / str(size)
        write_cdc(root, list(lines), random.Random(size), MALFORMED[fmt])
        summary = run(root, source + SINK, max_epoch_rows=size)
        got = read_sink(root / "out")
        assert sort_all(got).equals(sort_all(oracle.cast(got.schema))), (size, got, oracle)
        assert "e" not in got.get_column("k").to_list()
        assert summary["dead_letters"] == {"cdc": len(MALFORMED[fmt])}
        dead = pl.read_delta(str(root / "state" / "dead_letters" / "cdc"))
        assert dead.height == len(MALFORMED[fmt])
        assert all(dead.get_column("reason").is_not_null())


def test_the_cdc_rows_themselves_upsert_into_a_keyed_sink(tmp_path: Path) -> None:
    rng = random.Random(3)
    changes = history(seed=9, changes=60)
    write_cdc(tmp_path, debezium_lines(changes, rng), rng, [])
    summary = run(
        tmp_path,
        """
        CREATE TABLE cdc (id BIGINT, k STRING, v INT)
        WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'debezium-json');
        CREATE TABLE copy (id BIGINT, k STRING, v INT, PRIMARY KEY (id) NOT ENFORCED)
        WITH ('connector' = 'delta', 'path' = 'out');
        INSERT INTO copy SELECT * FROM cdc WHERE v > -40;
        """,
        max_epoch_rows=5,
    )
    assert summary["dead_letters"] == {}
    expected = final_state(changes).filter(pl.col("v") > -40)
    assert sort_all(read_sink(tmp_path / "out")).equals(sort_all(expected))


# -- plan-time rules --------------------------------------------------------------------------------------------
CDC = """CREATE TABLE cdc (id BIGINT, k STRING, v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'debezium-json');
CREATE TABLE out (k STRING, n BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
CREATE TABLE keyed (k STRING, n BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'o');
"""


def test_a_cdc_scan_is_a_changelog() -> None:
    plan = plan_script(CDC + "INSERT INTO keyed SELECT k, COUNT(*) FROM cdc GROUP BY k;")
    assert "Scan cdc [filesystem, watermark ts]  (stateless, retract)" in plan.explain()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "INSERT INTO out SELECT k, COUNT(*) FROM cdc GROUP BY k;",
            "INSERT INTO out: the query gives an updating result (rows change as more input arrives; table "
            "'cdc' is a changelog: format 'debezium-json'), but 'out' is append-only",
        ),
        (
            "INSERT INTO out SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE cdc, DESCRIPTOR(ts), INTERVAL '1' MINUTE))"
            " GROUP BY k, window_start, window_end;",
            "a window aggregation needs an append-only input, but its input has updates and deletes (table "
            "'cdc' is a changelog: format 'debezium-json')",
        ),
        (
            "INSERT INTO out SELECT k, COUNT(*) OVER (PARTITION BY k ORDER BY ts) FROM cdc;",
            "OVER over an updating input is not supported",
        ),
        (
            "CREATE TABLE dim (k STRING, n BIGINT) WITH ('connector' = 'delta', 'path' = 'dim');\n"
            "INSERT INTO out SELECT a.k, d.n FROM cdc a LEFT JOIN dim FOR SYSTEM_TIME AS OF a.ts AS d ON a.k = d.k;",
            "LEFT lookup JOIN over an updating input is not supported yet (table 'cdc' is a changelog",
        ),
    ],
)
def test_what_cannot_consume_updates_is_refused_with_its_position(query: str, message: str) -> None:
    with pytest.raises(SqlError) as caught:
        plan_script(CDC + query)
    assert message in str(caught.value)
    assert caught.value.line is not None and caught.value.line >= 5


def test_a_changelog_format_sink_takes_updates_without_a_key() -> None:
    plan = plan_script(
        CDC
        + """CREATE TABLE changes (k STRING, n BIGINT) WITH ('connector' = 'kafka', 'topic' = 't',
        'properties.bootstrap.servers' = '127.0.0.1:9', 'format' = 'debezium-json');
        INSERT INTO changes SELECT k, COUNT(*) FROM cdc GROUP BY k;"""
    )
    assert plan.sinks[0].changelog == "retract" and "__op" in plan.sinks[0].schema


def test_a_debezium_sink_refuses_schema_include() -> None:
    with pytest.raises(SqlError, match="is for reading only") as caught:
        plan_script(
            CDC
            + """CREATE TABLE changes (k STRING, n BIGINT) WITH ('connector' = 'kafka', 'topic' = 't',
            'properties.bootstrap.servers' = '127.0.0.1:9', 'format' = 'debezium-json',
            'debezium-json.schema-include' = 'true');
            INSERT INTO changes SELECT k, COUNT(*) FROM cdc GROUP BY k;"""
        )
    assert caught.value.line == 7


def test_a_changelog_is_not_a_lookup_dimension() -> None:
    with pytest.raises(SqlError, match="a lookup join reads 'cdc' as a table of rows, but 'cdc' is a changelog"):
        plan_script(
            CDC
            + """CREATE TABLE s (k STRING, p AS PROCTIME()) WITH ('connector' = 'datagen');
            INSERT INTO out SELECT s.k, c.id FROM s JOIN cdc FOR SYSTEM_TIME AS OF s.p AS c ON s.k = c.k;"""
        )


UPSERT = """CREATE TABLE up (k STRING, v INT, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:9',
      'key.format' = 'json', 'value.format' = 'json');
CREATE TABLE copy (k STRING, v INT, PRIMARY KEY (k) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'c');
CREATE TABLE sums (v INT, n BIGINT, PRIMARY KEY (v) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 's');
"""


def test_an_upsert_source_is_normalized_by_its_primary_key() -> None:
    plan = plan_script(UPSERT + "INSERT INTO sums SELECT v, COUNT(*) FROM up GROUP BY v;")
    lines = plan.explain().splitlines()
    assert "ChangelogNormalize" in lines[3] and "key (k)  (stateful, retract)" in lines[3]
    assert lines[4].strip("└─ ") == "Scan up [upsert-kafka]  (stateless, upsert)"
    (normalize,) = [n for n in plan.nodes if isinstance(n, ChangelogNormalize)]
    assert normalize.keys == ["k"] and "__op" in normalize.schema
    assert plan.stateful_operators()[normalize.state_id]["kind"] == "changelog normalize"
    # two INSERTs reading the same upsert source share one normalize (one state)
    two = plan_script(
        UPSERT + "INSERT INTO copy SELECT * FROM up; INSERT INTO sums SELECT v, COUNT(*) FROM up GROUP BY v;"
    )
    assert len([n for n in two.nodes if isinstance(n, ChangelogNormalize)]) == 1


def test_changelog_normalize_emits_net_changes_per_key() -> None:
    h = OperatorHarness(UPSERT + "INSERT INTO copy SELECT * FROM up;", ChangelogNormalize)
    out = h.feed(
        up=[
            {"k": "a", "v": 1, "__op": "+U"},
            {"k": "b", "v": 1, "__op": "+U"},
            {"k": "a", "v": 2, "__op": "+U"},  # the last change of a key in the epoch wins
            {"k": "z", "v": None, "__op": "-D"},  # the delete of an unknown key: nothing
        ]
    )
    assert out.rows() == [("b", 1, "+I"), ("a", 2, "+I")]
    h.commit()
    out = h.feed(
        up=[
            {"k": "a", "v": 2, "__op": "+U"},  # unchanged: nothing
            {"k": "b", "v": 5, "__op": "+U"},
            {"k": "c", "v": 7, "__op": "+U"},
            {"k": "a", "v": None, "__op": "-D"},
        ]
    )
    assert out.rows() == [("b", 1, "-U"), ("b", 5, "+U"), ("c", 7, "+I"), ("a", 2, "-D")]
    assert sort_all(h.state()).rows() == [("b", 5), ("c", 7)]
    h.commit()
    restored = h.restored()
    assert sort_all(restored.frames()[""].drop("_kg")).rows() == [("b", 5), ("c", 7)]
    out = h.feed(up=[{"k": "c", "v": None, "__op": "-D"}, {"k": "c", "v": 8, "__op": "+U"}])
    assert out.rows() == [("c", 7, "-U"), ("c", 8, "+U")]


def test_changelog_normalize_gives_the_same_table_whatever_the_epochs() -> None:
    """Applying what the operator emits rebuilds the upsert stream's final table, for any split into epochs;
    each emitted change is consistent (-U/-D retract exactly the row last emitted for the key)."""
    rng = random.Random(21)
    stream = [
        {"k": rng.choice("abcdef"), "v": rng.choice([None, 1, 2, 3]), "__op": rng.choice(["+U", "+U", "-D"])}
        for _ in range(200)
    ]
    final: dict[str, int | None] = {}
    for change in stream:
        if change["__op"] == "-D":
            final.pop(change["k"], None)
        else:
            final[change["k"]] = change["v"]
    for trial in range(4):
        h = OperatorHarness(UPSERT + "INSERT INTO copy SELECT * FROM up;", ChangelogNormalize)
        table: dict[str, int | None] = {}
        cuts = sorted(rng.sample(range(1, len(stream)), trial * 7 + 1))
        for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            for k, v, op in h.feed(up=stream[lo:hi]).rows():
                if op in ("-U", "-D"):
                    assert table.pop(k) == v
                else:
                    assert k not in table
                    table[k] = v
            h.commit()
        assert table == final
        assert dict(h.state().rows()) == final


def test_a_cdc_pipeline_killed_at_fault_points_ends_as_the_oracle(tmp_path: Path) -> None:
    """kill -9 at the points of an epoch, restart each time: the keyed sink still equals the oracle, and each
    malformed message is one dead letter."""
    from tests import crash_harness as harness

    rng = random.Random(4)
    changes = history(seed=13, changes=60)
    write_cdc(tmp_path, debezium_lines(changes, rng), rng, MALFORMED["debezium-json"])
    (tmp_path / "pipeline.sql").write_text(
        "SET 'checkpoint.interval' = '2 epochs';\n"
        "CREATE TABLE cdc (id BIGINT, k STRING, v INT)\n"
        "WITH ('connector' = 'filesystem', 'path' = 'in', 'format' = 'debezium-json');" + SINK
    )
    points = ["operator.mid", "sink.commit.during", "state.commit.during", "dead-letters.commit.after"]
    points += ["manifest.commit.before", "manifest.commit.after"]
    killed = [harness.run_pipeline(tmp_path, f"{p}:{rng.randint(1, 3)}", max_rows=6) == -9 for p in points]
    assert all(killed), dict(zip(points, killed, strict=True))
    assert harness.run_pipeline(tmp_path, None, max_rows=6) == 0
    oracle = duck(
        "SELECT k, COUNT(*)::BIGINT AS n, SUM(v)::BIGINT AS total, MIN(v) AS lo, MAX(v) AS hi FROM state GROUP BY k",
        state=final_state(changes),
    )
    got = read_sink(tmp_path / "out")
    assert sort_all(got).equals(sort_all(oracle.cast(got.schema)))
    dead = pl.read_delta(str(tmp_path / "state" / "dead_letters" / "cdc"))
    assert dead.height == len(MALFORMED["debezium-json"])
