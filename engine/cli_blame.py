"""`timelapse blame`: every epoch that changed one key's state, and the input it read."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli_types import EXIT_OK, UsageError, output_flags


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `blame`; returns the parsers that take a state directory."""
    blame = commands.add_parser(
        "blame", help="every epoch that changed one key's state: before -> after, and the input slice it read"
    )
    blame.add_argument("dir", help="the state directory")
    blame.add_argument("operator", help="the state table, as history names it: totals, join/left, ...")
    blame.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="the key (repeatable, or comma-separated for a composite key: --key 'k=a,window_start=2026-01-01 "
        "00:00:10'); a subset of the key columns blames every key that matches (none: an aggregate without GROUP BY)",
    )
    blame.add_argument("--rows", action="store_true", help="also print the input rows of the key in those slices")
    blame.add_argument("--sql", help="the pipeline's SQL file (needed by --rows: it defines the sources)")
    blame.add_argument("--at", help="blame up to this epoch, savepoint or ISO time (default: the current cut)")
    output_flags(
        blame,
        json_help="one JSON object: changes (and rows)",
        csv_help="the changes as CSV",
        limit_help="the most recent changes shown",
    )
    blame.set_defaults(handler=cmd_blame)
    return [blame]


def cmd_blame(args: argparse.Namespace) -> int:
    from engine.cli_history import parse_point
    from engine.cli_types import storage_options
    from engine.history import History
    from engine.key_blame import find_changes, key_filter, parse_key

    if args.rows and not args.sql:
        raise UsageError("--rows needs --sql FILE: the pipeline's SQL defines where its sources' files are")
    key = parse_key(args.key)
    at = parse_point(args.at)
    history = History(args.dir, storage_options(args) or None)
    found = find_changes(history, args.operator, key, at)
    changes = found.changes
    shown = changes.tail(args.limit)
    rows = None
    if args.rows and not shown.is_empty():
        from engine.blame_input import input_rows

        found.changes = shown
        rows = input_rows(history, args.operator, found, key_filter(history, args.operator, at), args.sql)
    if args.json:
        report: dict[str, Any] = {
            "operator": args.operator,
            "key": key,
            "complete": found.complete,
            "incomplete_because": found.why,
            "changes": [{**r, "input": json.loads(r["input"])} for r in shown.to_dicts()],
            "more": changes.height - shown.height,
        }
        if rows is not None:
            report["rows"] = rows.drop("unmatched").to_dicts()
            report["unmatched"] = rows.get_column("unmatched")[0].to_list() if rows.height else []
        print(json.dumps(report, default=str))
        return EXIT_OK
    if args.csv:
        import polars as pl

        sys.stdout.write(shown.with_columns(pl.col("epochs").cast(pl.List(pl.String)).list.join(";")).write_csv())
        return EXIT_OK
    print(render(args.operator, key, found, shown, rows, changes.height - shown.height))
    return EXIT_OK


def render(operator: str, key: dict[str, str | None], found: Any, shown: Any, rows: Any, more: int) -> str:
    """The changes as people read them: per epoch the change, before -> after, and the slice of every source."""
    named = ", ".join(f"{k}={'NULL' if v is None else v}" for k, v in key.items())
    if shown.is_empty():
        return f"no epoch changed {operator} for {named}: the key was never in its state (at the cut blamed)"
    lines = []
    if more:
        lines.append(f"({more} earlier changes; --limit N shows more)")
    if not found.complete:
        lines.append(f"({found.why})")
    partial = len(found.keys) > len(key)
    for change in shown.iter_rows(named=True):
        span = change["epochs"] or [change["epoch"]]
        covers = f"  (epochs {span[0]}-{span[-1]})" if len(span) > 1 else ""
        who = "  " + ", ".join(f"{k}={change[k]}" for k in found.keys) if partial else ""
        lines.append(f"epoch {change['epoch']}  {change['change']}{who}{covers}")
        for value in found.values:
            before, after = change[f"{value}_before"], change[f"{value}_after"]
            if before != after:
                lines.append(f"    {value}: {_text(before)} -> {_text(after)}")
        for read in json.loads(change["input"]):
            lines.extend(_slice_lines(read))
        if rows is not None:
            mine = rows.filter(rows["epoch"] == change["epoch"]) if rows.height else rows
            lines.append(f"    input rows of the key: {mine.height}")
            for row in mine.drop("epoch", "unmatched").to_dicts():
                lines.append("      " + json.dumps(row, default=str))
    if rows is not None and rows.height and rows.get_column("unmatched")[0].len():
        lines.append(f"(not matched against the input: {', '.join(rows.get_column('unmatched')[0].to_list())})")
    return "\n".join(lines)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _slice_lines(read: dict[str, Any]) -> list[str]:
    if (edit := read.get("edit")) is not None:
        why = f' "{edit["reason"]}"' if edit.get("reason") else ""
        who = f"savepoint '{edit['savepoint']}' by {edit.get('user') or '?'}{why}"
        return [f"    edited at epoch {read['epoch']}: {who}", *(f"      {s}" for s in edit.get("statements", []))]
    if read.get("freed"):
        return [f"    read in epoch {read['epoch']}: freed by retention (the offset log no longer has its slice)"]
    if not read["sources"]:
        return [f"    read in epoch {read['epoch']}: nothing"]
    out = []
    for name, piece in read["sources"].items():
        if "files" in piece:
            files = "; ".join(_file_text(f) for f in piece["files"])
            out.append(f"    read in epoch {read['epoch']}: {name}: {files or 'no records'}")
        elif "partitions" in piece:
            parts = "; ".join(
                f"{p['topic']}[{p['partition']}] offsets [{p['start_offset']}, {p['end_offset']})"
                for p in piece["partitions"]
            )
            out.append(f"    read in epoch {read['epoch']}: {name}: {parts}")
        else:
            out.append(f"    read in epoch {read['epoch']}: {name}: [{piece['start']}, {piece['end']})")
    return out


def _file_text(f: dict[str, Any]) -> str:
    (lo, hi), (start, end) = f["records"], f["bytes"]
    return f"{f['file']} records {lo}..{hi - 1} (segment bytes [{start}, {end}))"
