"""The commands that read a state directory's history and change nothing: `log`, `state`, `diff`, `sql`,
`verify` (the engine's side is `engine.history`, `engine.versioning` and `engine.verify`)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from engine.cli_types import EXIT_OK, EXIT_PROBLEMS, UsageError


def cmd_log(args: argparse.Namespace) -> int:
    from engine import versioning

    events = versioning.history(args.dir)
    print(json.dumps(events) if args.json else versioning.render_history(events))
    return EXIT_OK


def parse_point(text: str | None) -> int | str | None:
    """`--at` values: an epoch number, a savepoint name or an ISO time."""
    if text is None:
        return None
    if text.strip().lstrip("-").isdigit():
        if int(text) < 1:
            raise UsageError(f"there is no epoch {int(text)}: epochs are numbered from 1")
        return int(text)
    return text


def _show(frame: Any, args: argparse.Namespace, limit: int | None = None) -> None:
    """A frame as a readable table, or as JSON rows / CSV for scripts."""
    import polars as pl

    if args.json:
        print(json.dumps(frame.to_dicts(), default=str))
    elif args.csv:
        sys.stdout.write(frame.with_columns(pl.col(pl.List(pl.String)).list.join(";")).write_csv())
    else:
        rows = frame.height if limit is None else min(limit, frame.height)
        with pl.Config(tbl_rows=rows, tbl_cols=-1, tbl_width_chars=shutil.get_terminal_size((160, 40)).columns):
            print(frame.head(rows))
        if rows < frame.height:
            print(f"({frame.height - rows} more rows; --limit N shows more)")


def cmd_state(args: argparse.Namespace) -> int:
    from engine.history import History

    h = History(args.dir)
    frame = h.scan_state(args.operator, parse_point(args.at)).head(args.limit).collect()
    _show(frame.drop("_kg", strict=False) if not args.all_columns else frame, args)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from engine.history import History

    frame = History(args.dir).diff(args.operator, parse_point(args.a), parse_point(args.b))
    _show(frame, args, args.limit)
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from engine.history import History

    try:
        frame = History(args.dir).sql(args.query)
    except duckdb.Error as err:
        raise UsageError(str(err).splitlines()[0]) from None
    _show(frame, args, args.limit)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from engine.verify import render, verify

    report = verify(args.dir, deep=args.deep)
    print(json.dumps(report) if args.json else render(report))
    return EXIT_PROBLEMS if report["problems"] else EXIT_OK
