"""Flink's "Versioned Tables" and "Joins" documentation examples, as tests/test_flink_doc_examples.py runs them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from tests.flink_doc_helpers import assert_one_line_error, cli, rows, run_flink_sql, ts
from tests.helpers import duck, read_sink, write_jsonl

# -- "Versioned Tables" and "Joins": event-time temporal joins ------------------------------------------------------
ORDERS_DDL = """
CREATE TABLE orders (
    order_id    STRING,
    price       DECIMAL(32,2),
    currency    STRING,
    order_time  TIMESTAMP(3),
    WATERMARK FOR order_time AS order_time
) WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
"""
ORDERS = [
    {"order_id": "o_001", "price": 2.0, "currency": "Euro", "order_time": "2020-01-01 10:15:00"},
    {"order_id": "o_002", "price": 1.0, "currency": "USD", "order_time": "2020-01-01 10:30:00"},
    {"order_id": "o_003", "price": 50.0, "currency": "Yen", "order_time": "2020-01-01 10:32:00"},
    {"order_id": "o_004", "price": 3.0, "currency": "Euro", "order_time": "2020-01-01 10:52:00"},
    {"order_id": "o_005", "price": 5.0, "currency": "USD", "order_time": "2020-01-01 11:04:00"},
    {"order_id": "o_006", "price": 7.0, "currency": "Pounds", "order_time": "2020-01-01 11:30:00"},
    {"order_id": "o_007", "price": 1.0, "currency": "Euro", "order_time": "2020-01-01 11:50:00"},
]
RATE_CHANGES = [  # the docs' changelog of versioned_rates, as appended rows of currency_rates
    ("09:00:00", "Yen", 102),
    ("09:00:00", "Euro", 114),
    ("09:00:00", "USD", 1),
    ("10:45:00", "Euro", 116),
    ("11:15:00", "Euro", 119),
    ("11:49:00", "Pounds", 108),
]


def rate_at(currency: str, when: str) -> int | None:
    """The oracle: the latest version of the currency at or before the order's time."""
    versions = [(t, r) for t, c, r in RATE_CHANGES if c == currency and f"2020-01-01 {t}" <= when]
    return max(versions)[1] if versions else None


VERSIONED_VIEW = """
CREATE TABLE currency_rates (
	currency      STRING,
	rate          DECIMAL(32, 10),
	update_time   TIMESTAMP(3),
	WATERMARK FOR update_time AS update_time{primary_key}
) WITH ('connector' = 'filesystem', 'path' = 'rates', 'format' = 'json');

-- Define a versioned view
CREATE VIEW versioned_rates AS
SELECT currency, rate, update_time              -- (1) `update_time` keeps the event time
  FROM (
      SELECT *,
      ROW_NUMBER() OVER (PARTITION BY currency  -- (2) the inferred unique key `currency` can be a primary key
         ORDER BY update_time DESC) AS rownum
      FROM currency_rates)
WHERE rownum = 1;

CREATE TABLE out (order_id STRING, price DECIMAL(32, 2), currency STRING, rate DECIMAL(32, 10),
  order_time TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT
     order_id,
     price,
     orders.currency,
     rate,
     order_time
FROM orders
LEFT JOIN {versioned} FOR SYSTEM_TIME AS OF orders.order_time
ON orders.currency = {versioned}.currency;
"""
RATES = [{"currency": c, "rate": r, "update_time": f"2020-01-01 {t}"} for t, c, r in RATE_CHANGES]


def expected_join() -> list[tuple]:
    return sorted(
        (o["order_id"], o["price"], o["currency"], rate_at(o["currency"], o["order_time"]), ts(o["order_time"]))
        for o in ORDERS
    )


