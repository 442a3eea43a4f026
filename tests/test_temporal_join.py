"""Event-time temporal joins (`JOIN rates FOR SYSTEM_TIME AS OF o.ts`) against DuckDB's ASOF JOIN over the same
versions, for random epoch splits; late probe rows; versions arriving after their probe rows; state TTL; a
restart from a checkpoint; what is refused, with its position."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sql.errors import SqlError
from sql.plan import TemporalJoin
from sql.planner import plan_script
from tests.helpers import duck, examples, read_sink, run, sort_all, write_jsonl
from tests.operator_harness import OperatorHarness, at

BASE_MS = 1_767_225_600_000
DELAY_S = 5
ORDERS = f"""
CREATE TABLE orders (id BIGINT, currency STRING, amount INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
"""
RATES = f"""
CREATE TABLE rates (currency STRING, rate INT, ts TIMESTAMP(3), PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'rates', 'format' = 'debezium-json');
"""
SINK = """
CREATE TABLE out (id BIGINT, amount INT, rate INT, rts TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'out');
"""


def query(kind: str = "LEFT", hint: str = "") -> str:
    return (
        f"INSERT INTO out SELECT {hint} o.id, o.amount, r.rate, r.ts FROM orders AS o "
        f"{kind} JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency;"
    )


def make_rates(rng: random.Random, count: int) -> list[tuple[str, dict | None, dict | None]]:
    """Random changes of the versioned table, roughly in time order (within the watermark delay): (op, before,
    after) as Debezium writes them. A delete's `before` carries the time the key stops being valid."""
    live: dict[str, dict] = {}
    out: list[tuple[str, dict | None, dict | None]] = []
    for i in range(count):
        key = rng.choice("abc")
        ts = BASE_MS + i * 1000 - rng.randint(0, DELAY_S - 1) * 1000
        if key in live and rng.random() < 0.2:
            out.append(("d", {**live.pop(key), "ts": ts}, None))
        elif key in live:
            after = {"currency": key, "rate": rng.randint(1, 99), "ts": ts}
            out.append(("u", live[key], after))
            live[key] = after
        else:
            live[key] = {"currency": key, "rate": rng.randint(1, 99), "ts": ts}
            out.append(("c", None, live[key]))
    return out


def make_orders(rng: random.Random, count: int, late: bool, start: int = 0) -> list[dict]:
    rows = []
    for i in range(count):
        ts = BASE_MS + (start + i) * 1000 - rng.randint(0, DELAY_S - 1) * 1000
        if late and rng.random() < 0.15:
            ts -= 30_000  # far behind the watermark: late
        rows.append({"id": start + i, "currency": rng.choice(["a", "b", "c", "d", None]), "amount": i, "ts": ts})
    return rows


def write_rates(path: Path, changes: list[tuple[str, dict | None, dict | None]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"op": op, "before": before, "after": after}) for op, before, after in changes]
    path.write_text("".join(line + "\n" for line in lines))


def on_time(orders: list[dict]) -> list[dict]:
    """The orders not behind their source's watermark (the running maximum of ts - delay) when they arrive."""
    kept, top = [], None
    for row in orders:
        if top is None or row["ts"] >= top - DELAY_S * 1000:
            kept.append(row)
        top = row["ts"] if top is None else max(top, row["ts"])
    return kept


