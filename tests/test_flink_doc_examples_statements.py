"""Flink's "SQL Client" (statement sets), "Top-N", "Deduplication", "CREATE statements" and "System (Built-in)
Functions" documentation examples, as tests/test_flink_doc_examples.py runs them."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.flink_doc_helpers import assert_one_line_error, rows, run_flink_sql
from tests.helpers import duck, read_sink, write_jsonl

# -- "System (Built-in) Functions": the JSON functions' examples and the collection functions ----------------------
JSON_EXAMPLES = [  # (Flink's example, the result its docs give)
    ("""JSON_EXISTS('{"a": true}', '$.a')""", "TRUE"),
    ("""JSON_EXISTS('{"a": [{ "b": 1 }]}', '$.a[0].b')""", "TRUE"),
    ("""JSON_EXISTS('{"a": true}', 'strict $.b' TRUE ON ERROR)""", "TRUE"),
    ("""JSON_EXISTS('{"a": true}', '$.b')""", "FALSE"),
    ("""JSON_EXISTS('{"a": true}', 'strict $.b' FALSE ON ERROR)""", "FALSE"),
    ("JSON_OBJECT()", "{}"),
    ("JSON_OBJECT('K1' VALUE 'V1', 'K2' VALUE 'V2')", '{"K1":"V1","K2":"V2"}'),
    ("JSON_OBJECT(KEY 'K1' VALUE CAST(NULL AS STRING) NULL ON NULL)", '{"K1":null}'),
    ("JSON_OBJECT(KEY 'K1' VALUE CAST(NULL AS STRING) ABSENT ON NULL)", "{}"),
    (
        "JSON_OBJECT(\n      KEY 'K1'\n      VALUE JSON_OBJECT(\n        KEY 'K2'\n        VALUE 'V'\n      )\n    )",
        '{"K1":{"K2":"V"}}',
    ),
    ("JSON_ARRAY()", "[]"),
    ("JSON_ARRAY(1)", "[1]"),
    ("JSON_ARRAY(JSON_ARRAY(1))", "[[1]]"),
    ("""JSON_QUERY('{ "a": { "b": 1 } }', '$.a')""", '{"b":1}'),  # compact, as Flink writes it
    ("JSON_QUERY('[1, 2]', '$')", "[1,2]"),
    ("JSON_QUERY(CAST(NULL AS STRING), '$')", None),
    ("JSON_QUERY('{}', '$' WITH CONDITIONAL ARRAY WRAPPER)", "[{}]"),
    ("JSON_QUERY('[1, 2]', '$' WITH CONDITIONAL ARRAY WRAPPER)", "[1,2]"),
    ("JSON_QUERY('[1, 2]', '$' WITH UNCONDITIONAL ARRAY WRAPPER)", "[[1,2]]"),
    ("JSON_QUERY('{}', 'lax $.invalid' EMPTY OBJECT ON EMPTY)", "{}"),
    ("JSON_QUERY('{}', 'strict $.invalid' EMPTY ARRAY ON ERROR)", "[]"),
    ("JSON_STRING(CAST(NULL AS INT))", None),
    ("JSON_STRING(1)", "1"),
    ("JSON_STRING(TRUE)", "true"),
    ("JSON_STRING('Hello, World!')", '"Hello, World!"'),
    ("JSON_STRING(ARRAY[1, 2])", "[1,2]"),
    ("""JSON_VALUE('{"a": true}', '$.a')""", "true"),
    ("""JSON_VALUE('{"a": true}', '$.a' RETURNING BOOLEAN)""", "TRUE"),
    ("""JSON_VALUE('{"a": true}', 'lax $.b' DEFAULT FALSE ON EMPTY)""", "FALSE"),
    ("""JSON_VALUE('{"a": true}', 'strict $.b' DEFAULT FALSE ON ERROR)""", "FALSE"),
    ("""JSON_VALUE('{"a.b": [0.998,0.996]}','$.["a.b"][0]' RETURNING DOUBLE)""", "0.998"),
    (
        """JSON_VALUE('{"contains blank": "right"}', 'strict $.[''contains blank'']' NULL ON EMPTY """
        """DEFAULT 'wrong' ON ERROR)""",
        "right",
    ),
    ("JSON_QUOTE('SQL string')", '"SQL string"'),
    ("'{}' IS JSON", "TRUE"),
    ("'abc' IS JSON", "FALSE"),
]
COLLECTION_EXAMPLES = [
    ("ARRAY['Java', 'SQL'][1]", "Java"),
    ("CARDINALITY(ARRAY[1, 2, 3])", "3"),
    ("CARDINALITY(MAP['a', 1, 'b', 2])", "2"),
    ("ELEMENT(ARRAY[42])", "42"),
    ("MAP['k1', 1, 'k2', 2]['k2']", "2"),
    ("JSON_STRING(ARRAY_CONCAT(ARRAY[1, 2, 3, NULL, 3], ARRAY[0], ARRAY[5]))", "[1,2,3,null,3,0,5]"),
    ("ARRAY_JOIN(ARRAY['hello', 'world'], ' ')", "hello world"),
    ("JSON_STRING(ARRAY_UNION(ARRAY[1], ARRAY[2]))", "[1,2]"),
    ("JSON_STRING(ARRAY_SORT(ARRAY[3, 1, NULL, 2]))", "[null,1,2,3]"),
    ("JSON_STRING(ARRAY_DISTINCT(ARRAY[1, 2, 2, NULL, NULL]))", "[1,2,null]"),
    ("JSON_STRING(ARRAY_SLICE(ARRAY[1, 2, 3, 4], 2, 3))", "[2,3]"),
    ("JSON_STRING(SPLIT('a,b,c', ','))", '["a","b","c"]'),
    ("JSON_STRING(MAP_KEYS(MAP['a', 1, 'b', 2]))", '["a","b"]'),
    ("ARRAY_CONTAINS(ARRAY[1, NULL], CAST(NULL AS INT))", "TRUE"),
    ("ARRAY_POSITION(ARRAY[1, 2, 3, 2], 2)", "2"),
    ("ARRAY_MAX(ARRAY[1, 5, NULL])", "5"),
    ("JSON_STRING(ARRAY[ARRAY[1.5, 2.0], ARRAY[3.0]])", "[[1.5,2.0],[3.0]]"),  # used to be refused
    ("CARDINALITY(ARRAY[ARRAY[1], CAST(NULL AS ARRAY<INT>)])", "2"),
]


def test_builtin_function_examples_give_what_flinks_docs_say(tmp_path: Path) -> None:
    examples = JSON_EXAMPLES + COLLECTION_EXAMPLES
    columns = ", ".join(f"c{i} STRING" for i in range(len(examples)))
    select = ",\n  ".join(f"CAST({e} AS STRING)" for e, _ in examples)
    sql = f"""
