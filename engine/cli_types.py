"""argparse types and the parser of the `timelapse` command line: a bad flag is one line, naming the flag, exit 2.

The value rules are those of the SQL options the flags mirror (`sql.options`), so `--retain 0` and
`SET 'checkpoint.retention.count' = '0'` fail alike.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from engine.errors import UserError

EXIT_OK, EXIT_PROBLEMS = 0, 4  # the others come with the errors (engine.errors)


class UsageError(UserError):
    """A command line that cannot be run as given."""


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


def storage_option_flag(command: argparse.ArgumentParser) -> None:
    """`--storage-option KEY=VALUE` (repeatable): options for the object store of the command's paths."""
    command.add_argument(
        "--storage-option",
        action="append",
        dest="storage_options",
        metavar="KEY=VALUE",
        help="for s3://, gs://, az:// paths: an option of their bucket, e.g. aws_endpoint_url=http://... or "
        "aws_region=eu-west-1 (repeatable; holds for every table in that bucket; default: the AWS_*, GOOGLE_*, "
        "AZURE_* environment variables)",
    )


def storage_options(args: argparse.Namespace) -> dict[str, str]:
    """The `--storage-option` values as a dict; a value that is not KEY=VALUE is a user error (exit 2)."""
    options: dict[str, str] = {}
    for item in getattr(args, "storage_options", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--storage-option takes KEY=VALUE, not '{item}'")
        options[key.strip()] = value
    return options


def register_storage_options(args: argparse.Namespace, options: dict[str, str]) -> None:
    """Hold `options` for the bucket of every object-store path the command names (the state directories, a
    branch's sinks), so every table read or written there gets them."""
    from engine.storage import is_uri, location

    named = [getattr(args, name, None) for name in ("dir", "new_dir", "state")]
    named += [item.partition("=")[2] for item in getattr(args, "sink", None) or []]
    for path in named:
        if options and isinstance(path, str) and is_uri(path):
            location(path, options)


def output_flags(
    command: argparse.ArgumentParser,
    limit: int = 50,
    json_help: str = "rows as a JSON list",
    csv_help: str = "rows as CSV",
    limit_help: str = "rows to show",
) -> None:
    """`--json | --csv` and `--limit N`: how a command that prints rows prints them."""
    formats = command.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help=json_help)
    formats.add_argument("--csv", action="store_true", help=csv_help)
    command.add_argument("--limit", type=whole(1), default=limit, help=f"{limit_help} (default {limit})")