def oracle(orders: list[dict], changes: list[tuple[str, dict | None, dict | None]], kind: str, ttl_s: int = 0):
    """DuckDB's ASOF JOIN over the versions: a delete is a version without values; two versions of a key at one
    time, the later wins; with an event-time TTL, a version older than it at the probe time is no match."""
    versions = [
        {
            "currency": (after or before)["currency"],
            "rate": after["rate"] if after else None,
            "ts": (after or before)["ts"],
            "gone": after is None,
            "seq": seq,
        }
        for seq, (_, before, after) in enumerate(changes)
    ]
    ts = pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    v = pl.DataFrame(
        versions, schema={"currency": pl.String, "rate": pl.Int32, "ts": pl.Int64, "gone": pl.Boolean, "seq": pl.Int64}
    ).with_columns(ts)
    v = v.sort("seq").unique(["currency", "ts"], keep="last")
    o = pl.DataFrame(
        on_time(orders), schema={"id": pl.Int64, "currency": pl.String, "amount": pl.Int32, "ts": pl.Int64}
    ).with_columns(ts)
    valid = "r.ts IS NOT NULL AND NOT r.gone" + (f" AND o.ts - r.ts < INTERVAL {ttl_s} SECOND" if ttl_s else "")
    got = duck(
        f"""SELECT o.id, o.amount, CASE WHEN {valid} THEN r.rate END AS rate, CASE WHEN {valid} THEN r.ts END AS rts
        FROM o ASOF LEFT JOIN v AS r ON o.currency = r.currency AND o.ts >= r.ts
        {"WHERE " + valid if kind == "INNER" else ""}""",
        o=o,
        v=v,
    )
    return got.with_columns(pl.col("rts").dt.replace_time_zone("UTC"))


def check(root: Path, got: pl.DataFrame, expected: pl.DataFrame) -> None:
    expected = expected.with_columns(pl.col(c).cast(t) for c, t in got.schema.items())
    assert sort_all(got).equals(sort_all(expected)), (root, got, expected)


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    n_orders=st.integers(0, 30),
    n_rates=st.integers(0, 30),
    kind=st.sampled_from(["INNER", "LEFT"]),
    max_rows=st.one_of(st.none(), st.integers(1, 7)),
    budget=st.booleans(),
)
def test_temporal_join_matches_duckdb_asof(
    seed: int, n_orders: int, n_rates: int, kind: str, max_rows: int | None, budget: bool
) -> None:
    rng = random.Random(seed)
    changes, orders = make_rates(rng, n_rates), make_orders(rng, n_orders, late=True)
    root = Path(tempfile.mkdtemp())
    try:
        write_rates(root / "rates" / "1.json", changes)
        write_jsonl(root / "orders" / "1.json", orders)
        spill = "SET 'state.memory.budget' = '1 MB';\n" if budget else ""  # key groups in parts (spilled.py)
        run(root, spill + ORDERS + RATES + SINK + query(kind), max_epoch_rows=max_rows, drain=True)
        check(root, read_sink(root / "out"), oracle(orders, changes, kind))
        late = list((root / "state" / "operators").glob("temporal-join-*/late_probe"))
        late_ids = sorted(pl.read_delta(str(late[0])).get_column("id").to_list()) if late else []
        assert late_ids == sorted({r["id"] for r in orders} - {r["id"] for r in on_time(orders)})
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_late_probe_rows_go_to_the_late_table(tmp_path: Path) -> None:
    changes = [("c", None, {"currency": "a", "rate": 1, "ts": BASE_MS})]
    orders = [
        {"id": 1, "currency": "a", "amount": 1, "ts": BASE_MS + 20_000},
        {"id": 2, "currency": "a", "amount": 2, "ts": BASE_MS + 1_000},  # 14 s behind the watermark
    ]
    write_rates(tmp_path / "rates" / "1.json", changes)
    write_jsonl(tmp_path / "orders" / "1.json", orders)
    run(tmp_path, ORDERS + RATES + SINK + query(), drain=True)
    assert read_sink(tmp_path / "out").select("id", "rate").rows() == [(1, 1)]
    late = pl.read_delta(str(next((tmp_path / "state" / "operators").glob("temporal-join-*")) / "late_probe"))
    assert late.select("id", "_reason").rows() == [(2, "arrived behind the watermark")]


SMALL = """
CREATE TABLE orders (id BIGINT, currency STRING, amount INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE rates (currency STRING, rate INT, ts TIMESTAMP(3), PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR ts AS ts)
WITH ('connector' = 'filesystem', 'path' = 'rates', 'format' = 'debezium-json');
CREATE TABLE out (id BIGINT, amount INT, rate INT, rts TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'out');
"""