CREATE TABLE t (id INT) WITH ('connector' = 'filesystem', 'path' = 't', 'format' = 'json');
CREATE TABLE out ({columns}) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT
  {select}
FROM t;
"""
    run_flink_sql(tmp_path, sql, {"t": [{"id": 1}]})
    got = read_sink(tmp_path / "out").row(0)
    assert dict(zip([e for e, _ in examples], got, strict=True)) == dict(examples)


# -- "SQL Client": EXECUTE STATEMENT SET -----------------------------------------------------------------------------
PAGEVIEWS_SCRIPT = """
CREATE TABLE pageviews (
  user_id BIGINT,
  page_id BIGINT,
  viewtime TIMESTAMP,
  proctime AS PROCTIME()
) WITH ('connector' = 'filesystem', 'path' = 'pageviews', 'format' = 'json');

CREATE TABLE pageview (
  page_id BIGINT,
  cnt BIGINT{key}
) WITH ('connector' = 'delta', 'path' = 'pageview');

CREATE TABLE uniqueview (
  page_id BIGINT,
  cnt BIGINT{key}
) WITH ('connector' = 'delta', 'path' = 'uniqueview');

{begin}

INSERT INTO pageview
SELECT page_id, count(1)
FROM pageviews
GROUP BY page_id;

INSERT INTO uniqueview
SELECT page_id, count(distinct user_id)
FROM pageviews
GROUP BY page_id;

