"""Flink's SQL/JSON call syntax, which sqlglot's Spark parser does not read: the RETURNING, ON EMPTY, ON ERROR,
WRAPPER and ON NULL clauses of JSON_VALUE, JSON_QUERY, JSON_EXISTS and JSON_ARRAY. The dialect registers these
parsers (sql/dialect.py); json_functions compiles the nodes they build."""

from __future__ import annotations

from typing import Any

from sqlglot import exp
from sqlglot.parser import Parser


class JsonValueCall(exp.Expression, exp.Func):
    """JSON_VALUE(json, path [RETURNING type] [behaviour ON EMPTY] [behaviour ON ERROR]); a behaviour is a Var
    (NULL or ERROR) or, for DEFAULT expr, the expression itself."""

    arg_types = {"this": True, "path": True, "returning": False, "on_empty": False, "on_error": False}
    _sql_names = ["JSON_VALUE"]


class JsonQueryCall(exp.Expression, exp.Func):
    """JSON_QUERY(json, path [RETURNING type] [wrapper] [.. ON EMPTY] [.. ON ERROR]); wrapper is WITHOUT,
    CONDITIONAL or UNCONDITIONAL; behaviours NULL, EMPTY ARRAY, EMPTY OBJECT or ERROR."""

    arg_types = {"this": True, "path": True, "returning": False, "wrapper": False, "on_empty": False, "on_error": False}
    _sql_names = ["JSON_QUERY"]


class JsonExistsCall(exp.Expression, exp.Func):
    """JSON_EXISTS(json, path [{TRUE | FALSE | UNKNOWN | ERROR} ON ERROR])."""

    arg_types = {"this": True, "path": True, "on_error": False}
    _sql_names = ["JSON_EXISTS"]


class JsonArrayCall(exp.Expression, exp.Func):
    """JSON_ARRAY([value, ...] [{NULL | ABSENT} ON NULL]); Flink's default is ABSENT ON NULL."""

    arg_types = {"expressions": False, "null_handling": False}
    _sql_names = ["JSON_ARRAY"]


_BEHAVIOURS = ("NULL", "ERROR", "TRUE", "FALSE", "UNKNOWN")


def _behaviour(self: Any, allow_default: bool) -> tuple[exp.Expr | None, str | None]:
    """One `<behaviour> ON EMPTY|ERROR` clause, or (None, None) when the next tokens are not one."""
    index = self._index
    behaviour: exp.Expr | None = None
    if allow_default and self._match_text_seq("DEFAULT"):
        behaviour = self._parse_bitwise()
    elif self._match_text_seq("EMPTY", "ARRAY"):
        behaviour = exp.var("EMPTY ARRAY")
    elif self._match_text_seq("EMPTY", "OBJECT"):
        behaviour = exp.var("EMPTY OBJECT")
    elif self._curr is not None and self._curr.text.upper() in _BEHAVIOURS:
        behaviour = exp.var(self._curr.text.upper())
        self._advance()
    if behaviour is not None and self._match_text_seq("ON"):
        if self._match_text_seq("EMPTY"):
            return behaviour, "on_empty"
        if self._match_text_seq("ERROR"):
            return behaviour, "on_error"
    self._retreat(index)
    return None, None


def _head(self: Any) -> dict[str, Any]:
    this = self._parse_disjunction()
    self._match_text_seq(",")
    path = self._parse_bitwise()
    args: dict[str, Any] = {"this": this, "path": path}
    if self._match_text_seq("RETURNING"):
        args["returning"] = self._parse_types()
    return args


def _clauses(self: Any, args: dict[str, Any], allow_default: bool) -> None:
    while True:
        behaviour, key = _behaviour(self, allow_default)
        if key is None:
            return
        args[key] = behaviour


def parse_json_value(self: Any) -> exp.Expr:
    args = _head(self)
    _clauses(self, args, allow_default=True)
    return self.expression(JsonValueCall(**args))


def parse_json_query(self: Any) -> exp.Expr:
    args = _head(self)
    if self._match_text_seq("WITHOUT"):
        self._match_text_seq("ARRAY")
        self._match_text_seq("WRAPPER")
        args["wrapper"] = exp.var("WITHOUT")
    elif self._match_text_seq("WITH"):
        kind = "UNCONDITIONAL"
        if self._match_text_seq("CONDITIONAL"):
            kind = "CONDITIONAL"
        else:
            self._match_text_seq("UNCONDITIONAL")
        self._match_text_seq("ARRAY")
        self._match_text_seq("WRAPPER")
        args["wrapper"] = exp.var(kind)
    _clauses(self, args, allow_default=False)
    return self.expression(JsonQueryCall(**args))


def parse_json_exists(self: Any) -> exp.Expr:
    this = self._parse_disjunction()
    self._match_text_seq(",")
    args: dict[str, Any] = {"this": this, "path": self._parse_bitwise()}
    _clauses(self, args, allow_default=False)
    return self.expression(JsonExistsCall(**args))


def parse_json_array(self: Any) -> exp.Expr:
    values: list[exp.Expr] = []
    null_handling = None
    while self._curr is not None and self._curr.text != ")":
        if self._match_text_seq("NULL", "ON", "NULL"):
            null_handling = "NULL ON NULL"
            break
        if self._match_text_seq("ABSENT", "ON", "NULL"):
            null_handling = "ABSENT ON NULL"
            break
        value = self._parse_disjunction()
        if value is None:
            self.raise_error("expected a value in JSON_ARRAY")
            break
        values.append(value)
        if not self._match_text_seq(",") and not (self._curr and self._curr.text.upper() in ("NULL", "ABSENT")):
            break
    return self.expression(JsonArrayCall(expressions=values, null_handling=null_handling))


FUNCTION_PARSERS = {
    "JSON_VALUE": parse_json_value,
    "JSON_QUERY": parse_json_query,
    "JSON_EXISTS": parse_json_exists,
    "JSON_ARRAY": parse_json_array,
}

#: calls the Spark parser would turn into nodes with Spark's argument order or date patterns
PLAIN_CALLS = (
    "DATE_FORMAT",
    "REGEXP_EXTRACT",
    "TO_DATE",
    "UNIX_TIMESTAMP",
    "FROM_UNIXTIME",
    "DAYOFWEEK",
    "DAYOFYEAR",
    "DAYOFMONTH",
    "ARRAY_SORT",
)

#: Flink's LTRIM(s [, chars]) / RTRIM(s [, chars]): the string first (Spark's two-argument forms take it last)
FUNCTION_BUILDERS = {name: Parser.FUNCTIONS[name] for name in ("LTRIM", "RTRIM")}