def _debezium(op: str, currency: str, rate: int | None, seconds: float) -> dict:
    row = {"currency": currency, "rate": rate, "ts": at(seconds)}
    return {"__op": op, **row}


def test_versions_arriving_after_their_probe_rows_still_join_until_the_watermark_passes() -> None:
    h = OperatorHarness(SMALL + query("LEFT"), TemporalJoin)
    # the probe rows come first; the rates' watermark holds the join's back, so nothing is final yet
    out = h.feed(orders=[{"id": 1, "currency": "a", "amount": 1, "ts": at(10)}], rates=[_debezium("+I", "a", 1, 1)])
    assert out.height == 0
    out = h.feed(orders=[{"id": 2, "currency": "a", "amount": 2, "ts": at(20)}], rates=[_debezium("+I", "a", 2, 9)])
    assert out.height == 0  # the join's watermark is 9 s (the rates'): the probe at 10 s waits
    h.commit()
    restored = h.restored()
    assert restored.frames()["probe"].height == 2  # waiting probe rows are state, and restored
    out = h.feed(rates=[_debezium("+U", "a", 3, 15), _debezium("+I", "b", 4, 16)])
    assert out.select("id", "rate").rows() == [(1, 2)]  # the version at 9 s came after it, and counts
    # at or below the watermark (15 s), only the newest version of 'a' is kept
    assert sorted(h.operator.frames()["versions"].select("__k0", "rate").rows()) == [("a", 3), ("b", 4)]
    out = h.feed(rates=[_debezium("-D", "a", 3, 18), _debezium("+I", "c", 5, 40), _debezium("+U", "c", 6, 12)])
    assert out.height == 0  # the watermark (20 s = the orders') is not past the probe at 20 s
    assert h.operator.late_tables["late_versions"].count == 1  # 'c' at 12 s: behind the rates' watermark (16 s)
    out = h.feed(orders=[{"id": 3, "currency": "a", "amount": 3, "ts": at(25)}])
    assert sorted(out.select("id", "rate").rows(), key=str) == [(2, None)]  # 'a' was deleted at 18 s


def test_processing_time_ttl_forgets_keys_without_new_versions() -> None:
    h = OperatorHarness(SMALL + "SET 'state.ttl' = '1 min';\n" + query("LEFT"), TemporalJoin)
    h.feed(rates=[_debezium("+I", "a", 1, 1), _debezium("+I", "b", 2, 1)], proctime=at(0))
    h.feed(rates=[_debezium("+U", "b", 3, 2)], proctime=at(50))
    h.feed(rates=[_debezium("+I", "c", 4, 3)], proctime=at(100))  # 'a' idle for 100 s: gone; 'b' for 50 s: kept
    assert sorted(h.operator.frames()["versions"].get_column("__k0").to_list()) == ["b", "b", "c"]
    out = h.feed(orders=[{"id": 1, "currency": "a", "amount": 1, "ts": at(2.5)}], proctime=at(101), drain=True)
    assert out.select("id", "rate").rows() == [(1, None)]


def test_event_time_ttl_matches_duckdb_and_bounds_the_state(tmp_path: Path) -> None:
    rng = random.Random(7)
    changes, orders = make_rates(rng, 60), make_orders(rng, 60, late=False)
    write_rates(tmp_path / "rates" / "1.json", changes)
    write_jsonl(tmp_path / "orders" / "1.json", orders)
    ttl = "SET 'state.ttl' = '8 s';\nSET 'state.ttl.time' = 'event';\n"
    run(tmp_path, ttl + ORDERS + RATES + SINK + query("LEFT"), max_epoch_rows=4)
    versions = pl.read_delta(str(next((tmp_path / "state" / "operators").glob("temporal-join-*")) / "versions"))
    live = versions.sort("_epoch").unique(["__k0", "__vt"], keep="last").filter(~pl.col("_deleted"))
    assert live.height <= 3 * 3  # a few versions per key above the watermark, never the whole history
    run(tmp_path, ttl + ORDERS + RATES + SINK + query("LEFT"), drain=True)
    check(tmp_path, read_sink(tmp_path / "out"), oracle(orders, changes, "LEFT", ttl_s=8))