def test_temporal_join_with_a_versioned_view(tmp_path: Path) -> None:
    """Flink's "Versioned Table Views": the build side is a view keeping each currency's latest rate."""
    sql = ORDERS_DDL + VERSIONED_VIEW.format(primary_key="", versioned="versioned_rates")
    run_flink_sql(tmp_path, sql, {"orders": ORDERS, "rates": RATES})
    got = read_sink(tmp_path / "out").with_columns(pl.col("rate").cast(pl.Float64), pl.col("price").cast(pl.Float64))
    assert rows(got) == expected_join()
    assert [r[3] for r in expected_join()] == [114, 1, 102, 116, 1, None, 119]  # the docs' rates, by hand
    plan = cli(tmp_path, "explain", "pipeline.sql")
    assert "TemporalJoin LEFT" in plan.stdout, plan.stdout + plan.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("ORDER BY update_time DESC", "ORDER BY ... ASC keeps each key's first row"),
        ("WHERE rownum = 1;", "the view must keep rownum = 1"),
        ("SELECT currency, rate, update_time ", "the view must select the table's columns as they are"),
    ],
)
def test_temporal_join_with_another_view_is_refused_in_one_line(tmp_path: Path, change: str, message: str) -> None:
    replacement = {
        "ORDER BY update_time DESC": "ORDER BY update_time ASC",
        "WHERE rownum = 1;": "WHERE rownum <= 3;",
        "SELECT currency, rate, update_time ": "SELECT currency, rate ",
    }[change]
    sql = ORDERS_DDL + VERSIONED_VIEW.format(primary_key="", versioned="versioned_rates").replace(change, replacement)
    write_jsonl(tmp_path / "orders" / "part-0.json", ORDERS)
    write_jsonl(tmp_path / "rates" / "part-0.json", RATES)
    error = assert_one_line_error(tmp_path, sql, 37, "a temporal join over a view needs Flink's versioned view")
    assert message in error


def test_temporal_join_with_the_versioned_views_table_keyed_by_its_partition_key(tmp_path: Path) -> None:
    """The same as the versioned view: the append-only table itself with PRIMARY KEY (currency), each of whose rows
    is then a version of its key."""
    sql = ORDERS_DDL + VERSIONED_VIEW.format(
        primary_key=",\n\tPRIMARY KEY (currency) NOT ENFORCED", versioned="currency_rates"
    )
    run_flink_sql(tmp_path, sql, {"orders": ORDERS, "rates": RATES})
    got = read_sink(tmp_path / "out").with_columns(pl.col("rate").cast(pl.Float64), pl.col("price").cast(pl.Float64))
    assert rows(got) == expected_join()


TEMPORAL_JOIN_AS_PRINTED = """
SELECT
     order_id,
     price,
     currency,
     conversion_rate,
     order_time,
FROM orders
LEFT JOIN currency_rates FOR SYSTEM_TIME AS OF orders.order_time
ON orders.currency = currency_rates.currency;
"""


def test_temporal_join_over_a_delta_change_data_feed(tmp_path: Path) -> None:
    """The Joins page's currency_rates is a Debezium topic whose update_time is Kafka metadata
    (`METADATA FROM 'value.source.timestamp'`); read from a Delta table's change data feed instead, update_time is a
    column of the table. The query is the docs' without the trailing comma before FROM, and with `currency`
    qualified: as printed, both are errors in Flink too (see the next test)."""
    cdf = {"delta.enableChangeDataFeed": "true"}
    schema = {"currency": pl.String, "conversion_rate": pl.Decimal(32, 2), "update_time": pl.Datetime("ms", "UTC")}
    first = pl.DataFrame(
        [
            {"currency": "EUR", "conversion_rate": Decimal("1.14"), "update_time": ts("2020-01-01 11:00:00")},
            {"currency": "USD", "conversion_rate": Decimal("1.00"), "update_time": ts("2020-01-01 11:00:00")},
        ],
        schema=schema,
    )
    import deltalake

    deltalake.write_deltalake(str(tmp_path / "rates"), first.to_arrow(), configuration=cdf)
    table = deltalake.DeltaTable(str(tmp_path / "rates"))
    table.update(
        predicate="currency = 'EUR'", updates={"conversion_rate": "1.10", "update_time": "'2020-01-01T12:05:00Z'"}
    )
    sql = (
        ORDERS_DDL
        + """
CREATE TABLE currency_rates (
    currency STRING,
    conversion_rate DECIMAL(32, 2),
    update_time TIMESTAMP(3),
    WATERMARK FOR update_time AS update_time,
    PRIMARY KEY(currency) NOT ENFORCED
) WITH ('connector' = 'delta', 'path' = 'rates', 'read.change-data-feed' = 'true');
CREATE TABLE out (order_id STRING, price DECIMAL(32, 2), currency STRING, conversion_rate DECIMAL(32, 2),
  order_time TIMESTAMP(3)) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
"""
        + TEMPORAL_JOIN_AS_PRINTED.replace("order_time,\n", "order_time\n").replace(
            "     currency,", "     orders.currency,"
        )
    )
    orders = [
        {"order_id": "o_001", "price": 11.11, "currency": "EUR", "order_time": "2020-01-01 12:00:00"},
        {"order_id": "o_002", "price": 12.51, "currency": "EUR", "order_time": "2020-01-01 12:06:00"},
    ]
    run_flink_sql(tmp_path, sql, {"orders": orders})
    flink_says = [
        ("o_001", Decimal("11.11"), "EUR", Decimal("1.14"), ts("2020-01-01 12:00:00")),
        ("o_002", Decimal("12.51"), "EUR", Decimal("1.10"), ts("2020-01-01 12:06:00")),
    ]
    assert rows(read_sink(tmp_path / "out")) == flink_says