END;
"""
PAGEVIEWS = [
    {"user_id": u, "page_id": p, "viewtime": f"2020-01-01 10:00:{i:02d}"}
    for i, (u, p) in enumerate([(1, 10), (2, 10), (1, 10), (3, 20), (1, 20), (2, 30), (2, 30)])
]


def test_statement_set_into_sinks_without_a_key_is_refused_in_one_line(tmp_path: Path) -> None:
    """As printed, the sinks are JDBC tables without a PRIMARY KEY, which Flink's JDBC sink refuses for an updating
    query too ("please declare primary key for sink table when query contains update/delete record")."""
    write_jsonl(tmp_path / "pageviews" / "part-0.json", PAGEVIEWS)
    sql = PAGEVIEWS_SCRIPT.format(key="", begin="EXECUTE STATEMENT SET\nBEGIN")
    error = assert_one_line_error(tmp_path, sql, 23, "INSERT INTO pageview: the query gives an updating result")
    assert "Declare PRIMARY KEY" in error


@pytest.mark.parametrize("begin", ["EXECUTE STATEMENT SET\nBEGIN", "BEGIN STATEMENT SET;"])
def test_statement_set_page_views_and_unique_views(tmp_path: Path, begin: str) -> None:
    sql = PAGEVIEWS_SCRIPT.format(key=",\n  PRIMARY KEY (page_id) NOT ENFORCED", begin=begin)
    run_flink_sql(tmp_path, sql, {"pageviews": PAGEVIEWS})
    views = pl.DataFrame(PAGEVIEWS)
    expected_pv = duck("SELECT page_id, count(1) AS cnt FROM v GROUP BY page_id", v=views)
    expected_uv = duck("SELECT page_id, count(DISTINCT user_id) AS cnt FROM v GROUP BY page_id", v=views)
    assert rows(read_sink(tmp_path / "pageview")) == rows(expected_pv)
    assert rows(read_sink(tmp_path / "uniqueview")) == rows(expected_uv)


# -- "Top-N" and "Deduplication" -------------------------------------------------------------------------------------
SHOP_SALES = [
    {"product_id": f"p{i}", "category": c, "product_name": f"name{i}", "sales": s}
    for i, (c, s) in enumerate(
        [
            ("toys", 5),
            ("toys", 50),
            ("toys", 7),
            ("toys", 31),
            ("toys", 2),
            ("toys", 44),
            ("toys", 18),
            ("books", 3),
            ("books", 90),
            ("books", 12),
            ("food", 8),
        ]
    )
]
SHOP_SALES_DDL = """
CREATE TABLE ShopSales (
  product_id   STRING,
  category     STRING,
  product_name STRING,
  sales        BIGINT
) WITH ('connector' = 'filesystem', 'path' = 'shop_sales', 'format' = 'json');
"""


def test_top_n_five_best_selling_products_per_category(tmp_path: Path) -> None:
    sql = (
        SHOP_SALES_DDL
        + """
