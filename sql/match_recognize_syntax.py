"""The grammar of Flink's MATCH_RECOGNIZE clause, for the dialect's parser (`sql/dialect.py` hooks it in).

sqlglot's own `_parse_match_recognize` keeps PATTERN as raw text and knows no WITHIN; this one parses the
PATTERN into `sql/match_pattern.py` nodes (with the position of each error), and reads `WITHIN INTERVAL ...`.
What it does not run (ALL ROWS PER MATCH, ...) is still parsed and then refused by the planner with its reason.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from sql.match_pattern import Alt, Pattern, Repeat, Seq, Var
from sql.match_pattern import text as pattern_sql


class MatchRecognize(exp.MatchRecognize):
    """`MATCH_RECOGNIZE (...)`: sqlglot's node plus `within` (an INTERVAL) and `pattern_tree` (a `Pattern`)."""

    arg_types = {**exp.MatchRecognize.arg_types, "within": False, "pattern_tree": False}


def parse_match_recognize(self: Any) -> MatchRecognize | None:
    """`self` is the dialect's parser, positioned at MATCH_RECOGNIZE."""
    if not self._match(TokenType.MATCH_RECOGNIZE):
        return None
    self._match_l_paren()
    partition = self._parse_partition_by()
    order = self._parse_order()
    measures = self._parse_csv(self._parse_match_recognize_measure) if self._match_text_seq("MEASURES") else None
    rows = None
    first = self._curr
    if self._match_text_seq("ONE", "ROW", "PER", "MATCH"):
        rows = self.expression(exp.Var(this="ONE ROW PER MATCH"), token=first)
    elif self._match_text_seq("ALL", "ROWS", "PER", "MATCH"):
        rows = self.expression(exp.Var(this="ALL ROWS PER MATCH"), token=first)
    after = None
    first = self._curr
    if self._match_text_seq("AFTER", "MATCH", "SKIP"):
        if self._match_text_seq("PAST", "LAST", "ROW"):
            text = "PAST LAST ROW"
        elif self._match_text_seq("TO", "NEXT", "ROW"):
            text = "TO NEXT ROW"
        elif self._match_text_seq("TO", "FIRST") or self._match_text_seq("TO", "LAST"):
            direction = self._prev.text.upper()
            target = self._curr
            if target is None or not _is_name(target):
                self.raise_error(f"expecting a pattern variable after AFTER MATCH SKIP TO {direction}", target)
            self._advance()
            text = f"TO {direction} {target.text.upper()}"
        else:
            self.raise_error("expecting PAST LAST ROW, TO NEXT ROW, TO FIRST <var> or TO LAST <var>", self._curr)
        after = self.expression(exp.Var(this=text), token=first)
    pattern_text = None
    tree = None
    if self._match_text_seq("PATTERN"):
        opening = self._curr
        self._match_l_paren()
        tree = _alternation(self)
        if not self._match(TokenType.R_PAREN):
            self.raise_error("expecting ) to close PATTERN", self._curr)
        pattern_text = self.expression(exp.Var(this=self._find_sql(opening, self._prev)), token=opening)
    within = self._parse_interval() if self._match_text_seq("WITHIN") else None
    define = self._parse_csv(self._parse_name_as_expression) if self._match_text_seq("DEFINE") else None
    self._match_r_paren()
    return self.expression(
        MatchRecognize(
            partition_by=partition,
            order=order,
            measures=measures,
            rows=rows,
            after=after,
            pattern=pattern_text,
            pattern_tree=tree,
            within=within,
            define=define,
            alias=self._parse_table_alias(),
        )
    )


# -- PATTERN: alternation of concatenations of quantified primaries -------------------------------------
_STRUCTURE = {TokenType.L_PAREN, TokenType.R_PAREN, TokenType.PIPE, TokenType.L_BRACE, TokenType.R_BRACE}


def _is_name(token: Token) -> bool:
    if token.token_type in _STRUCTURE:
        return False
    return token.token_type in (TokenType.VAR, TokenType.IDENTIFIER) or token.text.replace("_", "a").isalnum()


