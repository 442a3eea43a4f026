"""MD5, SHA1, SHA256 and SHA2(s, 256): hex digests of a string's UTF-8 bytes.

Polars has no cryptographic digest; DuckDB (a dependency of the engine) has them as vectorised kernels, so a
batch of strings goes to DuckDB once through Arrow, never one Python call per row. SHA-224/384/512 have no such
kernel here and are refused (the `polars-hash` plugin would bring them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from sql.errors import UnsupportedError, error_at
from sql.functions.common import Builder, arguments, duckdb_batch, literal_int, refuse, string

if TYPE_CHECKING:
    from sql.expressions import ExprCompiler


def _digest(function: str) -> Callable[[pl.Series], pl.Series]:
    def run(values: pl.Series) -> pl.Series:
        return duckdb_batch(values, f"{function}(v) AS d").get_column("d").cast(pl.String).alias(values.name)

    return run


def _hash(function: str) -> Builder:
    def build(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
        value = string(c, node.this if not isinstance(node, exp.Anonymous) else arguments(node, 1)[0])
        return value.map_batches(_digest(function), return_dtype=pl.String, is_elementwise=True)

    return build


def _sha2(c: ExprCompiler, node: exp.Expr) -> pl.Expr:
    bits = literal_int(node.args.get("length"), "SHA2's bit length")
    if bits != 256:
        raise error_at(
            node, f"SHA2(s, {bits}) is not supported: only SHA-256 has a vectorised kernel", UnsupportedError
        )
    return _hash("sha256")(c, node)


_NO_KERNEL = "no vectorised kernel in Polars or DuckDB; use SHA256 or a Python UDF"

BY_NODE: dict[type, Builder] = {exp.MD5: _hash("md5"), exp.SHA: _hash("sha1"), exp.SHA2: _sha2}
BY_NAME: dict[str, Builder] = {
    "SHA256": _hash("sha256"),
    "SHA224": refuse(_NO_KERNEL),
    "SHA384": refuse(_NO_KERNEL),
    "SHA512": refuse(_NO_KERNEL),
}
