"""Flink's arithmetic functions as Polars expressions.

Results follow Java's `Math` as Flink does: SQRT of a negative number is NaN, LN(0) is -Infinity. Where Flink
would fail the job (LOG with a base <= 1 or a non-positive argument), the result is NULL instead: a bad value
never stops a pipeline. RAND, RAND_INTEGER (and UUID, among the string functions) are refused: a replayed epoch
would draw different values, and results must be the same however often an epoch is run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql.functions.common import Builder, arguments, double, integer, literal_int, numeric, refuse, string

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


def _unary(method: str) -> Builder:
    return lambda c, node: getattr(double(c, node.this), method)()


def _power(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    return double(c, node.this).pow(double(c, node.expression))


def _log(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """LOG10(x) and LOG2(x) arrive as Log(10, x) and Log(2, x); LOG(b, x) is NULL unless b > 1 and x > 0."""
    base_node, value = node.this, double(c, node.expression)
    if isinstance(base_node, exp.Literal) and base_node.this in ("10", "2"):
        return value.log(float(base_node.this))
    base = double(c, base_node)
    return pl.when((base > 1) & (value > 0)).then(value.log() / base.log()).otherwise(None)


def _atan2(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    return pl.arctan2(double(c, node.this), double(c, node.expression))


def _sign(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    value, dtype = numeric(c, node.this)
    return value.sign().cast(dtype)


def _truncate(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """TRUNCATE(x [, d]): toward zero at d decimals (d < 0 zeroes digits left of the point); the type of x."""
    value, dtype = numeric(c, node.this)
    digits_node = node.args.get("decimals")
    digits = literal_int(digits_node, "TRUNCATE's digits") if digits_node is not None else 0
    factor = 10.0**digits
    if dtype.is_integer():
        if digits >= 0:
            return value
        step = 10 ** (-digits)
        return pl.when(value < 0).then(-((-value) // step) * step).otherwise(value // step * step).cast(dtype)
    scaled = value.cast(pl.Float64) * factor
    # 0.29 * 100 is 28.999999999999996 in binary floating point: drop that noise before cutting the fraction
    cleaned = scaled.round(6)
    cut = cleaned.sign() * cleaned.abs().floor()
    return (cut / factor).cast(dtype)


def _bin(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """BIN(n): binary digits without leading zeros; a negative n as its 64-bit two's complement (Java's)."""
    (arg,) = arguments(node, 1, name="BIN")
    bits = integer(c, arg).reinterpret(signed=False)
    # Polars has no shift operators: bit k is (bits // 2**k) % 2
    digits = pl.concat_str([((bits // 2**shift) % 2).cast(pl.String) for shift in range(63, -1, -1)])
    stripped = digits.str.strip_chars_start("0")
    return pl.when(bits.is_null()).then(None).when(stripped == "").then(pl.lit("0")).otherwise(stripped)


_NIBBLES = {i: "0123456789ABCDEF"[i] for i in range(16)}


def _hex(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """HEX(n) as upper-case hex digits (two's complement for negatives); HEX(s) as the hex of its UTF-8 bytes."""
    value, dtype = c.typed(node.this)
    if isinstance(dtype, pl.String):
        return value.str.encode("hex").str.to_uppercase()
    bits = integer(c, node.this).reinterpret(signed=False)
    nibbles = [
        ((bits // 2**shift) % 16).cast(pl.Int64).replace_strict(_NIBBLES, return_dtype=pl.String)
        for shift in range(60, -1, -4)
    ]
    stripped = pl.concat_str(nibbles).str.strip_chars_start("0")
    return pl.when(bits.is_null()).then(None).when(stripped == "").then(pl.lit("0")).otherwise(stripped)


def _unhex(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    """UNHEX(s): BINARY; an odd length gets a leading zero nibble (Flink); NULL for non-hex characters."""
    text = string(c, node.this)
    even = pl.when(text.str.len_bytes() % 2 == 1).then(pl.concat_str([pl.lit("0"), text])).otherwise(text)
    return pl.when(text.str.contains("^[0-9A-Fa-f]*$")).then(even.str.decode("hex", strict=False)).otherwise(None)


def _e(_c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    arguments(node, 0, name="E")
    return pl.lit(math.e, pl.Float64)


_RANDOM = (
    "a random value differs when an epoch is replayed after a failure, which would break exactly-once results; "
    "derive pseudo-random values from the row, e.g. MOD(HASH-like arithmetic on a key, n)"
)

BY_NODE: dict[type, Builder] = {
    exp.Pow: _power,
    exp.Sqrt: _unary("sqrt"),
    exp.Exp: _unary("exp"),
    exp.Ln: lambda c, n: double(c, n.this).log(),
    exp.Log: _log,
    exp.Sin: _unary("sin"),
    exp.Cos: _unary("cos"),
    exp.Tan: _unary("tan"),
    exp.Cot: _unary("cot"),
    exp.Asin: _unary("arcsin"),
    exp.Acos: _unary("arccos"),
    exp.Atan: _unary("arctan"),
    exp.Atan2: _atan2,
    exp.Sinh: _unary("sinh"),
    exp.Cosh: _unary("cosh"),
    exp.Tanh: _unary("tanh"),
    exp.Degrees: _unary("degrees"),
    exp.Radians: _unary("radians"),
    exp.Sign: _sign,
    exp.Trunc: _truncate,
    exp.Pi: lambda c, n: pl.lit(math.pi, pl.Float64),
    exp.Hex: _hex,
    exp.Unhex: _unhex,
    exp.Rand: refuse(_RANDOM),
}

BY_NAME: dict[str, Builder] = {
    "E": _e,
    "BIN": _bin,
    "RAND_INTEGER": refuse(_RANDOM),
}