CURRENCY_RATES_AS_PRINTED = """
CREATE TABLE currency_rates (
    currency STRING,
    conversion_rate DECIMAL(32, 2),
    update_time TIMESTAMP(3) METADATA FROM `values.source.timestamp` VIRTUAL,
    WATERMARK FOR update_time AS update_time,
    PRIMARY KEY(currency) NOT ENFORCED
) WITH ('connector' = 'filesystem', 'path' = 'rates', 'format' = 'debezium-json');
CREATE TABLE out (order_id STRING, price DECIMAL(32, 2), currency STRING, conversion_rate DECIMAL(32, 2),
  order_time TIMESTAMP(3)) WITH ('connector' = 'blackhole');
INSERT INTO out"""


@pytest.mark.parametrize(
    ("fix", "line", "message"),
    [
        # as printed: METADATA FROM takes a string literal, in Flink too
        ({}, 13, "syntax error near '`values.source.timestamp`'"),
        # quoted: debezium's metadata is the Kafka record's, which a file does not have
        ({"`values.source.timestamp`": "'value.source.timestamp'"}, 13, "is a METADATA column, which only Kafka"),
        # a column: `currency` is a column of both sides, which Flink refuses as ambiguous too
        (
            {"TIMESTAMP(3) METADATA FROM `values.source.timestamp` VIRTUAL": "TIMESTAMP(3)"},
            23,
            "column 'currency' is ambiguous",
        ),
    ],
)
def test_the_joins_page_temporal_join_as_printed_is_refused_in_one_line(
    tmp_path: Path, fix: dict[str, str], line: int, message: str
) -> None:
    sql = ORDERS_DDL + CURRENCY_RATES_AS_PRINTED + TEMPORAL_JOIN_AS_PRINTED
    for old, new in fix.items():
        sql = sql.replace(old, new)
    (tmp_path / "orders").mkdir()
    (tmp_path / "rates").mkdir()
    assert_one_line_error(tmp_path, sql, line, message)


# -- "Joins": array expansion ----------------------------------------------------------------------------------------
def test_array_expansion_with_cross_join_unnest(tmp_path: Path) -> None:
    sql = """
CREATE TABLE Orders (order_id BIGINT, tags ARRAY<STRING>)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE out (order_id BIGINT, tag STRING) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT order_id, tag
FROM Orders CROSS JOIN UNNEST(tags) AS t (tag)
"""
    orders = [{"order_id": 1, "tags": ["a", "b"]}, {"order_id": 2, "tags": []}, {"order_id": 3, "tags": ["c"]}]
    run_flink_sql(tmp_path, sql, {"orders": orders})
    assert rows(read_sink(tmp_path / "out")) == [(1, "a"), (1, "b"), (3, "c")]


