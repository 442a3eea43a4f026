"""`timelapse compare`: two state directories (branches of one savepoint) side by side (`engine.comparison`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli_types import EXIT_OK, UsageError, output_flags, storage_options


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `compare`; returns the parsers that take a state directory."""
    compare = commands.add_parser(
        "compare",
        help="rows only in A, only in B and changed, per epoch: an A/B test of two branches of one savepoint",
    )
    compare.add_argument("dir", metavar="DIR_A", help="a state directory (A)")
    compare.add_argument("dir_b", metavar="DIR_B", help="another state directory (B), e.g. a branch of A")
    what = compare.add_mutually_exclusive_group()
    what.add_argument("--sink", help="compare this Delta sink (default: counts for every sink and operator)")
    what.add_argument("--operator", help="compare this operator's state (its id, e.g. totals or join/left)")
    compare.add_argument(
        "--at",
        help="an epoch, a savepoint name (each side's own, else the other's epoch) or an ISO time (default: now)",
    )
    compare.add_argument(
        "--key", help="COL,...: the columns that identify a row (default: the sink's PRIMARY KEY, the state's key)"
    )
    output_flags(
        compare,
        json_help="one JSON object",
        csv_help="the differing rows as CSV, with a first column `diff` (--limit rows of each kind)",
        limit_help="rows to show of each table (--json: `more` says how many were left out)",
    )
    compare.set_defaults(handler=cmd_compare)
    return [compare]


def cmd_compare(args: argparse.Namespace) -> int:
    from engine.cli_history import parse_point
    from engine.comparison import compare
    from engine.storage import location

    options = storage_options(args) or None
    key = [k.strip() for k in args.key.split(",") if k.strip()] if args.key is not None else None
    if key is not None and not key:
        raise UsageError("--key takes column names: --key COL,...")
    found = compare(
        location(args.dir, options),
        location(args.dir_b, options),
        sink=args.sink,
        operator=args.operator,
        at=parse_point(args.at),
        key=key,
        storage_options=options,
    )
    if args.json:
        print(json.dumps(found.to_dict(args.limit), default=str))
    elif args.csv:
        _csv(found, args.limit)
    else:
        print(render(found, args.limit))
    return EXIT_OK


def _csv(found: Any, limit: int) -> None:
    """The rows as CSV, the first `limit` of each kind (as blame's --csv honours --limit)."""
    import polars as pl

    frame = None if found.summary is None else found.summary.head(limit)
    if frame is None:
        parts = [
            f.head(limit).with_columns(pl.lit(label).alias("diff")).select("diff", *f.columns)
            for label, f in (("only_a", found.only_a), ("only_b", found.only_b), ("changed", found.changed))
        ]
        frame = pl.concat(parts, how="diagonal_relaxed")
    sys.stdout.write(frame.write_csv())


def render(found: Any, limit: int) -> str:
    """The comparison as text: where each side stands, the counts per epoch and the differing rows."""
    import shutil

    import polars as pl

    lines = [f"A: {found.a} (epoch {found.epoch_a})", f"B: {found.b} (epoch {found.epoch_b})"]
    if found.origin is not None:
        common = f"both branched from {found.origin.get('ancestor') or 'one ancestor'}"
        parent = {"a": "B branched from A", "b": "A branched from B", "common": common}
        saved = f" (savepoint '{found.origin['savepoint']}')" if found.origin.get("savepoint") else ""
        lines.append(f"{parent[found.origin['parent']]} at epoch {found.origin['epoch']}{saved}")
    width = shutil.get_terminal_size((160, 40)).columns

    def table(frame: pl.DataFrame) -> str:
        rows = min(limit, frame.height)
        with pl.Config(tbl_rows=rows, tbl_cols=-1, tbl_width_chars=width, tbl_hide_dataframe_shape=True):
            text = str(frame.head(rows))
        return text + (f"\n({frame.height - rows} more rows; --limit N shows more)" if rows < frame.height else "")

    if found.summary is not None:
        lines += ["", table(found.summary)]
        return "\n".join(lines)
    what = f"{found.kind} '{found.name}'"
    lines.append(f"{what}, " + (f"keyed by {', '.join(found.key)}" if found.key else "compared as multisets of rows"))
    if found.note:
        lines.append(f"note: {found.note}")
    counts = found.counts()
    lines.append(f"{counts['only_a']} only in A, {counts['only_b']} only in B, {counts['changed']} changed")
    for label, frame in (("only in A", found.only_a), ("only in B", found.only_b), ("changed", found.changed)):
        if frame.height:
            lines += ["", f"{label}:", table(frame)]
    if found.per_epoch.height:
        lines += ["", "per epoch:", table(found.per_epoch)]
    return "\n".join(lines)
