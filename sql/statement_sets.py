"""Flink's statement sets, found at the token level before sqlglot parses statements one by one.

`EXECUTE STATEMENT SET BEGIN <insert>; <insert>; END;` and the older `BEGIN STATEMENT SET; <insert>; ... END;`
group INSERTs into one job (and `EXECUTE INSERT INTO ...` runs one, which is an INSERT). sqlglot splits a script
at every `;`, so a set's header, its statements and its `END` would arrive as unrelated fragments; this module
cuts the token stream into plain runs and sets instead. The parser (`sql/dialect.py`) parses each set's inner
statements as usual and wraps them in a `StatementSet`; the planner (`sql/planner/statements.py`) checks what is
inside (INSERTs only, at least one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot.tokens import Token, TokenType

EXECUTE_HEADER = ("EXECUTE", "STATEMENT", "SET", "BEGIN")
BEGIN_HEADER = ("BEGIN", "STATEMENT", "SET")


@dataclass
class Segment:
    """A run of tokens: plain statements (`header` None), or the statements of one statement set."""

    tokens: list[Token] = field(default_factory=list)
    header: Token | None = None
    closed: bool = False


def _texts(tokens: list[Token], count: int) -> tuple[str, ...]:
    return tuple(t.text.upper() for t in tokens[:count] if t.token_type != TokenType.STRING)


def _statements(tokens: list[Token]) -> list[list[Token]]:
    """Tokens cut at each `;`, which stays at the end of its statement."""
    out: list[list[Token]] = [[]]
    for token in tokens:
        out[-1].append(token)
        if token.token_type == TokenType.SEMICOLON:
            out.append([])
    return [s for s in out if s]


def _words(statement: list[Token]) -> list[Token]:
    return [t for t in statement if t.token_type != TokenType.SEMICOLON]


def segments(tokens: list[Token]) -> list[Segment]:
    """Plain runs and statement sets, in script order. A set without `END` is returned unclosed (the parser
    refuses it at its header)."""
    out: list[Segment] = []
    current: Segment | None = None  # the open statement set
    for statement in _statements(tokens):
        words = _words(statement)
        if current is None:
            if _texts(words, 4) == EXECUTE_HEADER:
                current = Segment(header=words[0])
                rest = statement[4:]
            elif _texts(words, 3) == BEGIN_HEADER and len(words) == 3:
                current = Segment(header=words[0])
                rest = []
            else:
                if _texts(words, 2) == ("EXECUTE", "INSERT"):
                    statement = [t for t in statement if t is not words[0]]  # EXECUTE INSERT INTO: one INSERT
                if not out or out[-1].header is not None:
                    out.append(Segment())
                out[-1].tokens.extend(statement)
                continue
            out.append(current)
            statement = rest
            words = _words(statement)
        if len(words) == 1 and words[0].token_type == TokenType.END:
            current.closed = True
            current = None
        else:
            current.tokens.extend(statement)
    return out
