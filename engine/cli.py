"""The `timelapse` command line.

Exit codes: 0 success, 1 internal error, 2 a user error (bad SQL, bad options), 3 the state directory is
busy (or its lease was taken over), 4 `verify` found problems, 5 storage failure (disk full, damaged files),
130 interrupted. A user error is one line on stderr, never a traceback (TIMELAPSE_DEBUG=1 shows one).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.cli_history import cmd_diff, cmd_log, cmd_sql, cmd_state, cmd_verify
from engine.cli_types import (
    EXIT_OK,
    OneLineParser,
    UsageError,
    checked,
    epoch,
    output_flags,
    register_storage_options,
    storage_option_flag,
    storage_options,
    whole,
)
from engine.cli_versions import cmd_branch, cmd_checkpoint, cmd_retention, cmd_rollback, cmd_savepoint, load_udfs
from engine.progress import Progress, render_summary
from engine.storage import location
from sql import durations

EXIT_INTERNAL, EXIT_USER, EXIT_BUSY, EXIT_STORAGE = 1, 2, 3, 5
EXIT_INTERRUPTED = 130


def parse_duration(text: str) -> float:
    try:
        return durations.parse_duration(text)
    except ValueError as err:
        raise UsageError(str(err)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from engine.pipeline import Pipeline

    if args.once and args.trigger:
        raise UsageError("--once and --trigger exclude each other")
    from engine.checkpoint_policy import checkpoint_policy

    try:
        checkpoint_policy(args.checkpoint_interval, args.checkpoint_state_growth)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.allowed_root:
        from engine.paths import ROOTS_VARIABLE

        configured = [p for p in os.environ.get(ROOTS_VARIABLE, "").split(os.pathsep) if p]
        os.environ[ROOTS_VARIABLE] = os.pathsep.join(configured + args.allowed_root)
    options = storage_options(args)
    from engine import savepoint_export

    savepoint_export.refuse_run_on_export(args.state, bool(args.from_savepoint))  # an export is only read
    if args.metrics_port is not None:
        from engine.console.metrics import serve_metrics  # the ui extra; refused with one line without it

        serve_metrics(args.state, args.metrics_port, args.metrics_host, options)
    pipeline = Pipeline.from_sql(Path(args.file), state=args.state, udfs=load_udfs(args.udf), storage_options=options)
    if args.from_savepoint:  # the export's cut becomes the new directory's first checkpoint, checksums checked
        savepoint_export.start_pipeline(pipeline, location(args.from_savepoint, options or None))
    progress = Progress(enabled=not args.quiet)
    summary = pipeline.run(
        once=args.once,
        trigger=parse_duration(args.trigger) if args.trigger else 1.0,
        max_epochs=args.max_epochs,
        max_epoch_rows=args.max_epoch_rows,
        drain=args.drain,
        on_epoch=progress,
        checkpoint_interval=args.checkpoint_interval,
        checkpoint_state_growth=args.checkpoint_state_growth,
        retain_count=args.retain,
        retain_age=args.retain_age,
        allow_non_restored_state=args.allow_non_restored_state,
        parallelism=args.parallelism,
        on_upgrade=_print_upgrade,
        on_fallback=_print_fallback,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        on_worker_lost=lambda why: print(
            f"warning: {why}; new workers restore the last checkpoint and replay", file=sys.stderr
        ),
    )
    progress.finish()
    if args.json:
        print(json.dumps(summary))
    else:
        print(render_summary(summary), file=sys.stderr)
    return EXIT_INTERRUPTED if summary["stopped"] == "interrupted" else EXIT_OK


def _print_fallback(report: dict[str, Any]) -> None:
    if "message" in report:  # a repair that is not a rollback (the manifest's log, the offset log)
        print(f"warning: the state to resume from is damaged: {report['message']}", file=sys.stderr)
        return
    print(
        f"warning: the state to resume from is damaged ({report['damage']}); fell back to epoch "
        f"{report['fell_back_to']}, the newest checkpoint that reads cleanly. Sinks, state and offsets were rolled "
        "back together and the epochs after it are recomputed from the sources"
        + (f"; damaged log entries were moved to {Path(report['set_aside'][0]).parent}" if report["set_aside"] else ""),
        file=sys.stderr,
    )


def _print_upgrade(changes: list[Any]) -> None:
    from engine import upgrade

    print(f"the SQL changed; state of the stateful operators:\n{upgrade.render(changes)}", file=sys.stderr)


def cmd_upgrade_check(args: argparse.Namespace) -> int:
    from engine import upgrade
    from engine.pipeline import upgrade_check

    changes = upgrade_check(Path(args.file), args.dir, load_udfs(args.udf))
    refused = upgrade.refusal(changes)
    if args.json:
        print(json.dumps({"operators": upgrade.as_json(changes), "refused": refused is not None}))
    else:
        print(upgrade.render(changes))
        if refused:
            print("timelapse run would refuse this change unless --allow-non-restored-state is given")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from engine.python_functions import loader
    from sql import plan_script

    path = Path(args.file)
    plan = plan_script(path.read_text(), load_udfs(args.udf), loader(path.resolve().parent))
    if args.json:
        print(json.dumps({"fingerprint": plan.fingerprint, "plan": plan.explain().splitlines()}))
    else:
        print(plan.explain())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    return run_demo(Path(args.dir), as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    from sql import options as rules
    from sql.plan import KEY_GROUPS

    parser = OneLineParser(prog="timelapse", description="Streaming SQL with time-travelling state.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a pipeline (a .sql file of CREATE TABLE and INSERT INTO statements)")
    run.add_argument("file")
    run.add_argument("--state", required=True, help="state directory: manifest, offsets, dead letters")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="process everything available now, then exit")
    mode.add_argument(
        "--trigger",
        type=checked(rules.duration),
        help="run continuously, one epoch per interval (e.g. 500ms, 2s); default 1s",
    )
    mode.add_argument(
        "--drain",
        action="store_true",
        help="process everything available now, then move every watermark to the end of time so that every "
        "window, session and join padding fires, and exit; later rows are late (roll back to undo)",
    )
    run.add_argument("--max-epochs", type=whole(1), help="stop after N epochs")
    run.add_argument("--max-epoch-rows", type=whole(1), help="at most N rows from each source per epoch")
    run.add_argument(
        "--checkpoint-interval",
        type=checked(rules.checkpoint_interval),
        help="make epochs durable every '5 epochs' or every '10s' (default: every epoch, or SET 'checkpoint.interval')",
    )
    run.add_argument(
        "--checkpoint-state-growth",
        type=checked(rules.size),
        help="also checkpoint once operator state has grown by this much, e.g. '64 MB' "
        "(alone: every 60 s or on that growth)",
    )
    run.add_argument(
        "--retain",
        type=checked(rules.retention_count),
        help="keep the last N checkpoints readable, or 'all' (default 1000, or SET 'checkpoint.retention.count')",
    )
    run.add_argument(
        "--retain-age", type=checked(rules.duration), help="also keep every checkpoint younger than this (e.g. '7 d')"
    )
    run.add_argument(
        "--allowed-root",
        action="append",
        metavar="DIR",
        help="connectors may only read and write under DIR (repeatable; adds to $TIMELAPSE_ALLOWED_ROOTS)",
    )
    run.add_argument(
        "--parallelism",
        type=whole(1, maximum=KEY_GROUPS),
        metavar="N",
        help="worker threads for GROUP BY aggregations (1-128; may change between runs)",
    )
    run.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: --workers Ray actors (the ray extra; docs/scale-out.md)",
    )
    run.add_argument(
        "--workers",
        type=whole(1, maximum=KEY_GROUPS),
        metavar="N",
        help="with --executor ray: N workers, each owning a range of the key groups (may change between runs)",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --executor ray: join the Ray cluster at ADDR (host:port) instead of starting a local one",
    )
    run.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="run changed SQL even if some operators' state cannot be restored (they start empty)",
    )
    run.add_argument(
        "--from-savepoint",
        metavar="EXPORT",
        help="start from a savepoint export (`timelapse savepoint export`); --state must be new or empty",
    )
    run.add_argument("--udf", action="append", help="a Python file defining @udf functions (repeatable)")
    run.add_argument(
        "--metrics-port", type=whole(0, maximum=65535), metavar="N", help="serve Prometheus metrics on port N"
    )
    run.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
    run.add_argument("--json", action="store_true", help="print the final summary as JSON on stdout")
    run.add_argument("--quiet", action="store_true", help="no live progress line")
    run.set_defaults(handler=cmd_run)

    explain = commands.add_parser("explain", help="print the plan: operators, inputs, stateless or stateful")
    explain.add_argument("file")
    explain.add_argument("--udf", action="append")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(handler=cmd_explain)

    savepoint = commands.add_parser(
        "savepoint",
        help="name an epoch so that you can roll back to it",
        epilog="To write a savepoint as a portable snapshot: `timelapse savepoint export --help`.",
    )
    savepoint.add_argument("action", choices=["create", "list", "delete"])
    savepoint.add_argument("dir", help="the state directory")
    savepoint.add_argument("--name")
    savepoint.add_argument("--epoch", type=epoch, help="the epoch to name (default: the latest)")
    savepoint.add_argument("--reason", help="recorded in the manifest with your user name")
    savepoint.add_argument("--json", action="store_true")
    savepoint.set_defaults(handler=cmd_savepoint)

    rollback = commands.add_parser("rollback", help="roll state, source offsets and Delta sinks back together")
    rollback.add_argument("dir", help="the state directory")
    target = rollback.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-epoch", type=epoch)
    target.add_argument("--savepoint")
    target.add_argument("--timestamp", help="the last epoch committed at or before this time (ISO, UTC)")
    rollback.add_argument("--reason", help="recorded in the manifest")
    rollback.add_argument(
        "--force", action="store_true", help="roll back even if a non-rollbackable sink (print) will repeat output"
    )
    rollback.add_argument("--json", action="store_true")
    rollback.set_defaults(handler=cmd_rollback)

    checkpoint = commands.add_parser("checkpoint", help="ask a running pipeline for a checkpoint now")
    checkpoint.add_argument("dir", help="the state directory")
    checkpoint.set_defaults(handler=cmd_checkpoint)

    branch = commands.add_parser("branch", help="start an independent pipeline from a savepoint or an epoch")
    branch.add_argument("dir", help="the state directory to branch from")
    branch.add_argument("new_dir", help="the branch's state directory (new)")
    branch.add_argument(
        "--from", dest="origin", nargs=2, required=True, metavar=("savepoint|epoch", "NAME|N"), help="the cut to copy"
    )
    branch.add_argument(
        "--sink", action="append", metavar="NAME=PATH", help="where the branch writes sink NAME (default: beside it)"
    )
    branch.add_argument("--sql", help="the branch's SQL, if it differs: shows what state it keeps")
    branch.add_argument("--udf", action="append")
    branch.add_argument("--json", action="store_true")
    branch.set_defaults(handler=cmd_branch)

    check = commands.add_parser(
        "upgrade-check", help="which operators' state changed SQL would keep, start empty, drop or refuse"
    )
    check.add_argument("dir", help="the state directory")
    check.add_argument("file", help="the new .sql file")
    check.add_argument("--udf", action="append")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=cmd_upgrade_check)

    state = commands.add_parser(
        "state",
        help="an operator's state as of an epoch, savepoint or time",
        epilog="To change state: `timelapse state edit --help` and `timelapse state bootstrap --help`.",
    )
    state.add_argument("dir", help="the state directory")
    state.add_argument("operator", help="the operator id (see `timelapse sql DIR 'SHOW TABLES'` or h.operators())")
    state.add_argument("--at", help="an epoch number, a savepoint name or an ISO time (default: now)")
    state.add_argument("--all-columns", action="store_true", help="also show the key-group column _kg")
    output_flags(state)
    state.set_defaults(handler=cmd_state)

    diff = commands.add_parser("diff", help="keys inserted, deleted and changed in an operator's state between A and B")
    diff.add_argument("dir", help="the state directory")
    diff.add_argument("operator")
    diff.add_argument("a", help="epoch, savepoint or time")
    diff.add_argument("b", help="epoch, savepoint or time")
    output_flags(diff)
    diff.set_defaults(handler=cmd_diff)

    sql = commands.add_parser(
        "sql", help="read-only DuckDB SQL over state and sinks, with AS OF EPOCH / SAVEPOINT / TIMESTAMP"
    )
    sql.add_argument("dir", help="the state directory")
    sql.add_argument("query")
    output_flags(sql)
    sql.set_defaults(handler=cmd_sql)

    check_dir = commands.add_parser("verify", help="check every table and version the manifest names")
    check_dir.add_argument("dir", help="the state directory")
    check_dir.add_argument(
        "--deep", action="store_true", help="read every retained checkpoint's rows, not only the current cut's"
    )
    check_dir.add_argument("--json", action="store_true")
    check_dir.set_defaults(handler=cmd_verify)

    retain = commands.add_parser("retention", help="free the checkpoints a retention policy no longer keeps")
    retain.add_argument("dir", help="the state directory")
    retain.add_argument(
        "--count", type=checked(rules.retention_count), help="keep the last N checkpoints (default 1000)"
    )
    retain.add_argument(
        "--age", type=checked(rules.duration), help="also keep every checkpoint younger than this (e.g. '2 h')"
    )
    retain.add_argument("--reason", help="recorded in the manifest")
    retain.add_argument("--json", action="store_true")
    retain.set_defaults(handler=cmd_retention)

    log = commands.add_parser("log", help="the history: epochs, savepoints and rollbacks")
    log.add_argument("dir", help="the state directory")
    log.add_argument("--json", action="store_true")
    log.set_defaults(handler=cmd_log)

    demo = commands.add_parser(
        "demo", help="the story in a minute: a pipeline, a savepoint, a bad deploy, a diff, a rollback"
    )
    demo.add_argument("--dir", default="timelapse-demo", help="where the demo writes its files")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=cmd_demo)
    from engine import cli_blame, cli_compare, cli_console, cli_export, cli_state_edit

    console_commands = [
        parser
        for module in (cli_console, cli_state_edit, cli_export, cli_compare, cli_blame)
        for parser in module.add_commands(commands)
    ]
    for first, second in TWO_WORD_COMMANDS:  # usage lines and errors name them as they are typed
        commands.choices[f"{first}-{second}"].prog = f"{parser.prog} {first} {second}"
    for command in (
        run,
        savepoint,
        rollback,
        checkpoint,
        branch,
        state,
        diff,
        sql,
        check_dir,
        retain,
        log,
        *console_commands,
    ):
        storage_option_flag(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from engine.native_stderr import without_panic_text

    args = build_parser().parse_args(_two_word_commands(list(sys.argv[1:] if argv is None else argv)))
    with without_panic_text():  # Rust panic text is written to fd 2 by native code: filtered out there
        return guarded(lambda: _handle(args))


#: `timelapse state edit ...` is the parser `state-edit`: `timelapse state DIR OP` keeps its positional form
TWO_WORD_COMMANDS = {("state", "edit"), ("state", "bootstrap"), ("savepoint", "export")}


def _two_word_commands(argv: list[str]) -> list[str]:
    if len(argv) >= 2 and (argv[0], argv[1]) in TWO_WORD_COMMANDS:
        return [f"{argv[0]}-{argv[1]}", *argv[2:]]
    return argv


def _handle(args: argparse.Namespace) -> int:
    register_storage_options(args, storage_options(args))
    return int(args.handler(args))


def guarded(action: Callable[[], int]) -> int:
    from engine.errors import EngineError
    from engine.verify import first_line
    from sql.errors import SqlError

    try:
        return action()
    except (SqlError, FileNotFoundError) as err:  # UsageError is a UserError
        # (first line, whole: an error raised inside a Polars expression, a UDF's, comes back with the expression
        # added on the lines after it)
        print(f"error: {(str(err).strip() or type(err).__name__).splitlines()[0]}", file=sys.stderr)
        return EXIT_USER
    except EngineError as err:  # each layer's errors carry their exit code (engine.errors)
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `timelapse ... | head`: the reader has what it wanted; no error, nothing more to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit does not fail again
        return EXIT_OK
    except BaseException as err:  # Exception, and the panics of Rust libraries (pyo3's PanicException)
        if isinstance(err, SystemExit | GeneratorExit):
            raise
        if _disk_full(err):
            print(
                f"error: the disk is full ({first_line(err)}). Nothing after the last checkpoint was committed; "
                "free some space and run again: the pipeline resumes from that checkpoint",
                file=sys.stderr,
            )
            return EXIT_STORAGE
        if os.environ.get("TIMELAPSE_DEBUG"):
            traceback.print_exc()
        print(
            f"internal error: {type(err).__name__}: {first_line(err)} (TIMELAPSE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _disk_full(err: BaseException) -> bool:
    """ENOSPC, raised by Python or reported by a Rust library (delta-rs, Polars) in its message."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(seen) or "os error 28" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