CREATE TABLE out (product_id STRING, category STRING, product_name STRING, sales BIGINT, row_num BIGINT,
  PRIMARY KEY (category, row_num) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT *
FROM (
  SELECT *,
    ROW_NUMBER() OVER (PARTITION BY category ORDER BY sales DESC) AS row_num
  FROM ShopSales)
WHERE row_num <= 5
"""
    )
    run_flink_sql(tmp_path, sql, {"shop_sales": SHOP_SALES})
    expected = duck(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY category ORDER BY sales DESC) AS row_num "
        "FROM s) WHERE row_num <= 5",
        s=pl.DataFrame(SHOP_SALES),
    )
    assert rows(read_sink(tmp_path / "out")) == rows(expected)


def test_top_n_without_the_rank_in_the_output(tmp_path: Path) -> None:
    sql = (
        SHOP_SALES_DDL
        + """
CREATE TABLE out (product_id STRING, category STRING, product_name STRING, sales BIGINT,
  PRIMARY KEY (product_id) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'out');
-- omit row_num field from the output
INSERT INTO out
SELECT product_id, category, product_name, sales
FROM (
  SELECT *,
    ROW_NUMBER() OVER (PARTITION BY category ORDER BY sales DESC) AS row_num
  FROM ShopSales)
WHERE row_num <= 5
"""
    )
    run_flink_sql(tmp_path, sql, {"shop_sales": SHOP_SALES})
    expected = duck(
        "SELECT product_id, category, product_name, sales FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY category "
        "ORDER BY sales DESC) AS row_num FROM s) WHERE row_num <= 5",
        s=pl.DataFrame(SHOP_SALES),
    )
    assert rows(read_sink(tmp_path / "out")) == rows(expected)


DEDUP_SCRIPT = """
CREATE TABLE Orders (
{order_id}  order_time  STRING,
  user        STRING,
  product     STRING,
  num         BIGINT,
  proctime AS PROCTIME()
) WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE out (order_id STRING, `user` STRING, product STRING, num BIGINT, PRIMARY KEY (order_id) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out');

-- remove duplicate rows on order_id and keep the first occurrence row,
-- because there shouldn't be two orders with the same order_id.
INSERT INTO out
SELECT order_id, user, product, num
FROM (
  SELECT *,
    ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY proctime ASC) AS row_num
  FROM Orders)
WHERE row_num = 1
"""
DEDUP_ORDERS = [
    {"order_id": o, "order_time": "t", "user": u, "product": p, "num": n}
    for o, u, p, n in [
        ("o1", "alice", "apple", 1),
        ("o2", "bob", "pear", 2),
        ("o1", "alice", "apple", 9),
        ("o3", "carl", "fig", 3),
        ("o2", "bob", "pear", 7),
    ]
]


def test_deduplication_as_printed_names_a_column_its_table_lacks(tmp_path: Path) -> None:
    """The docs' Orders table has no order_id, which the query deduplicates on: Flink refuses it too."""
    write_jsonl(tmp_path / "orders" / "part-0.json", DEDUP_ORDERS)
    assert_one_line_error(tmp_path, DEDUP_SCRIPT.format(order_id=""), 18, "unknown column 'order_id'")


def test_deduplication_keeps_the_first_row_per_order_by_processing_time(tmp_path: Path) -> None:
    run_flink_sql(tmp_path, DEDUP_SCRIPT.format(order_id="  order_id    STRING,\n"), {"orders": DEDUP_ORDERS})
    assert rows(read_sink(tmp_path / "out")) == [
        ("o1", "alice", "apple", 1),
        ("o2", "bob", "pear", 2),
        ("o3", "carl", "fig", 3),
    ]


# -- "CREATE statements": views, CTAS, functions -----------------------------------------------------------------
SOURCE_TABLE = """
CREATE TABLE source_table (id BIGINT, name STRING, age INT)
WITH ('connector' = 'filesystem', 'path' = 'src', 'format' = 'json');
"""
PEOPLE = [{"id": 10, "name": "a", "age": 3}, {"id": 11, "name": "b", "age": 4}, {"id": 20, "name": "c", "age": 5}]


def test_create_temporary_view_with_a_column_list_and_a_comment(tmp_path: Path) -> None:
    """`CREATE [TEMPORARY] VIEW [IF NOT EXISTS] v [(columns)] [COMMENT '...'] AS query`: the list names the view's
    columns (it used to be dropped, and the names it gave were unknown)."""
    sql = (
        SOURCE_TABLE
        + """
CREATE TEMPORARY VIEW IF NOT EXISTS tens (id, who, years) COMMENT 'every tenth'
  AS SELECT id, name, age FROM source_table WHERE mod(id, 10) = 0;
CREATE TABLE out (id BIGINT, who STRING, years INT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT id, who, years FROM tens;
"""
    )
    run_flink_sql(tmp_path, sql, {"src": PEOPLE})
    assert rows(read_sink(tmp_path / "out")) == [(10, "a", 3), (20, "c", 5)]


def test_a_subquerys_column_aliases_rename_its_columns(tmp_path: Path) -> None:
    sql = (
        SOURCE_TABLE
        + """
CREATE TABLE out (id BIGINT, who STRING, years INT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT v.id, who, years + 1 FROM (SELECT id, name, age FROM source_table) AS v (id, who, years);
"""
    )
    run_flink_sql(tmp_path, sql, {"src": PEOPLE})
    assert rows(read_sink(tmp_path / "out")) == [(10, "a", 4), (11, "b", 5), (20, "c", 6)]


@pytest.mark.parametrize(
    ("statement", "line", "message"),
    [
        ("CREATE VIEW v (a, b) AS SELECT id, name, age FROM source_table;", 4, "2 column names for 3 columns"),
        ("CREATE VIEW v (a, a, b) AS SELECT id, name, age FROM source_table;", 4, "column name 'a' is given twice"),
        (
            "CREATE TABLE my_ctas_table\nWITH (\n    'connector' = 'delta', 'path' = 'ctas'\n)\n"
            "AS SELECT id, name, age FROM source_table WHERE mod(id, 10) = 0;",
            4,
            "CREATE TABLE ... AS SELECT is not supported; use INSERT INTO",
        ),
    ],
)
def test_create_statements_refused_in_one_line(tmp_path: Path, statement: str, line: int, message: str) -> None:
    """A view's column list is checked where the view is used (a view is planned there), Flink's when it is made."""
    write_jsonl(tmp_path / "src" / "part-0.json", PEOPLE)
    sql = SOURCE_TABLE + statement + "\nCREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');\n"
    used = "v" if "VIEW" in statement else "source_table"
    assert_one_line_error(tmp_path, sql + f"INSERT INTO out SELECT 1 FROM {used};\n", line, message)


def test_create_function_language_python(tmp_path: Path) -> None:
    """Flink's `CREATE TEMPORARY FUNCTION ... AS 'module.fn' LANGUAGE PYTHON`. The module is timelapse's: a Flink
    module decorates with pyflink's `@udf(result_type=...)`, which is not installed here (next test); a plain
    function with type hints is the same UDF."""
    (tmp_path / "my_udfs.py").write_text(
        "def add(i: int | None, j: int | None) -> int | None:\n    return None if i is None or j is None else i + j\n"
    )
    sql = (
        SOURCE_TABLE
        + """
CREATE TEMPORARY FUNCTION add AS 'my_udfs.add' LANGUAGE PYTHON;
CREATE TABLE out (id BIGINT, s BIGINT) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out SELECT id, add(id, age) FROM source_table;
"""
    )
    run_flink_sql(tmp_path, sql, {"src": PEOPLE})
    assert rows(read_sink(tmp_path / "out")) == [(10, 13), (11, 15), (20, 25)]


def test_a_pyflink_udf_module_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "flink_udfs.py").write_text(
        "from pyflink.table import DataTypes\nfrom pyflink.table.udf import udf\n\n\n"
        "@udf(result_type=DataTypes.BIGINT())\ndef add(i, j):\n    return i + j\n"
    )
    write_jsonl(tmp_path / "src" / "part-0.json", PEOPLE)
    sql = (
        SOURCE_TABLE
        + """
CREATE TEMPORARY FUNCTION add AS 'flink_udfs.add' LANGUAGE PYTHON;
CREATE TABLE out (id BIGINT, s BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id, add(id, age) FROM source_table;
"""
    )
    assert_one_line_error(tmp_path, sql, 5, "no module named 'pyflink'")