# -- "Joins": regular and interval joins -----------------------------------------------------------------------------
JOIN_TABLES = """
CREATE TABLE Orders (order_id BIGINT, product_id BIGINT, amount INT, order_time TIMESTAMP(3),
  WATERMARK FOR order_time AS order_time)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE Product (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 'product', 'format' = 'json');
"""
JOIN_ORDERS = [
    {"order_id": i, "product_id": p, "amount": a, "order_time": f"2020-01-01 10:{i:02d}:00"}
    for i, (p, a) in enumerate([(1, 5), (2, 3), (9, 1), (1, 7), (3, 2)])
]
PRODUCTS = [{"id": 1, "name": "scooter"}, {"id": 2, "name": "basketball"}, {"id": 4, "name": "kite"}]


@pytest.mark.parametrize(
    ("join", "key"),
    [
        ("INNER JOIN", ""),
        ("LEFT JOIN", ", PRIMARY KEY (order_id) NOT ENFORCED"),
        ("RIGHT JOIN", ", PRIMARY KEY (order_id, id) NOT ENFORCED"),
        ("FULL OUTER JOIN", ", PRIMARY KEY (order_id, id) NOT ENFORCED"),
    ],
)
def test_regular_equi_joins(tmp_path: Path, join: str, key: str) -> None:
    sql = (
        JOIN_TABLES
        + f"""
CREATE TABLE out (order_id BIGINT, product_id BIGINT, amount INT, order_time TIMESTAMP(3), id BIGINT, name STRING{key})
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT *
FROM Orders
{join} Product
ON Orders.product_id = Product.id
"""
    )
    run_flink_sql(tmp_path, sql, {"orders": JOIN_ORDERS, "product": PRODUCTS})
    orders = pl.DataFrame(JOIN_ORDERS).with_columns(pl.col("order_time").str.to_datetime())
    expected = duck(f"SELECT * FROM o {join} p ON o.product_id = p.id", o=orders, p=pl.DataFrame(PRODUCTS))
    got = read_sink(tmp_path / "out").with_columns(pl.col("order_time").dt.replace_time_zone(None))
    assert rows(got) == rows(expected.with_columns(pl.col("order_time").cast(pl.Datetime("us"))))


def test_interval_join_orders_shipped_within_four_hours(tmp_path: Path) -> None:
    sql = """
CREATE TABLE Orders (id BIGINT, order_time TIMESTAMP(3), WATERMARK FOR order_time AS order_time)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE Shipments (order_id BIGINT, ship_time TIMESTAMP(3), WATERMARK FOR ship_time AS ship_time)
WITH ('connector' = 'filesystem', 'path' = 'shipments', 'format' = 'json');
CREATE TABLE out (id BIGINT, order_time TIMESTAMP(3), order_id BIGINT, ship_time TIMESTAMP(3))
WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT *
FROM Orders o, Shipments s
WHERE o.id = s.order_id
AND o.order_time BETWEEN s.ship_time - INTERVAL '4' HOUR AND s.ship_time
"""
    orders = [{"id": i, "order_time": f"2020-01-01 0{i}:00:00"} for i in range(1, 5)]
    shipments = [
        {"order_id": 1, "ship_time": "2020-01-01 03:00:00"},  # 2 h after: joins
        {"order_id": 2, "ship_time": "2020-01-01 07:00:00"},  # 5 h after: too late
        {"order_id": 3, "ship_time": "2020-01-01 07:00:00"},  # exactly 4 h: joins (BETWEEN is inclusive)
        {"order_id": 4, "ship_time": "2020-01-01 03:00:00"},  # before the order: no
    ]
    run_flink_sql(tmp_path, sql, {"orders": orders, "shipments": shipments})
    assert rows(read_sink(tmp_path / "out")) == [
        (1, ts("2020-01-01 01:00:00"), 1, ts("2020-01-01 03:00:00")),
        (3, ts("2020-01-01 03:00:00"), 3, ts("2020-01-01 07:00:00")),
    ]