def test_a_restart_from_a_checkpoint_continues_as_one_run(tmp_path: Path) -> None:
    rng = random.Random(3)
    changes, orders = make_rates(rng, 40), make_orders(rng, 40, late=True)
    sql = ORDERS + RATES + SINK + query("INNER")

    def write(root: Path, cut: float, part: int) -> None:
        lo_c, hi_c = (0, int(len(changes) * cut)) if part == 1 else (int(len(changes) * cut), len(changes))
        lo_o, hi_o = (0, int(len(orders) * cut)) if part == 1 else (int(len(orders) * cut), len(orders))
        write_rates(root / "rates" / f"{part}.json", changes[lo_c:hi_c])
        write_jsonl(root / "orders" / f"{part}.json", orders[lo_o:hi_o])

    def waiting(root: Path) -> int:
        probe = pl.read_delta(str(next((root / "state" / "operators").glob("temporal-join-*")) / "probe"))
        return probe.sort("_epoch").unique("__seq", keep="last").filter(~pl.col("_deleted")).height

    once = tmp_path / "once"
    write(once, 1.0, 1)
    run(once, sql, max_epoch_rows=4, drain=True)
    # stopped after a few epochs, in the middle of the input, checkpointed every other epoch, then resumed
    stopped = tmp_path / "stopped"
    write(stopped, 1.0, 1)
    run(stopped, sql, max_epoch_rows=3, max_epochs=5, checkpoint_interval="2 epochs")
    assert waiting(stopped) > 0  # probe rows waiting for the watermark were in the checkpoint
    run(stopped, sql, max_epoch_rows=5, drain=True)
    # more input after the first run stopped
    more = tmp_path / "more"
    write(more, 0.5, 1)
    run(more, sql, max_epoch_rows=3)
    assert waiting(more) > 0
    write(more, 0.5, 2)
    run(more, sql, max_epoch_rows=5, drain=True)
    expected = read_sink(once / "out")
    check(once, expected, oracle(orders, changes, "INNER"))
    for root in (stopped, more):
        assert sort_all(read_sink(root / "out")).equals(sort_all(expected)), root


def test_a_window_aggregation_over_the_join_counts_every_joined_row(tmp_path: Path) -> None:
    """The join's rows keep the probe's time attribute: windows downstream close on the same watermark, and no
    joined row is late for them (it is emitted before the watermark passes its window's end)."""
    rng = random.Random(11)
    changes, orders = make_rates(rng, 40), make_orders(rng, 50, late=False)
    write_rates(tmp_path / "rates" / "1.json", changes)
    write_jsonl(tmp_path / "orders" / "1.json", orders)
    sql = (
        ORDERS
        + RATES
        + """CREATE TABLE w (ws TIMESTAMP(3), n BIGINT, total BIGINT) WITH ('connector' = 'delta', 'path' = 'w');
        CREATE VIEW priced AS SELECT o.ts, r.rate FROM orders AS o
          JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency;
        INSERT INTO w SELECT window_start, COUNT(*), SUM(rate)
        FROM TABLE(TUMBLE(TABLE priced, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;"""
    )
    run(tmp_path, sql, max_epoch_rows=3, drain=True)
    joined = oracle(orders, changes, "INNER").with_columns(pl.col("rts").alias("x"))
    ts = pl.DataFrame(orders).select("id", pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
    expected = (
        joined.join(ts, on="id")
        .group_by(pl.col("ts").dt.truncate("10s").alias("ws"))
        .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("rate").sum().cast(pl.Int64).alias("total"))
    )
    assert expected.height > 1
    check(tmp_path, read_sink(tmp_path / "w"), expected)


