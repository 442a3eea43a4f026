"""argparse types and the parser of the `timelapse` command line: a bad flag is one line, naming the flag, exit 2.

The value rules are those of the SQL options the flags mirror (`sql.options`), so `--retain 0` and
`SET 'checkpoint.retention.count' = '0'` fail alike.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as every other user error: `--help` shows the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)  # the CLI's exit code for a user error


def whole(minimum: int, meaning: str = "", maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from minimum (to maximum)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number{meaning}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"'{text}' must be at least {minimum}{meaning}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"'{text}' must be at most {maximum}{meaning}")
        return value

    return parse


def checked(check: Callable[[str], str | None]) -> Callable[[str], str]:
    """An argparse type from one of `sql.options`' value checks (the same rules as the SQL option)."""

    def parse(text: str) -> str:
        problem = check(text)
        if problem:
            raise argparse.ArgumentTypeError(f"'{text}' {problem}")
        return text

    return parse


def epoch(text: str) -> int:
    """An epoch number: epochs are numbered from 1."""
    return whole(1, " (epochs are numbered from 1)")(text)
