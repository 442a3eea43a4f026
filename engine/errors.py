"""The engine's one error type: every error `engine/` raises on purpose is an `EngineError` carrying the exit code
the CLI ends with, so the CLI (`cli.guarded`) and the damage check (`pipeline.NOT_DAMAGE`) look at the base classes
here, not at a list of modules' classes.

- `UserError` (2): the SQL, an option, a connector path, a request (rollback, savepoint, history) or the data
  cannot be carried out as given; the message says what to change.
- `Busy` (3): another process holds the state directory (or took it over).
- `StorageFailure` (5): the state directory's files are damaged; the message names them and what was done.

The classes keep the builtin bases they had (`ValueError`, `LookupError`, `RuntimeError`) next to these, so code
that catches those still does. The sql layer has its own type (`sql.errors.SqlError`), which the CLI maps to 2.
"""

from __future__ import annotations

EXIT_INTERNAL, EXIT_USER, EXIT_BUSY, EXIT_STORAGE = 1, 2, 3, 5


class EngineError(Exception):
    """An error the engine raises on purpose; `exit_code` is what the CLI exits with, after `error: <message>`."""

    exit_code: int = EXIT_INTERNAL


class UserError(EngineError):
    """What the user asked for cannot be done as given (bad options, paths, requests or data)."""

    exit_code = EXIT_USER


class Busy(EngineError):
    """The state directory belongs to another process."""

    exit_code = EXIT_BUSY


class StorageFailure(EngineError):
    """The state directory's files are damaged."""

    exit_code = EXIT_STORAGE


class VersioningError(UserError, ValueError):
    """A savepoint, rollback, branch or epoch request that cannot be carried out as asked (the manifest's rows
    do not have what it names)."""


class WorkerLost(EngineError):
    """A worker of a scaled-out run (the Ray executor) died during an epoch: the epoch is abandoned, and the run
    starts new workers from the last checkpoint and replays, as a restarted process would."""
