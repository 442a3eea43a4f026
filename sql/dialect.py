"""The timelapse SQL dialect: Flink SQL's surface on top of sqlglot's Spark dialect.

Spark is the closest built-in relative (backtick identifiers, STRING, `WITH (...)` options). This module adds
what Flink has and Spark lacks: `WATERMARK FOR`, window table-valued functions with `TABLE t`, `DESCRIPTOR(..)`
and named arguments, and `SESSION(...)` as a function name.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.generators.spark import SparkGenerator
from sqlglot.parsers.spark import SparkParser
from sqlglot.tokens import Token, TokenType

WINDOW_FUNCTIONS = ("TUMBLE", "HOP", "CUMULATE", "SESSION")

# sqlglot logs warnings on stderr for SQL it half-understands; timelapse turns those cases into errors with a
# position instead, and a user error must stay one line.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


class TableArgument(exp.Expression):
    """`TABLE t [PARTITION BY k, ...]` passed to a table-valued function."""

    arg_types = {"this": True, "partition_by": False}


class Descriptor(exp.Expression):
    """`DESCRIPTOR(col)`: names the time attribute column of a window TVF."""

    arg_types = {"expressions": True}


class WindowCall(exp.Expression, exp.Func):
    """`TUMBLE|HOP|CUMULATE|SESSION(...)`: a window TVF (first argument is a table) or a legacy group window."""

    arg_types = {"this": True, "expressions": True}

    @property
    def kind(self) -> str:
        return self.name.upper()

    @property
    def is_tvf(self) -> bool:
        return any(isinstance(_unnamed(a), TableArgument) for a in self.expressions)


def _has_children(node: exp.Expr) -> bool:
    return any(isinstance(v, exp.Expr) or (isinstance(v, list) and v) for v in node.args.values())


def _unnamed(arg: exp.Expr) -> exp.Expr:
    return arg.expression if isinstance(arg, exp.Kwarg) else arg


class MetadataColumnConstraint(exp.Expression, exp.ColumnConstraintKind):
    """`METADATA [FROM 'key'] [VIRTUAL]`: the column is filled from the record's metadata (a Kafka message's
    partition, offset, timestamp, headers or key); `this` is the key (None: the column's own name)."""

    arg_types = {"this": False, "virtual": False}


def _parse_metadata(self: FlinkParser) -> MetadataColumnConstraint:
    key = self._parse_string() if self._match(TokenType.FROM) else None
    virtual = bool(self._match_text_seq("VIRTUAL"))
    return self.expression(MetadataColumnConstraint(this=key, virtual=virtual))


class FlinkParser(SparkParser):
    CONSTRAINT_PARSERS = {
        **SparkParser.CONSTRAINT_PARSERS,
        "METADATA": _parse_metadata,
        "WATERMARK": lambda self: self.expression(
            exp.WatermarkColumnConstraint(
                this=self._match(TokenType.FOR) and self._parse_column(),
                expression=self._match(TokenType.ALIAS) and self._parse_disjunction(),
            )
        ),
    }
    # Java date patterns are translated by the expression compiler, not by Spark's time mapping.
    # Flink's REGEXP_EXTRACT defaults to group 0, Spark's to 1: keep both as plain calls.
    FUNCTIONS = {k: v for k, v in SparkParser.FUNCTIONS.items() if k not in ("DATE_FORMAT", "REGEXP_EXTRACT")}
    SCHEMA_UNNAMED_CONSTRAINTS = {*SparkParser.SCHEMA_UNNAMED_CONSTRAINTS, "WATERMARK"}
    FUNC_TOKENS = {*SparkParser.FUNC_TOKENS, TokenType.SESSION}
    FUNCTION_PARSERS = {
        **SparkParser.FUNCTION_PARSERS,
        **{name: (lambda self, _n=name: self._parse_window_call(_n)) for name in WINDOW_FUNCTIONS},
        # JSON_ARRAYAGG(value [NULL | ABSENT ON NULL]): sqlglot knows the node, not Flink's spelling of it
        "JSON_ARRAYAGG": lambda self: self.expression(
            exp.JSONArrayAgg(
                this=self._parse_disjunction(), null_handling=self._parse_on_handling("NULL", "NULL", "ABSENT")
            )
        ),
    }

    def expression(self, instance: Any, token: Token | None = None, comments: list[str] | None = None) -> Any:
        # A node built from one token without children (CURRENT_TIMESTAMP, a bare keyword) gets that token's
        # position, so that an error about it can say where it is.
        if token is None and self._prev is not None and not instance.meta and not _has_children(instance):
            token = self._prev
        return super().expression(instance, token, comments)

    def _warn_unsupported(self) -> None:
        # sqlglot would log a warning and keep the statement as an opaque Command: an error at its start instead.
        if self._tokens:
            self.raise_error("this statement is not valid Flink SQL, or not supported", self._tokens[0])

    def _parse_window_call(self, name: str) -> exp.Expr:
        args = self._parse_csv(self._parse_window_argument)
        return self.expression(WindowCall(this=exp.to_identifier(name), expressions=args))

    def _parse_window_argument(self) -> exp.Expr | None:
        if self._curr and self._next and self._next.token_type == TokenType.FARROW:
            key = self._parse_id_var(any_token=True)
            self._match(TokenType.FARROW)
            return self.expression(exp.Kwarg(this=key, expression=self._parse_window_argument()))
        if self._match(TokenType.TABLE):
            table = self._parse_table_parts()
            partition = None
            if self._match(TokenType.PARTITION_BY):
                # Flink takes one column or a parenthesised list: a bare list would swallow DESCRIPTOR(..).
                if self._match(TokenType.L_PAREN):
                    partition = self._parse_csv(self._parse_column)
                    self._match_r_paren()
                else:
                    partition = [self._parse_column()]
            return self.expression(TableArgument(this=table, partition_by=partition))
        if self._curr and self._curr.text.upper() == "DESCRIPTOR" and self._next.token_type == TokenType.L_PAREN:
            self._advance(2)
            columns = self._parse_csv(self._parse_column)
            self._match_r_paren()
            return self.expression(Descriptor(expressions=columns))
        return self._parse_lambda()


class FlinkGenerator(SparkGenerator):
    TRANSFORMS = {
        **SparkGenerator.TRANSFORMS,
        TableArgument: lambda self, e: (
            "TABLE "
            + self.sql(e, "this")
            + (
                f" PARTITION BY ({self.expressions(e, key='partition_by', flat=True)})"
                if e.args.get("partition_by")
                else ""
            )
        ),
        Descriptor: lambda self, e: f"DESCRIPTOR({self.expressions(e, flat=True)})",
        WindowCall: lambda self, e: f"{e.kind}({self.expressions(e, flat=True)})",
        exp.Kwarg: lambda self, e: f"{self.sql(e, 'this')} => {self.sql(e, 'expression')}",
        # Flink's names for these aggregates (Spark's generator writes COLLECT_LIST and `k: v`)
        exp.ArrayAgg: lambda self, e: self.func("ARRAY_AGG", e.this),
        exp.JSONObjectAgg: lambda self, e: (
            f"JSON_OBJECTAGG(KEY {self.sql(e.expressions[0], 'this')} VALUE {self.sql(e.expressions[0], 'expression')}"
            + (f" {e.args['null_handling']}" if e.args.get("null_handling") else "")
            + ")"
        ),
        MetadataColumnConstraint: lambda self, e: (
            "METADATA"
            + (f" FROM {self.sql(e, 'this')}" if e.args.get("this") else "")
            + (" VIRTUAL" if e.args.get("virtual") else "")
        ),
    }


class Flink(Spark):
    """Flink SQL as timelapse reads it (sqlglot registers it under the name `flink`)."""

    class Tokenizer(Spark.Tokenizer):
        KEYWORDS = {**Spark.Tokenizer.KEYWORDS, "BYTES": TokenType.VARBINARY}
        # Flink writes a quote inside a string as '' and has no backslash escapes.
        STRING_ESCAPES = ["'"]

    Parser = FlinkParser
    Generator = FlinkGenerator
