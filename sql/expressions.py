"""Translation of sqlglot expressions into Polars expressions, with SQL's NULL semantics.

Polars already evaluates AND/OR with Kleene logic and propagates NULL through comparisons and arithmetic,
which is SQL's three-valued logic. What differs is patched here: IN with NULLs, integer division and MOD
(Polars floors, SQL truncates), division by zero (NULL), ROUND (half away from zero) and CONCAT.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql import functions, nested, types
from sql.errors import UnsupportedError, error_at
from sql.udf import ScalarUdf
from sql.values import parse_text, parse_timestamp

if TYPE_CHECKING:  # the binder owns Scope and imports this compiler
    from sql.planner.binder import Scope

PROCTIME_COLUMN = "__proctime"

AGGREGATES = (exp.AggFunc,)


_INTERVAL_UNITS = {
    "MILLISECOND": "milliseconds",
    "SECOND": "seconds",
    "MINUTE": "minutes",
    "HOUR": "hours",
    "DAY": "days",
    "WEEK": "weeks",
}

_EXTRACT = {
    "YEAR": lambda e: e.dt.year(),
    "QUARTER": lambda e: e.dt.quarter(),
    "MONTH": lambda e: e.dt.month(),
    "WEEK": lambda e: e.dt.week(),
    "DAY": lambda e: e.dt.day(),
    "DAYOFMONTH": lambda e: e.dt.day(),
    "DOY": lambda e: e.dt.ordinal_day(),
    "DAYOFYEAR": lambda e: e.dt.ordinal_day(),
    # Flink numbers days of the week from Sunday = 1; Polars from Monday = 1.
    "DOW": lambda e: e.dt.weekday() % 7 + 1,
    "DAYOFWEEK": lambda e: e.dt.weekday() % 7 + 1,
    "HOUR": lambda e: e.dt.hour(),
    "MINUTE": lambda e: e.dt.minute(),
    "SECOND": lambda e: e.dt.second(),
    "MILLISECOND": lambda e: e.dt.millisecond(),
    "EPOCH": lambda e: e.dt.epoch("s"),
}


_MAX_INTERVAL = dt.timedelta(days=3_652_425)  # 10000 years: more would overflow a timestamp's arithmetic


def _literal_value(node: exp.Expr) -> object:
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        return float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(node, exp.Neg):
        value = _literal_value(node.this)
        return -value if isinstance(value, int | float) else None
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return node.this
    raise error_at(node, f"expected a literal, got {node.sql()}")


def like_to_regex(pattern: str, escape: str | None = None) -> str:
    out = ["(?s)^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if escape and ch == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


class ExprCompiler:
    """Compiles expressions against one scope. Aggregates are refused: the planner handles them."""

    def __init__(self, scope: Scope, udfs: Mapping[str, ScalarUdf] | None = None) -> None:
        self.scope = scope
        self.udfs = {k.upper(): v for k, v in (udfs or {}).items()}
        self._empty = pl.LazyFrame(schema=dict(scope.schema))

    # -- types ---------------------------------------------------------------------------------
    def dtype(self, expr: pl.Expr, node: exp.Expr | None = None) -> pl.DataType:
        try:
            return self._empty.select(expr.alias("x")).collect_schema()["x"]
        except (pl.exceptions.PolarsError, TypeError, ValueError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise error_at(node, f"type error in {node.sql() if node else 'expression'}: {first_line}") from None

    def typed(self, node: exp.Expr) -> tuple[pl.Expr, pl.DataType]:
        compiled = self.compile(node)
        return compiled, self.dtype(compiled, node)

    # -- dispatch ------------------------------------------------------------------------------
    def compile(self, node: exp.Expr) -> pl.Expr:
        handler = self._HANDLERS.get(type(node))
        if handler is not None:
            return handler(self, node)
        if isinstance(node, AGGREGATES):
            raise error_at(node, f"aggregate {node.sql()} is not allowed here", UnsupportedError)
        builtin = functions.build(self, node)  # Flink's other built-ins (sql/functions)
        if builtin is not None:
            return builtin
        if isinstance(node, exp.Func):
            return self._function(node)
        raise error_at(
            node, f"{type(node).__name__.upper()} expression `{node.sql()}` is not supported", UnsupportedError
        )

    def _column(self, node: exp.Column) -> pl.Expr:
        word = functions.BARE_WORDS.get(node.name.upper()) if not node.table else None
        if word is not None and node.name.lower() not in {k.lower() for k in self.scope.schema}:
            return word(self, node)  # LOCALTIMESTAMP and the like, which sqlglot reads as column names
        return nested.column(self, node)  # a column, or a path into a ROW column (r.a, t.r.a)

    def _literal(self, node: exp.Literal) -> pl.Expr:
        value = _literal_value(node)
        if isinstance(value, float):
            return pl.lit(value, dtype=pl.Float64)
        return pl.lit(value)

    def _interval(self, node: exp.Interval) -> pl.Expr:
        return pl.lit(self.interval(node))

    @staticmethod
    def interval(node: exp.Expr) -> dt.timedelta:
        """The length of an `INTERVAL 'n' UNIT` literal."""
        if not isinstance(node, exp.Interval):
            raise error_at(node, f"expected an INTERVAL, got {node.sql()}")
        unit_node = node.args.get("unit")
        unit = (unit_node.name if unit_node is not None else "SECOND").upper().rstrip("S")
        if unit not in _INTERVAL_UNITS:
            raise error_at(node, f"interval unit {unit} is not supported", UnsupportedError)
        try:
            amount = float(str(_literal_value(node.this)).strip())
            length = dt.timedelta(**{_INTERVAL_UNITS[unit]: amount})
        except ValueError:
            raise error_at(node, f"bad interval literal {node.sql()}") from None
        except OverflowError:
            length = _MAX_INTERVAL * 2
        if abs(length) > _MAX_INTERVAL:
            raise error_at(node, f"interval {node.sql()} is longer than 10000 years")
        return length

    def _coerce_pair(self, node: exp.Binary) -> tuple[pl.Expr, pl.Expr]:
        """Comparisons between a timestamp and a string literal parse the literal, as Flink's implicit cast."""
        left, ltype = self.typed(node.this)
        right, rtype = self.typed(node.expression)
        if types.is_temporal(ltype) and isinstance(rtype, pl.String):
            right = self._constant_timestamp(node.expression, ltype)
        elif types.is_temporal(rtype) and isinstance(ltype, pl.String):
            left = self._constant_timestamp(node.this, rtype)
        elif (isinstance(ltype, pl.String)) != (isinstance(rtype, pl.String)) and not (
            isinstance(ltype, pl.Null) or isinstance(rtype, pl.Null)
        ):
            raise error_at(
                node,
                f"cannot compare {types.sql_name(ltype)} with {types.sql_name(rtype)} in {node.sql()}; "
                "use CAST to make the types match",
            )
        return left, right

    def _constant_timestamp(self, node: exp.Expr, dtype: pl.DataType) -> pl.Expr:
        if not isinstance(node, exp.Literal):
            return parse_timestamp(self.compile(node))
        parsed = pl.select(parse_timestamp(pl.lit(node.this))).item()
        if parsed is None:
            raise error_at(node, f"'{node.this}' is not a timestamp")
        return pl.lit(parsed, dtype=dtype if isinstance(dtype, pl.Datetime) else types.timestamp(6))

    def _compare(self, node: exp.Binary) -> pl.Expr:
        left, right = self._coerce_pair(node)
        ops: dict[type, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
            exp.EQ: lambda a, b: a == b,
            exp.NEQ: lambda a, b: a != b,
            exp.GT: lambda a, b: a > b,
            exp.GTE: lambda a, b: a >= b,
            exp.LT: lambda a, b: a < b,
            exp.LTE: lambda a, b: a <= b,
        }
        return ops[type(node)](left, right)

    def _div(self, node: exp.Div) -> pl.Expr:
        left, ltype = self.typed(node.this)
        right, rtype = self.typed(node.expression)
        if ltype.is_integer() and rtype.is_integer():
            quotient = left // right
            # Polars floors; SQL truncates toward zero.
            needs_bump = ((left % right) != 0) & ((left < 0) != (right < 0))
            result = pl.when(needs_bump).then(quotient + 1).otherwise(quotient)
        else:
            result = left / right
        return pl.when(right == 0).then(None).otherwise(result)

    def _mod(self, node: exp.Mod) -> pl.Expr:
        left, right = self.compile(node.this), self.compile(node.expression)
        floored = left % right
        # SQL's remainder takes the sign of the dividend; Polars' takes the divisor's.
        fix = (floored != 0) & ((floored < 0) != (left < 0))
        return pl.when(right == 0).then(None).when(fix).then(floored - right).otherwise(floored)

    def _arith(self, node: exp.Binary) -> pl.Expr:
        left, ltype = self.typed(node.this)
        right, rtype = self.typed(node.expression)
        # time +/- a number has no unit: Flink asks for an INTERVAL, and Polars' own message names its dtypes
        temporal = (types.is_temporal(ltype) or types.is_temporal(rtype)) and (ltype.is_numeric() or rtype.is_numeric())
        if isinstance(ltype, pl.String) or isinstance(rtype, pl.String) or temporal:
            raise error_at(
                node,
                f"cannot apply {type(node).__name__.lower()} to {types.sql_name(ltype)} and {types.sql_name(rtype)}",
            )
        ops: dict[type, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
            exp.Add: lambda a, b: a + b,
            exp.Sub: lambda a, b: a - b,
            exp.Mul: lambda a, b: a * b,
        }
        return ops[type(node)](left, right)

    def _and(self, node: exp.And) -> pl.Expr:
        return self._boolean(node.this) & self._boolean(node.expression)

    def _or(self, node: exp.Or) -> pl.Expr:
        return self._boolean(node.this) | self._boolean(node.expression)

    def _not(self, node: exp.Not) -> pl.Expr:
        return ~self._boolean(node.this)

    def _boolean(self, node: exp.Expr) -> pl.Expr:
        compiled, dtype = self.typed(node)
        if not isinstance(dtype, pl.Boolean | pl.Null):
            raise error_at(node, f"expected a BOOLEAN condition, got {types.sql_name(dtype)}: {node.sql()}")
        return compiled

    def condition(self, node: exp.Expr) -> pl.Expr:
        return self._boolean(node)

    def _is(self, node: exp.Is) -> pl.Expr:
        target = node.expression
        value = self.compile(node.this)
        if isinstance(target, exp.Null):
            return value.is_null()
        if isinstance(target, exp.Boolean):
            return value.fill_null(not target.this) == target.this
        if isinstance(target, exp.JSON):
            return functions.is_json(self, node)
        raise error_at(node, f"IS {target.sql()} is not supported", UnsupportedError)

    def _in(self, node: exp.In) -> pl.Expr:
        if node.args.get("query") is not None:
            raise error_at(node, "IN (subquery) is not supported", UnsupportedError)
        options = node.expressions
        result: pl.Expr | None = None
        # An OR chain of equalities gives SQL's NULL semantics exactly (x IN (1, NULL) is NULL when x = 2).
        for option in options:
            fake = exp.EQ(this=node.this, expression=option)
            term = self._compare(fake) if not isinstance(option, exp.Null) else pl.lit(None, dtype=pl.Boolean)
            result = term if result is None else (result | term)
        return pl.lit(False) if result is None else result

    def _between(self, node: exp.Between) -> pl.Expr:
        low = exp.GTE(this=node.this, expression=node.args["low"])
        high = exp.LTE(this=node.this, expression=node.args["high"])
        if node.args.get("symmetric"):  # either order of the bounds
            swapped = exp.Between(this=node.this, low=node.args["high"], high=node.args["low"])
            return (self._compare(low) & self._compare(high)) | self._between(swapped)
        return self._compare(low) & self._compare(high)

    def _like(self, node: exp.Like) -> pl.Expr:
        pattern = node.expression
        escape = None
        if isinstance(pattern, exp.Escape):
            escape = str(_literal_value(pattern.expression))
            pattern = pattern.this
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            raise error_at(node, "LIKE needs a string literal pattern", UnsupportedError)
        value, dtype = self.typed(node.this)
        if not isinstance(dtype, pl.String | pl.Null):
            raise error_at(node, f"LIKE needs a STRING, got {types.sql_name(dtype)}")
        result = value.str.contains(like_to_regex(pattern.this, escape))
        return ~result if node.args.get("negate") else result

    def _escape(self, node: exp.Escape) -> pl.Expr:
        if isinstance(node.this, exp.Like):
            like = node.this.copy()
            like.set("expression", exp.Escape(this=like.expression, expression=node.expression))
            return self._like(like)
        raise error_at(node, "ESCAPE is only supported with LIKE", UnsupportedError)

    def _case(self, node: exp.Case) -> pl.Expr:
        subject = node.this
        chain: pl.Expr | None = None
        for branch in node.args.get("ifs") or []:
            cond_node = branch.this
            cond = self._compare(exp.EQ(this=subject, expression=cond_node)) if subject else self._boolean(cond_node)
            then = self.compile(branch.args["true"])
            chain = pl.when(cond).then(then) if chain is None else chain.when(cond).then(then)
        default = node.args.get("default")
        otherwise = self.compile(default) if default is not None else pl.lit(None)
        if chain is None:
            return otherwise
        return chain.otherwise(otherwise)

    def _if(self, node: exp.If) -> pl.Expr:
        false = node.args.get("false")
        return (
            pl.when(self._boolean(node.this))
            .then(self.compile(node.args["true"]))
            .otherwise(self.compile(false) if false is not None else pl.lit(None))
        )

    def _cast(self, node: exp.Cast) -> pl.Expr:
        target = types.to_polars(node.args["to"])
        if isinstance(node.this, exp.Literal) and node.this.is_string and isinstance(target, pl.Datetime | pl.Date):
            value = self._constant_timestamp(
                node.this, target if isinstance(target, pl.Datetime) else types.timestamp(6)
            )
            return value if isinstance(target, pl.Datetime) else value.dt.date()
        return self.cast(self.compile(node.this), target, node)

    def cast(
        self, value: pl.Expr, target: pl.DataType, node: exp.Expr | None = None, source: pl.DataType | None = None
    ) -> pl.Expr:
        """SQL CAST; an unconvertible value becomes NULL (Flink's TRY_CAST), so bad data never stops a pipeline."""
        source = self.dtype(value, node) if source is None else source
        if source == target:
            return value
        if nested.is_nested(source) or nested.is_nested(target):
            return nested.cast(value, source, target, node, lambda v, s, t: self.cast(v, t, node, s))
        if isinstance(source, pl.String):
            return parse_text(value, target)
        if isinstance(target, pl.String):
            if isinstance(source, pl.Datetime):
                return value.dt.strftime("%Y-%m-%d %H:%M:%S%.3f")
            if isinstance(source, pl.Boolean):
                return pl.when(value).then(pl.lit("TRUE")).when(~value).then(pl.lit("FALSE")).otherwise(None)
            return value.cast(pl.String)
        if isinstance(target, pl.Datetime) and isinstance(source, pl.Datetime):
            return (
                value.dt.convert_time_zone("UTC").cast(target)
                if source.time_zone
                else value.dt.replace_time_zone("UTC").cast(target)
            )
        if isinstance(target, pl.Datetime) and isinstance(source, pl.Date):
            return value.cast(pl.Datetime(target.time_unit)).dt.replace_time_zone("UTC")
        return value.cast(target, strict=False)

    def _paren(self, node: exp.Paren) -> pl.Expr:
        return self.compile(node.this)

    def _neg(self, node: exp.Neg) -> pl.Expr:
        return -self.compile(node.this)

    def _null(self, _node: exp.Null) -> pl.Expr:
        return pl.lit(None)

    def _bool_literal(self, node: exp.Boolean) -> pl.Expr:
        return pl.lit(bool(node.this))

    def _coalesce(self, node: exp.Coalesce) -> pl.Expr:
        return pl.coalesce([self.compile(node.this), *[self.compile(e) for e in node.expressions]])

    def _nullif(self, node: exp.Nullif) -> pl.Expr:
        value = self.compile(node.this)
        return pl.when(value == self.compile(node.expression)).then(None).otherwise(value)

    def _as_string(self, node: exp.Expr) -> pl.Expr:
        value, dtype = self.typed(node)
        return value if isinstance(dtype, pl.String) else self.cast(value, pl.String(), node)

    def _concat(self, node: exp.Concat) -> pl.Expr:
        return pl.concat_str([self._as_string(e) for e in node.expressions], ignore_nulls=False)

    def _dpipe(self, node: exp.DPipe) -> pl.Expr:
        return pl.concat_str([self._as_string(node.this), self._as_string(node.expression)], ignore_nulls=False)

    def _string_arg(self, node: exp.Expr) -> pl.Expr:
        value, dtype = self.typed(node)
        if not isinstance(dtype, pl.String | pl.Null):
            raise error_at(node, f"expected a STRING, got {types.sql_name(dtype)}: {node.sql()}")
        return value

    def _substring(self, node: exp.Substring) -> pl.Expr:
        value = self._string_arg(node.this)
        start = self.compile(node.args["start"]) if node.args.get("start") else pl.lit(1)
        first = pl.max_horizontal(start, pl.lit(1))
        length_node = node.args.get("length")
        if length_node is None:
            return value.str.slice(first - 1)
        end = start + self.compile(length_node)
        return value.str.slice(first - 1, pl.max_horizontal(end - first, pl.lit(0)))

    def _trim(self, node: exp.Trim) -> pl.Expr:
        value = self._string_arg(node.this)
        chars = node.expression
        # SQL's TRIM removes spaces only, not every whitespace character.
        characters = str(_literal_value(chars)) if chars is not None else " "
        position = (node.args.get("position") or "BOTH").upper()
        if position == "LEADING":
            return value.str.strip_chars_start(characters)
        if position == "TRAILING":
            return value.str.strip_chars_end(characters)
        return value.str.strip_chars(characters)

    def _round(self, node: exp.Round) -> pl.Expr:
        value, dtype = self.typed(node.this)
        decimals_node = node.args.get("decimals")
        decimals = int(_literal_value(decimals_node)) if decimals_node is not None else 0  # type: ignore[arg-type]
        if dtype.is_integer():
            if decimals >= 0:
                return value
            factor = 10**-decimals
            return (value.cast(pl.Float64) / factor).round(0, mode="half_away_from_zero").cast(dtype) * factor
        return value.round(max(decimals, 0), mode="half_away_from_zero")

    def _extract(self, node: exp.Extract) -> pl.Expr:
        unit = node.this.name.upper()
        if unit not in _EXTRACT:
            raise error_at(node, f"EXTRACT({unit} ...) is not supported", UnsupportedError)
        return _EXTRACT[unit](self._temporal(node.expression)).cast(pl.Int64)

    def _temporal(self, node: exp.Expr) -> pl.Expr:
        value, dtype = self.typed(node)
        if isinstance(dtype, pl.String):
            return parse_timestamp(value)
        if not types.is_temporal(dtype):
            raise error_at(node, f"expected a TIMESTAMP or DATE, got {types.sql_name(dtype)}: {node.sql()}")
        return value

    def _regexp_extract(self, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
        if len(args) not in (2, 3) or not (isinstance(args[1], exp.Literal) and args[1].is_string):
            raise error_at(node, "REGEXP_EXTRACT(string, 'literal pattern' [, group]) expected")
        group = int(_literal_value(args[2])) if len(args) == 3 else 0  # type: ignore[arg-type]
        return self._string_arg(args[0]).str.extract(args[1].this, group)

    def _function(self, node: exp.Func) -> pl.Expr:
        name = node.name.upper() if isinstance(node, exp.Anonymous) else node.sql_name().upper()
        args = (
            list(node.expressions)
            if isinstance(node, exp.Anonymous)
            else [v for v in node.args.values() if isinstance(v, exp.Expr)]
        )
        if name in self.udfs:
            udf = self.udfs[name]
            compiled = [self.compile(a) for a in args]
            return udf.expression(compiled)
        collection = nested.function(self, node, name)  # ROW, MAP, CARDINALITY, ELEMENT, MAP_KEYS, ...
        if collection is not None:
            return collection
        builder = _NAMED.get(name)
        if builder is None:
            raise error_at(node, f"function {name} is not supported", UnsupportedError)
        return builder(self, node, args)

    _HANDLERS: dict[type, Callable[[ExprCompiler, exp.Expr], pl.Expr]] = {}


def _split_index(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    if len(args) != 3 or not (isinstance(args[1], exp.Literal) and args[1].is_string):
        raise error_at(node, "SPLIT_INDEX(string, 'separator', index) expected")
    index = c.compile(args[2])
    parts = c._string_arg(args[0]).str.split(args[1].this)
    return pl.when(index < 0).then(None).otherwise(parts.list.get(index, null_on_oob=True))


def _simple(method: Callable[[pl.Expr], pl.Expr], arity: int = 1) -> Callable[..., pl.Expr]:
    def build(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
        if len(args) != arity:
            raise error_at(
                node, f"{node.sql_name() if hasattr(node, 'sql_name') else node.name} takes {arity} argument(s)"
            )
        return method(*[c.compile(a) for a in args])

    return build


def _string_fn(method: Callable[[pl.Expr], pl.Expr]) -> Callable[..., pl.Expr]:
    return lambda c, node, args: method(c._string_arg(args[0]))


def _proctime(c: ExprCompiler, node: exp.Expr, args: list[exp.Expr]) -> pl.Expr:
    if PROCTIME_COLUMN not in c.scope.schema:
        raise error_at(node, "PROCTIME() is only allowed as a computed column in CREATE TABLE", UnsupportedError)
    return pl.col(PROCTIME_COLUMN)


_NAMED: dict[str, Callable[[ExprCompiler, exp.Expr, list[exp.Expr]], pl.Expr]] = {
    "DATE_FORMAT": functions.temporal.date_format,
    "TO_TIMESTAMP_LTZ": functions.temporal.to_timestamp_ltz,
    "TO_TIMESTAMP": functions.temporal.to_timestamp,
    "SPLIT_INDEX": _split_index,
    "REGEXP_EXTRACT": lambda c, node, args: c._regexp_extract(node, args),
    "UPPER": _string_fn(lambda e: e.str.to_uppercase()),
    "LOWER": _string_fn(lambda e: e.str.to_lowercase()),
    "CHAR_LENGTH": _string_fn(lambda e: e.str.len_chars().cast(pl.Int32)),
    "CHARACTER_LENGTH": _string_fn(lambda e: e.str.len_chars().cast(pl.Int32)),
    "LENGTH": _string_fn(lambda e: e.str.len_chars().cast(pl.Int32)),
    "ABS": _simple(lambda e: e.abs()),
    "FLOOR": _simple(lambda e: e.floor()),
    "CEIL": _simple(lambda e: e.ceil()),
    "CEILING": _simple(lambda e: e.ceil()),
    "PROCTIME": _proctime,
}
for _unit in ("YEAR", "QUARTER", "MONTH", "WEEK", "DAYOFMONTH", "DAYOFYEAR", "DAYOFWEEK", "HOUR", "MINUTE", "SECOND"):
    _NAMED[_unit] = lambda c, node, args, _u=_unit: _EXTRACT[_u](c._temporal(args[0])).cast(pl.Int64)
_NAMED["DAY"] = _NAMED["DAYOFMONTH"]

ExprCompiler._HANDLERS = {
    exp.Column: ExprCompiler._column,
    exp.Dot: nested.dot,
    exp.Bracket: nested.bracket,
    exp.Array: nested.array_value,
    exp.Literal: ExprCompiler._literal,
    exp.Interval: ExprCompiler._interval,
    exp.Paren: ExprCompiler._paren,
    exp.Neg: ExprCompiler._neg,
    exp.Null: ExprCompiler._null,
    exp.Boolean: ExprCompiler._bool_literal,
    exp.EQ: ExprCompiler._compare,
    exp.NEQ: ExprCompiler._compare,
    exp.GT: ExprCompiler._compare,
    exp.GTE: ExprCompiler._compare,
    exp.LT: ExprCompiler._compare,
    exp.LTE: ExprCompiler._compare,
    exp.Add: ExprCompiler._arith,
    exp.Sub: ExprCompiler._arith,
    exp.Mul: ExprCompiler._arith,
    exp.Div: ExprCompiler._div,
    exp.Mod: ExprCompiler._mod,
    exp.And: ExprCompiler._and,
    exp.Or: ExprCompiler._or,
    exp.Not: ExprCompiler._not,
    exp.Is: ExprCompiler._is,
    exp.In: ExprCompiler._in,
    exp.Between: ExprCompiler._between,
    exp.Like: ExprCompiler._like,
    exp.Escape: ExprCompiler._escape,
    exp.Case: ExprCompiler._case,
    exp.If: ExprCompiler._if,
    exp.Cast: ExprCompiler._cast,
    exp.TryCast: ExprCompiler._cast,
    exp.Coalesce: ExprCompiler._coalesce,
    exp.Nullif: ExprCompiler._nullif,
    exp.Concat: ExprCompiler._concat,
    exp.DPipe: ExprCompiler._dpipe,
    exp.Substring: ExprCompiler._substring,
    exp.Trim: ExprCompiler._trim,
    exp.Round: ExprCompiler._round,
    exp.Extract: ExprCompiler._extract,
    exp.Upper: lambda c, n: c._string_arg(n.this).str.to_uppercase(),
    exp.Lower: lambda c, n: c._string_arg(n.this).str.to_lowercase(),
    exp.Length: lambda c, n: c._string_arg(n.this).str.len_chars().cast(pl.Int32),
    exp.Abs: lambda c, n: c.compile(n.this).abs(),
    exp.Floor: lambda c, n: functions.floor_ceil(c, n) if n.args.get("to") else c.compile(n.this).floor(),
    exp.Ceil: lambda c, n: functions.floor_ceil(c, n) if n.args.get("to") else c.compile(n.this).ceil(),
    exp.Hour: lambda c, n: _EXTRACT["HOUR"](c._temporal(n.this)).cast(pl.Int64),
    exp.Minute: lambda c, n: _EXTRACT["MINUTE"](c._temporal(n.this)).cast(pl.Int64),
    exp.Second: lambda c, n: _EXTRACT["SECOND"](c._temporal(n.this)).cast(pl.Int64),
    exp.Year: lambda c, n: _EXTRACT["YEAR"](c._temporal(n.this)).cast(pl.Int64),
    exp.Month: lambda c, n: _EXTRACT["MONTH"](c._temporal(n.this)).cast(pl.Int64),
    exp.Day: lambda c, n: _EXTRACT["DAY"](c._temporal(n.this)).cast(pl.Int64),
}
