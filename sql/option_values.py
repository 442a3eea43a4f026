"""Checks of single option values, shared by every connector's and SET's rules (sql.options, sql.kafka_options):
each returns what is wrong with a value, or None when it is fine. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable

import polars as pl

from sql import durations
from sql.errors import did_you_mean

Check = Callable[[str], str | None]  # the problem with a value, or None when it is fine


def whole(minimum: int | None = None) -> Check:
    def check(value: str) -> str | None:
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            return "must be a whole number" + (f" of at least {minimum}" if minimum is not None else "")
        if minimum is not None and int(text) < minimum:
            return f"must be at least {minimum}"
        return None

    return check


def number(positive: bool = False, at_most: float | None = None) -> Check:
    def check(value: str) -> str | None:
        try:
            parsed = float(value)
        except ValueError:
            return "must be a number"
        if parsed != parsed or parsed in (float("inf"), float("-inf")):
            return "must be a finite number"
        if positive and parsed <= 0:
            return "must be greater than 0"
        if at_most is not None and not 0 <= parsed <= at_most:
            return f"must be between 0 and {at_most:g}"
        return None

    return check


MAX_SECONDS = 10_000 * 365.25 * 86_400  # longer would overflow a timestamp's arithmetic


def duration(value: str) -> str | None:
    problem = duration_or_zero(value)
    return problem or ("must be longer than 0" if durations.parse_duration(value) <= 0 else None)


def duration_or_zero(value: str) -> str | None:
    try:
        seconds = durations.parse_duration(value)
    except ValueError:
        return "is not a duration; write e.g. 500ms, 2 s, 1 min or 7 d"
    return "must be shorter than 10000 years" if seconds > MAX_SECONDS else None


def size(value: str) -> str | None:
    try:
        parsed = durations.parse_size(value)
    except ValueError:
        return "is not a size; write e.g. 64 MB or 1 GiB"
    return "must be larger than 0" if parsed <= 0 else None


def choice(*values: str) -> Check:
    def check(value: str) -> str | None:
        if value.strip().lower() in values:
            return None
        return f"must be one of {', '.join(repr(v) for v in values)}{did_you_mean(value.strip().lower(), values)}"

    return check


def text(value: str) -> str | None:
    return None


def not_empty(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def one_character(value: str) -> str | None:
    return None if len(value) == 1 and value != "\n" else "must be one character"


def timestamp(value: str) -> str | None:
    from sql.values import parse_timestamp

    parsed = pl.select(parse_timestamp(pl.lit(value))).item()
    return None if parsed is not None else "is not a timestamp; write e.g. '2026-01-01 00:00:00'"