# -- "System (Built-in) Functions": aggregate functions --------------------------------------------------------------
def test_aggregate_functions_over_a_group_by(tmp_path: Path) -> None:
    sql = """
CREATE TABLE orders (customer STRING, product STRING, amount DOUBLE)
WITH ('connector' = 'filesystem', 'path' = 'orders', 'format' = 'json');
CREATE TABLE out (customer STRING, products STRING, first_product STRING, last_product STRING, sd DOUBLE, v DOUBLE,
  all_big BOOLEAN, PRIMARY KEY (customer) NOT ENFORCED) WITH ('connector' = 'delta', 'path' = 'out');
INSERT INTO out
SELECT customer, LISTAGG(product, ', '), FIRST_VALUE(product), LAST_VALUE(product), STDDEV_POP(amount),
  VAR_SAMP(amount), BOOL_AND(amount > 1)
FROM orders GROUP BY customer
"""
    data = [
        {"customer": c, "product": p, "amount": a}
        for c, p, a in [
            ("ann", "Apple", 3.0),
            ("bob", "Pear", 1.0),
            ("ann", "Banana", 7.0),
            ("ann", "Orange", 2.0),
            ("bob", "Fig", 4.0),
        ]
    ]
    run_flink_sql(tmp_path, sql, {"orders": data})
    frame = pl.DataFrame(data).with_row_index("seq")
    expected = duck(
        "SELECT customer, string_agg(product, ', ' ORDER BY seq), first(product ORDER BY seq), "
        "last(product ORDER BY seq), stddev_pop(amount), var_samp(amount), bool_and(amount > 1) "
        "FROM o GROUP BY customer",
        o=frame,
    )
    got = [tuple(round(x, 9) if isinstance(x, float) else x for x in r) for r in rows(read_sink(tmp_path / "out"))]
    want = [tuple(round(x, 9) if isinstance(x, float) else x for x in r) for r in rows(expected)]
    assert got == want