UPSERT = """CREATE TABLE up (currency STRING, rate INT, ts TIMESTAMP(3), PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR ts AS ts)
WITH ('connector' = 'upsert-kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:9',
      'key.format' = 'json', 'value.format' = 'json');
"""


def test_an_upsert_source_is_versioned_without_changelog_normalize() -> None:
    plan = plan_script(
        ORDERS
        + UPSERT
        + SINK
        + "INSERT INTO out SELECT o.id, o.amount, r.rate, r.ts FROM orders AS o "
        + "JOIN up FOR SYSTEM_TIME AS OF o.ts AS r ON r.currency = o.currency;"
    )
    text = plan.explain()
    assert "TemporalJoin INNER" in text and "ChangelogNormalize" not in text, text
    assert "Scan up [upsert-kafka, watermark ts]  (stateless, upsert)" in text
    (join,) = [n for n in plan.nodes if isinstance(n, TemporalJoin)]
    assert plan.stateful_operators()[join.state_id]["kind"] == "temporal join"


def test_upserts_are_versions_and_a_tombstone_without_time_is_late() -> None:
    sql = ORDERS + UPSERT + SINK + query("LEFT").replace("JOIN rates", "JOIN up")
    h = OperatorHarness(sql, TemporalJoin)
    h.feed(
        up=[
            {"currency": "a", "rate": 1, "ts": at(1), "__op": "+U"},
            {"currency": "b", "rate": 2, "ts": at(1), "__op": "+U"},
            {"currency": "a", "rate": 3, "ts": at(4), "__op": "+U"},
            {"currency": "b", "rate": None, "ts": at(5), "__op": "-D"},
            {"currency": "a", "rate": None, "ts": None, "__op": "-D"},  # a tombstone's value (and time) is NULL
        ]
    )
    out = h.feed(
        orders=[
            {"id": i, "currency": c, "amount": i, "ts": at(t)}
            for i, (c, t) in enumerate([("a", 2), ("a", 4), ("b", 4.5), ("b", 6), ("a", 9)])
        ],
        drain=True,
    )
    assert sorted(out.select("id", "rate").rows(), key=str) == [(0, 1), (1, 3), (2, 2), (3, None), (4, 3)]
    assert h.operator.late_tables["late_versions"].count == 1


def test_an_append_only_delta_table_with_a_key_and_watermark_is_versioned(tmp_path: Path) -> None:
    """Each row appended to the table is the next version of its key (no deletes: a Delta table's rows are
    inserts)."""
    from deltalake import write_deltalake

    rng = random.Random(5)
    changes = [c for c in make_rates(rng, 30) if c[0] != "d"]
    orders = make_orders(rng, 30, late=False)
    rows = pl.DataFrame(
        [after for _, _, after in changes], schema={"currency": pl.String, "rate": pl.Int32, "ts": pl.Int64}
    )
    rows = rows.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"))
    write_deltalake(str(tmp_path / "rates"), rows.head(15).to_arrow())
    write_deltalake(str(tmp_path / "rates"), rows.slice(15).to_arrow(), mode="append")
    write_jsonl(tmp_path / "orders" / "1.json", orders)
    rates = RATES.replace("'path' = 'rates', 'format' = 'debezium-json'", "'path' = 'rates'").replace(
        "'filesystem'", "'delta'"
    )
    run(tmp_path, ORDERS + rates + SINK + query("LEFT"), max_epoch_rows=4, drain=True)
    check(tmp_path, read_sink(tmp_path / "out"), oracle(orders, changes, "LEFT"))


def test_proctime_and_plain_dimensions_stay_lookup_joins() -> None:
    dim = "CREATE TABLE dim (currency STRING, rate INT) WITH ('connector' = 'delta', 'path' = 'dim');\n"
    plan = plan_script(
        ORDERS + dim + SINK + "INSERT INTO out SELECT o.id, o.amount, d.rate, o.ts FROM orders AS o "
        "JOIN dim FOR SYSTEM_TIME AS OF o.ts AS d ON o.currency = d.currency;"
    )
    assert "LookupJoin" in plan.explain()