def _alternation(self: Any) -> Pattern:
    options = [_concatenation(self)]
    while self._match(TokenType.PIPE):
        options.append(_concatenation(self))
    return options[0] if len(options) == 1 else Alt(tuple(options))


def _concatenation(self: Any) -> Pattern:
    items: list[Pattern] = []
    while self._curr is not None and self._curr.token_type not in (TokenType.PIPE, TokenType.R_PAREN):
        items.append(_quantified(self, _primary(self)))
    if not items:
        self.raise_error("expecting a pattern variable", self._curr)
    return items[0] if len(items) == 1 else Seq(tuple(items))


def _primary(self: Any) -> Pattern:
    token = self._curr
    if self._match(TokenType.L_PAREN):
        inner = _alternation(self)
        if not self._match(TokenType.R_PAREN):
            self.raise_error("expecting ) in PATTERN", self._curr)
        return inner
    if token.text in ("^", "$") or token.token_type in (TokenType.L_BRACE, TokenType.CARET, TokenType.DOLLAR):
        self.raise_error(
            f"'{token.text}' in PATTERN is not supported (Flink supports neither anchors nor exclusions)", token
        )
    if token.text.upper() == "PERMUTE":
        self.raise_error("PERMUTE in PATTERN is not supported (Flink does not support it either)", token)
    if not _is_name(token):
        self.raise_error(f"unexpected '{token.text}' in PATTERN", token)
    self._advance()
    return Var(token.text.upper())


def _quantified(self: Any, item: Pattern) -> Pattern:
    token = self._curr
    if token is None:
        return item
    if token.token_type == TokenType.DQMARK:  # `A??`: an optional, reluctant
        self._advance()
        return Repeat(item, 0, 1, greedy=False)
    if self._match(TokenType.STAR):
        low, high = 0, None
    elif self._match(TokenType.PLUS):
        low, high = 1, None
    elif self._match(TokenType.PLACEHOLDER):
        low, high = 0, 1
    elif self._match(TokenType.L_BRACE):
        low_text = self._prev.text if self._match(TokenType.NUMBER) else None
        if self._match(TokenType.COMMA):
            high_text = self._prev.text if self._match(TokenType.NUMBER) else None
            if low_text is None and high_text is None:
                self.raise_error("a quantifier {,} needs a bound", token)
            low, high = int(low_text or 0), (int(high_text) if high_text is not None else None)
        elif low_text is None:
            self.raise_error("expecting a number in the quantifier", self._curr)
        else:
            low = high = int(low_text)
        if not self._match(TokenType.R_BRACE):
            self.raise_error("expecting } to close the quantifier", self._curr)
        if high is not None and (high < low or high == 0):
            self.raise_error(f"quantifier {{{low},{high}}} matches nothing", token)
    else:
        return item
    greedy = not self._match(TokenType.PLACEHOLDER)
    return Repeat(item, low, high, greedy)


def generate_match_recognize(self: Any, node: MatchRecognize) -> str:
    """The clause as SQL again (plan fingerprints and state ids are made from the statements' SQL)."""
    parts: list[str] = []
    if node.args.get("partition_by"):
        parts.append(f"PARTITION BY {self.expressions(node, key='partition_by', flat=True)}")
    if node.args.get("order"):
        parts.append(self.sql(node, "order").strip())
    if node.args.get("measures"):
        parts.append(f"MEASURES {self.expressions(node, key='measures', flat=True)}")
    if node.args.get("rows"):
        parts.append(node.args["rows"].name)
    if node.args.get("after"):
        parts.append(f"AFTER MATCH SKIP {node.args['after'].name}")
    if node.args.get("pattern_tree") is not None:
        parts.append(f"PATTERN ({pattern_sql(node.args['pattern_tree'])})")
    if node.args.get("within") is not None:
        parts.append(f"WITHIN {self.sql(node, 'within')}")
    if node.args.get("define"):
        parts.append(f"DEFINE {self.expressions(node, key='define', flat=True)}")
    alias = self.sql(node, "alias")
    return f" MATCH_RECOGNIZE ({' '.join(parts)})" + (f" AS {alias}" if alias else "")
