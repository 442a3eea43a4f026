"""Flink's JSON functions (sql/functions/json_functions.py) through a pipeline, against a Python reference (DuckDB's
JSON functions follow other rules for paths, NULLs and errors), NULLs and invalid documents included."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_builtin_functions import ROWS, pipeline


def _lookup(document: str | None, *keys: object) -> tuple[str, object]:
    """('null' | 'error' | 'missing' | 'value', value) for a lax path of keys in a JSON text (a Python oracle)."""
    if document is None:
        return "null", None
    try:
        value = json.loads(document)
    except ValueError:
        return "error", None
    for key in keys:
        in_list = isinstance(key, int) and isinstance(value, list) and key < len(value)
        if in_list or (isinstance(key, str) and isinstance(value, dict) and key in value):
            value = value[key]
        else:
            return "missing", None
    return "value", value


def test_json_functions_equal_a_python_reference(tmp_path: Path) -> None:
    columns = [
        ("isj", "BOOLEAN", "j IS JSON"),
        ("isn", "BOOLEAN", "j IS NOT JSON"),
        ("iso", "BOOLEAN", "j IS JSON OBJECT"),
        ("isa", "BOOLEAN", "j IS JSON ARRAY"),
        ("iss", "BOOLEAN", "j IS JSON SCALAR"),
        ("ex", "BOOLEAN", "JSON_EXISTS(j, '$.a')"),
        ("exd", "BOOLEAN", "JSON_EXISTS(j, '$.d.e[1]')"),
        ("exe", "BOOLEAN", "JSON_EXISTS(j, '$.a' TRUE ON ERROR)"),
        ("exn", "BOOLEAN", "JSON_EXISTS(j, '$.c')"),
        ("vn", "STRING", "JSON_VALUE(j, '$.c' DEFAULT 'empty' ON EMPTY)"),
        ("qn", "STRING", "JSON_QUERY(j, '$.c' WITH UNCONDITIONAL ARRAY WRAPPER)"),
        ("qa", "STRING", "JSON_QUERY(j, '$.a' WITH CONDITIONAL ARRAY WRAPPER)"),
        ("qwild", "STRING", "JSON_QUERY(j, 'lax $.d.e[*]')"),
        ("qkey", "STRING", "JSON_QUERY(j, '$[''d'']')"),
        ("va", "STRING", "JSON_VALUE(j, '$.a')"),
        ("vai", "INT", "JSON_VALUE(j, '$.a' RETURNING INT)"),
        ("vf", "DOUBLE", "JSON_VALUE(j, '$.f' RETURNING DOUBLE DEFAULT -1.0 ON EMPTY)"),
        ("vb", "STRING", "JSON_VALUE(j, '$.b' DEFAULT 'none' ON EMPTY DEFAULT 'bad' ON ERROR)"),
        ("vd", "STRING", "JSON_VALUE(j, '$.d' DEFAULT 'bad' ON ERROR)"),
        ("vs", "STRING", "JSON_VALUE(j, 'strict $.g' DEFAULT 'bad' ON ERROR)"),
        ("q", "STRING", "JSON_QUERY(j, '$.d')"),
        ("qe", "STRING", "JSON_QUERY(j, '$.zz' EMPTY OBJECT ON EMPTY)"),
        ("qw", "STRING", "JSON_QUERY(j, '$.d.e' WITH CONDITIONAL ARRAY WRAPPER)"),
        ("qu", "STRING", "JSON_QUERY(j, '$.d' WITH UNCONDITIONAL ARRAY WRAPPER)"),
        ("obj", "STRING", "JSON_OBJECT('s' VALUE s, 'n' VALUE n, 'in' VALUE JSON_ARRAY(x, t NULL ON NULL))"),
        ("oba", "STRING", "JSON_OBJECT(KEY 'x' VALUE x ABSENT ON NULL)"),
        ("arr", "STRING", "JSON_ARRAY(n, s, TRUE)"),
        ("js", "STRING", "JSON_STRING(s)"),
    ]
    got = pipeline(tmp_path, columns)

    def kind(document: str | None) -> str | None:
        found, value = _lookup(document)
        if found == "null":
            return None
        if found == "error":
            return "invalid"
        return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else "scalar"

    def exists(document: str | None, *keys: object, on_error: bool | None = False) -> bool | None:
        found, _ = _lookup(document, *keys)
        return None if found == "null" else on_error if found == "error" else found == "value"

    def value(
        document: str | None,
        keys: tuple[object, ...],
        cast: object = str,
        empty: object = None,
        error: object = None,
        strict: bool = False,
    ) -> object:
        found, v = _lookup(document, *keys)
        if found == "null":
            return None
        if found == "error" or (found == "missing" and strict) or isinstance(v, dict | list):
            return error
        if found == "missing":
            return empty
        if v is None:  # JSON null is a scalar: NULL, not the ON EMPTY branch
            return None
        text = ("true" if v else "false") if isinstance(v, bool) else str(v)
        try:
            return cast(text)  # type: ignore[operator]
        except ValueError:
            return error

    def compact(v: object) -> str:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)

    def query(document: str | None, keys: tuple[object, ...], wrap: str = "", empty: str | None = None) -> object:
        found, v = _lookup(document, *keys)
        if found in ("null", "error"):
            return None
        if found == "missing":
            return empty
        if wrap == "unconditional" or (wrap == "conditional" and not isinstance(v, list)):
            return compact([v])
        return compact(v) if isinstance(v, dict | list) else None

    def obj(row: dict[str, object]) -> str:
        return compact({"s": row["s"], "n": row["n"], "in": [v for v in (row["x"], row["t"])]})

    rows = sorted(ROWS, key=lambda r: r["id"])
    expected = {
        "isj": [kind(r["j"]) not in (None, "invalid") for r in rows],
        "isn": [kind(r["j"]) in (None, "invalid") for r in rows],
        "iso": [kind(r["j"]) == "object" for r in rows],
        "isa": [kind(r["j"]) == "array" for r in rows],
        "iss": [kind(r["j"]) == "scalar" for r in rows],
        "ex": [exists(r["j"], "a") for r in rows],
        "exd": [exists(r["j"], "d", "e", 1) for r in rows],
        "exe": [exists(r["j"], "a", on_error=True) for r in rows],
        "exn": [exists(r["j"], "c") for r in rows],
        "vn": [value(r["j"], ("c",), empty="empty") for r in rows],
        "qn": [query(r["j"], ("c",), "unconditional") for r in rows],
        "qa": [query(r["j"], ("a",), "conditional") for r in rows],
        "qwild": [query(r["j"], ("d", "e")) for r in rows],  # the matches of e[*] as an array: e itself
        "qkey": [query(r["j"], ("d",)) for r in rows],
        "va": [value(r["j"], ("a",)) for r in rows],
        "vai": [value(r["j"], ("a",), int) for r in rows],
        "vf": [value(r["j"], ("f",), float, empty=-1.0) for r in rows],
        "vb": [value(r["j"], ("b",), empty="none", error="bad") for r in rows],
        "vd": [value(r["j"], ("d",), error="bad") for r in rows],
        "vs": [value(r["j"], ("g",), error="bad", strict=True) for r in rows],
        "q": [query(r["j"], ("d",)) for r in rows],
        "qe": [query(r["j"], ("zz",), empty="{}") for r in rows],
        "qw": [query(r["j"], ("d", "e"), "conditional") for r in rows],
        "qu": [query(r["j"], ("d",), "unconditional") for r in rows],
        "obj": [obj(r) for r in rows],
        "oba": [compact({} if r["x"] is None else {"x": r["x"]}) for r in rows],
        "arr": [compact([v for v in (r["n"], r["s"]) if v is not None] + [True]) for r in rows],
        "js": [None if r["s"] is None else compact(r["s"]) for r in rows],
    }
    for name, values in expected.items():
        assert got.get_column(name).to_list() == values, name
