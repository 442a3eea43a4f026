"""`timelapse savepoint export`: a savepoint as a self-contained, checksummed directory."""

from __future__ import annotations

import argparse
import json
from shlex import quote
from typing import Any

from engine.cli_types import EXIT_OK, storage_options


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `savepoint-export`; returns the parsers that take a state directory."""
    export = commands.add_parser(
        "savepoint-export",
        help="write a savepoint as a self-contained, checksummed state directory (local or s3://)",
        description="timelapse savepoint export DIR --name N --to PATH: only that cut, its state tables compacted",
    )
    export.add_argument("dir", help="the state directory")
    export.add_argument("--name", required=True, help="the savepoint to export")
    export.add_argument("--to", required=True, metavar="PATH", help="the export's directory (new; local or s3://)")
    export.add_argument(
        "--with-sinks", action="store_true", help="also copy the Delta sinks as of the savepoint, inside the export"
    )
    export.add_argument("--json", action="store_true")
    export.set_defaults(handler=cmd_export)
    return [export]


def cmd_export(args: argparse.Namespace) -> int:
    from engine.savepoint_export import export_savepoint
    from engine.storage import location

    options = storage_options(args)
    result = export_savepoint(
        location(args.dir, options or None), args.name, location(args.to, options or None), with_sinks=args.with_sinks
    )
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    sinks = f", sinks {', '.join(result['sinks'])}" if result["sinks"] else ", no sinks"
    print(
        f"savepoint '{result['savepoint']}' (epoch {result['epoch']}) exported to {result['export']}: "
        f"{result['tables']} tables{sinks}; {result['files']} files, {result['bytes']} bytes, checksums in export.json"
    )
    to, name = quote(args.to), quote(result["savepoint"])
    print(f"start from it with: timelapse branch {to} NEW_DIR --from savepoint {name}")
    print(f"                or: timelapse run PIPELINE.sql --state NEW_DIR --from-savepoint {to}")
    return EXIT_OK
