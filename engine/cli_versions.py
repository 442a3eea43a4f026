"""The commands that change a state directory's history: savepoint, rollback, checkpoint, branch, retention."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.cli_types import EXIT_OK, UsageError
from engine.storage import location


def cmd_savepoint(args: argparse.Namespace) -> int:
    from engine import control, versioning

    if args.action == "create":
        if not args.name:
            raise UsageError("savepoint create needs --name")
        # engine.control: done here on a stopped directory, handed to the running pipeline otherwise
        result: Any = control.savepoint(args.dir, args.name, args.epoch, reason=args.reason)
        message = f"savepoint '{result['savepoint']}' marks epoch {result['epoch']}"
    elif args.action == "delete":
        if not args.name:
            raise UsageError("savepoint delete needs --name")
        result = control.delete_savepoint(args.dir, args.name, reason=args.reason)
        message = f"savepoint '{args.name}' deleted"
    else:
        table = versioning.savepoints(args.dir)
        result = [{**row, "created_at": row["created_at"].isoformat()} for row in table.iter_rows(named=True)]
        message = (
            "\n".join(f"{r['name']:<24} epoch {r['epoch']:>8}  {r['created_at']}  {r['user'] or ''}" for r in result)
            or "no savepoints"
        )
    print(json.dumps(result) if args.json else message)
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    import datetime as dt

    from engine import control

    timestamp = None
    if args.timestamp:
        try:
            timestamp = dt.datetime.fromisoformat(args.timestamp)
        except ValueError:
            raise UsageError(f"'{args.timestamp}' is not an ISO timestamp") from None
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=dt.UTC)
    result = control.rollback(  # a running pipeline rolls back at its next epoch boundary and runs on
        args.dir,
        epoch=args.to_epoch,
        savepoint=args.savepoint,
        timestamp=timestamp,
        reason=args.reason,
        force=args.force,
    )
    if args.json:
        print(json.dumps(result))
    else:
        compensated = "".join(
            f"; Kafka '{name}' (topic {c['topic']}): {c['keys']} keys compensated"
            for name, c in sorted(result.get("compensated", {}).items())
        )
        print(
            f"rolled back to epoch {result['rolled_back_to']}: {result['tables']} tables restored{compensated}; "
            f"the next run starts at epoch {result['next_epoch']} from that epoch's offsets"
        )
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    import getpass

    from engine.pipeline import request_checkpoint

    request_checkpoint(args.dir, user=getpass.getuser())  # the checkpoint row names who asked (requested_by)
    print("checkpoint requested: the running pipeline takes it at its next epoch boundary")
    return EXIT_OK


def cmd_branch(args: argparse.Namespace) -> int:
    from engine import upgrade
    from engine.branching import create_branch
    from engine.pipeline import upgrade_check

    kind, value = args.origin
    if kind not in ("savepoint", "epoch"):
        raise UsageError("--from takes 'savepoint NAME' or 'epoch N'")
    if kind == "epoch" and not value.isdigit():
        raise UsageError(f"--from epoch needs a number, not '{value}'")
    sinks = {}
    for item in args.sink or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--sink takes NAME=PATH, not '{item}'")
        sinks[name] = str(location(path).resolve())
    result = create_branch(
        args.dir,
        args.new_dir,
        savepoint=value if kind == "savepoint" else None,
        epoch=int(value) if kind == "epoch" else None,
        sink_paths=sinks,
    )
    report = upgrade_check(Path(args.sql), args.new_dir, load_udfs(args.udf)) if args.sql else None
    if args.json:
        print(json.dumps({**result, "upgrade": upgrade.as_json(report) if report is not None else None}))
        return EXIT_OK
    origin = (
        f"savepoint '{result['savepoint']}' (epoch {result['from_epoch']})"
        if result["savepoint"]
        else (f"epoch {result['from_epoch']}")
    )
    print(f"branch {result['branch']} created from {origin}")
    for name, path in result["sinks"].items():
        print(f"  sink {name} -> {path}")
    if report is not None:
        print(f"with {args.sql}:\n{upgrade.render(report)}")
        if upgrade.refusal(report):
            print("run it with --allow-non-restored-state to start the changed operators empty")
    print(f"run it with: timelapse run {args.sql or 'PIPELINE.sql'} --state {args.new_dir}")
    return EXIT_OK


def cmd_retention(args: argparse.Namespace) -> int:
    from engine import control
    from engine.state_dir import StateDir

    directory = StateDir(location(args.dir))
    if not directory.manifest.exists():
        raise FileNotFoundError(f"{args.dir} is not a timelapse state directory")
    report = control.retention(args.dir, args.count, args.age, reason=args.reason)
    if args.json:
        print(json.dumps(report))
    elif not report["expired_epochs"] and "oldest_epoch" not in report:
        print("nothing to free")
    else:
        print(
            f"{report['expired_epochs']} checkpoints freed; epochs from {report['oldest_epoch']} on stay readable "
            f"({report['policy']}); {report['data_files_removed']} data files and "
            f"{report['log_entries_removed']} log entries removed"
        )
    return EXIT_OK


def load_udfs(paths: Sequence[str] | None) -> dict[str, Any]:
    """Import Python files whose `@udf` functions register themselves."""
    import importlib.util

    from sql.udf import REGISTRY

    for index, path in enumerate(paths or []):
        spec = importlib.util.spec_from_file_location(f"timelapse_udfs_{index}", path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import UDF file {path}")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return dict(REGISTRY)
