"""`timelapse state edit` and `timelapse state bootstrap`: new savepoints made by changing state."""

from __future__ import annotations

import argparse
import json
from shlex import quote
from typing import Any

from engine.cli_types import EXIT_OK, UsageError


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `state-edit` and `state-bootstrap`; returns the parsers that take a state directory."""
    edit = commands.add_parser(
        "state-edit",
        help="a new savepoint: the state of a savepoint or epoch changed by SQL (UPDATE, DELETE, INSERT)",
        description='timelapse state edit DIR --from (savepoint NAME | epoch N) --as NEW "STATEMENT" ...',
    )
    edit.add_argument("dir", help="the state directory")
    edit.add_argument("statements", nargs="+", help="UPDATE op SET ..., DELETE FROM op ..., INSERT INTO op ...")
    edit.add_argument("--from", dest="origin", nargs=2, metavar=("savepoint|epoch", "NAME|N"), required=True)
    edit.add_argument("--as", dest="as_savepoint", required=True, metavar="NEW_SAVEPOINT")
    edit.add_argument("--reason", help="recorded in the manifest")
    edit.add_argument("--json", action="store_true")
    edit.set_defaults(handler=cmd_state_edit)

    bootstrap = commands.add_parser(
        "state-bootstrap",
        help="a savepoint a new pipeline starts from, with an operator's state loaded from a Delta or Parquet table",
        description="timelapse state bootstrap DIR OP --from PATH --sql PIPELINE.sql [--as NAME]",
    )
    bootstrap.add_argument("dir", help="the state directory (new, or holding only earlier bootstraps)")
    bootstrap.add_argument("operator", help="the operator (STATE_ID) whose state the table holds")
    bootstrap.add_argument("--from", dest="source", required=True, metavar="PATH", help="a Delta table or Parquet file")
    bootstrap.add_argument("--sql", required=True, help="the pipeline that will run from the savepoint")
    bootstrap.add_argument("--as", dest="as_savepoint", default="bootstrap", metavar="NAME")
    bootstrap.add_argument("--reason", help="recorded in the manifest")
    bootstrap.add_argument("--json", action="store_true")
    bootstrap.set_defaults(handler=cmd_state_bootstrap)
    return [edit, bootstrap]


def cmd_state_edit(args: argparse.Namespace) -> int:
    from engine.state_edit import edit_state

    kind, value = args.origin
    if kind not in ("savepoint", "epoch"):
        raise UsageError("--from takes 'savepoint NAME' or 'epoch N'")
    if kind == "epoch" and not value.isdigit():
        raise UsageError(f"--from epoch needs a number, not '{value}'")
    result = edit_state(
        args.dir,
        args.statements,
        savepoint=value if kind == "savepoint" else None,
        epoch=int(value) if kind == "epoch" else None,
        as_savepoint=args.as_savepoint,
        reason=args.reason,
    )
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    origin = f"savepoint '{value}' (epoch {result['epoch']})" if kind == "savepoint" else f"epoch {result['epoch']}"
    print(f"savepoint '{result['savepoint']}' = {origin} edited:")
    for table, counts in result["tables"].items():
        print(f"  {table}: {counts['inserted']} inserted, {counts['updated']} updated, {counts['deleted']} deleted")
    print(f"continue from it with: timelapse rollback {quote(args.dir)} --savepoint {quote(result['savepoint'])}")
    return EXIT_OK


def cmd_state_bootstrap(args: argparse.Namespace) -> int:
    from engine.state_bootstrap import bootstrap_state

    result = bootstrap_state(
        args.dir, args.operator, args.source, args.sql, as_savepoint=args.as_savepoint, reason=args.reason
    )
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    print(f"savepoint '{result['savepoint']}': {result['rows']} rows of {result['operator']} state from {args.source}")
    print(f"run the pipeline from it with: timelapse run {quote(args.sql)} --state {quote(args.dir)}")
    return EXIT_OK