@pytest.mark.parametrize(
    ("tables", "join", "message", "where"),
    [
        (
            RATES.replace(" PRIMARY KEY (currency) NOT ENFORCED,", ""),
            "LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency",
            "an event-time temporal join needs a versioned table, but 'rates' has no PRIMARY KEY",
            (12, 13),
        ),
        (
            RATES.replace(f",\n  WATERMARK FOR ts AS ts - INTERVAL '{DELAY_S}' SECOND", ""),
            "LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency",
            "an event-time temporal join needs a versioned table, but 'rates' has no WATERMARK",
            (11, 13),
        ),
        (
            RATES,
            "LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.amount = r.rate",
            "needs an equality on each column of 'rates' PRIMARY KEY (currency) with the probe side; missing: currency",
            (12, 56),
        ),
        (
            RATES,
            "FULL JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency",
            "an event-time temporal join is INNER or LEFT",
            (12, 13),
        ),
    ],
)
def test_what_is_refused_is_said_with_its_position(tables: str, join: str, message: str, where: tuple) -> None:
    sql = ORDERS + tables + SINK + f"INSERT INTO out SELECT o.id, o.amount, r.rate, r.ts FROM orders AS o\n  {join};"
    with pytest.raises(SqlError) as caught:
        plan_script(sql)
    assert message in str(caught.value), caught.value
    assert (caught.value.line, caught.value.col) == where, caught.value


def test_other_on_conditions_filter_the_version_and_a_left_join_pads() -> None:
    sql = SMALL + query("LEFT").replace("r.currency;", "r.currency AND r.rate > o.amount;")
    h = OperatorHarness(sql, TemporalJoin)
    h.feed(rates=[_debezium("+I", "a", 5, 1)])
    out = h.feed(
        orders=[
            {"id": 1, "currency": "a", "amount": 1, "ts": at(2)},
            {"id": 2, "currency": "a", "amount": 9, "ts": at(2)},  # the version fails r.rate > o.amount
        ],
        drain=True,
    )
    assert sorted(out.select("id", "rate").rows()) == [(1, 5), (2, None)]


def test_kill_9_and_restart_through_the_cli_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    from tests.test_crash_recovery import crash_until_done

    rng = random.Random(13)
    changes, orders = make_rates(rng, 60), make_orders(rng, 60, late=True)
    for name, kills in (("straight", 0), ("killed", 3)):
        root = tmp_path / name
        write_rates(root / "rates" / "1.json", changes)
        write_jsonl(root / "orders" / "1.json", orders)
        (root / "pipeline.sql").write_text(ORDERS + RATES + SINK + query("LEFT"))
        landed = crash_until_done(root, kills=kills, seed=13)
        assert landed >= min(kills, 1)
    straight, killed = read_sink(tmp_path / "straight" / "out"), read_sink(tmp_path / "killed" / "out")
    assert straight.height > 10
    assert sort_all(killed).equals(sort_all(straight))


@pytest.mark.xdist_group("ray")  # starts Ray, like tests/test_scaleout.py (tests/conftest.py RAY_MODULES)
def test_two_ray_workers_give_the_single_process_result(tmp_path: Path) -> None:
    from tests.scaleout_helpers import run_with

    rng = random.Random(21)
    changes, orders = make_rates(rng, 60), make_orders(rng, 60, late=True)
    outs = []
    for name, workers in (("single", None), ("two", 2)):
        root = tmp_path / name
        write_rates(root / "rates" / "1.json", changes)
        write_jsonl(root / "orders" / "1.json", orders)
        run_with(root, ORDERS + RATES + SINK + query("LEFT"), workers, max_epoch_rows=7, drain=True)
        outs.append(sort_all(read_sink(root / "out")))
    assert outs[0].equals(outs[1])
    check(tmp_path, outs[1], oracle(orders, changes, "LEFT"))
