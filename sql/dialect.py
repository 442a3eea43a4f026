"""The timelapse SQL dialect: Flink SQL's surface on top of sqlglot's Spark dialect.

Spark is the closest built-in relative (backtick identifiers, STRING, `WITH (...)` options). This module adds
what Flink has and Spark lacks: `WATERMARK FOR`, window table-valued functions with `TABLE t`, `DESCRIPTOR(..)`
and named arguments, `SESSION(...)` as a function name, statement sets (`sql/statement_sets.py`) and
`CREATE TEMPORARY SYSTEM FUNCTION`.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.generators.spark import SparkGenerator
from sqlglot.parsers.spark import SparkParser
from sqlglot.tokens import Token, TokenType

from sql import statement_sets
from sql.functions import syntax as function_syntax
from sql.match_recognize_syntax import MatchRecognize, generate_match_recognize, parse_match_recognize

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


class StatementSet(exp.Expression):
    """`EXECUTE STATEMENT SET BEGIN ...; END` (or `BEGIN STATEMENT SET; ... END`): its statements, in order."""

    arg_types = {"expressions": False}


class MetadataColumnConstraint(exp.Expression, exp.ColumnConstraintKind):
    """`METADATA [FROM 'key'] [VIRTUAL]`: the column is filled from the record's metadata (a Kafka message's
    partition, offset, timestamp, headers or key); `this` is the key (None: the column's own name)."""

    arg_types = {"this": False, "virtual": False}


def _parse_metadata(self: FlinkParser) -> MetadataColumnConstraint:
    key = self._parse_string() if self._match(TokenType.FROM) else None
    virtual = bool(self._match_text_seq("VIRTUAL"))
    return self.expression(MetadataColumnConstraint(this=key, virtual=virtual))


def _row_types(tokens: list[Token]) -> None:
    """Flink's `ROW<a INT>` and `ROW(a INT)` types become Spark's STRUCT, which sqlglot parses as a type. `ROW(`
    is a type only when a field name and a type follow (`ROW(a INT`); `ROW(1, x)` stays the value constructor."""
    for i, token in enumerate(tokens[:-1]):
        if token.token_type != TokenType.ROW:
            continue
        after = tokens[i + 1].token_type
        if after == TokenType.LT:
            token.token_type = TokenType.STRUCT
        elif after == TokenType.L_PAREN and i + 3 < len(tokens):
            name, kind = tokens[i + 2], tokens[i + 3]
            typed = kind.token_type in FlinkParser.TYPE_TOKENS or kind.token_type == TokenType.ROW
            if typed and name.token_type not in (TokenType.COMMA, TokenType.R_PAREN, TokenType.L_PAREN):
                token.token_type = TokenType.STRUCT


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
    # Flink's REGEXP_EXTRACT defaults to group 0, Spark's to 1; Flink's LTRIM/RTRIM take the string first;
    # DAYOFWEEK and the like take a timestamp as it is: keep them all as plain calls (sql/functions).
    FUNCTIONS = {
        **{k: v for k, v in SparkParser.FUNCTIONS.items() if k not in function_syntax.PLAIN_CALLS},
        **function_syntax.FUNCTION_BUILDERS,
    }
    # FIRST(A.x, n) and LAST(A.x, n) are MATCH_RECOGNIZE's navigation: Spark's builders would drop the offset.
    FUNCTIONS.pop("FIRST", None)
    FUNCTIONS.pop("LAST", None)
    SCHEMA_UNNAMED_CONSTRAINTS = {*SparkParser.SCHEMA_UNNAMED_CONSTRAINTS, "WATERMARK"}
    FUNC_TOKENS = {*SparkParser.FUNC_TOKENS, TokenType.SESSION}
    FUNCTION_PARSERS = {
        **SparkParser.FUNCTION_PARSERS,
        **{name: (lambda self, _n=name: self._parse_window_call(_n)) for name in WINDOW_FUNCTIONS},
        **function_syntax.FUNCTION_PARSERS,
        # JSON_ARRAYAGG(value [NULL | ABSENT ON NULL]): sqlglot knows the node, not Flink's spelling of it
        "JSON_ARRAYAGG": lambda self: self.expression(
            exp.JSONArrayAgg(
                this=self._parse_disjunction(), null_handling=self._parse_on_handling("NULL", "NULL", "ABSENT")
            )
        ),
    }

    _parse_match_recognize = parse_match_recognize

    def parse(self, raw_tokens: list[Token], sql: str) -> list[exp.Expr | None]:
        """Statements in order; a statement set's statements come wrapped in one `StatementSet`."""
        out: list[exp.Expr | None] = []
        for segment in statement_sets.segments(_without_system(raw_tokens)):
            parsed = super().parse(segment.tokens, sql) if segment.tokens else []
            if segment.header is None:
                out += parsed
                continue
            if not segment.closed:
                self.raise_error("the statement set has no END (EXECUTE STATEMENT SET BEGIN ...; END;)", segment.header)
            inner = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
            node = StatementSet(expressions=inner)
            node.update_positions(segment.header)
            out.append(node)
        return out

    def expression(self, instance: Any, token: Token | None = None, comments: list[str] | None = None) -> Any:
        # A node built from one token without children (CURRENT_TIMESTAMP, a bare keyword) gets that token's
        # position, so that an error about it can say where it is.
        if token is None and self._prev is not None and not instance.meta and not _has_children(instance):
            token = self._prev
        return super().expression(instance, token, comments)

    def _parse(self, parse_method: Any, raw_tokens: list[Token], sql: str | None = None) -> list[exp.Expr | None]:
        _row_types(raw_tokens)
        return super()._parse(parse_method, raw_tokens, sql)

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


def _without_system(tokens: list[Token]) -> list[Token]:
    """`CREATE|DROP TEMPORARY SYSTEM FUNCTION`: a system function is one without a catalog, which is every function
    here; the word changes nothing, so it is dropped before sqlglot (which does not know it) parses."""
    return [
        t
        for i, t in enumerate(tokens)
        if not (
            t.text.upper() == "SYSTEM"
            and i >= 2
            and tokens[i - 1].text.upper() == "TEMPORARY"
            and tokens[i - 2].token_type in (TokenType.CREATE, TokenType.DROP)
        )
    ]


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
        StatementSet: lambda self, e: (
            "EXECUTE STATEMENT SET BEGIN " + "".join(f"{self.sql(s)}; " for s in e.expressions) + "END"
        ),
        Descriptor: lambda self, e: f"DESCRIPTOR({self.expressions(e, flat=True)})",
        WindowCall: lambda self, e: f"{e.kind}({self.expressions(e, flat=True)})",
        exp.Kwarg: lambda self, e: f"{self.sql(e, 'this')} => {self.sql(e, 'expression')}",
        MatchRecognize: generate_match_recognize,
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
        KEYWORDS = {
            **Spark.Tokenizer.KEYWORDS,
            "BYTES": TokenType.VARBINARY,
            "MATCH_RECOGNIZE": TokenType.MATCH_RECOGNIZE,
        }
        # Flink writes a quote inside a string as '' and has no backslash escapes.
        STRING_ESCAPES = ["'"]
        # `EXECUTE STATEMENT SET BEGIN ...` is parsed, not kept as an opaque command
        COMMANDS = Spark.Tokenizer.COMMANDS - {TokenType.EXECUTE}

    Parser = FlinkParser
    Generator = FlinkGenerator
