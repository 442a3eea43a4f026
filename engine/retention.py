"""Retention: which checkpoints stay readable, and the clean-up that frees everything else.

Delta's own clocks never delete anything here (`delta_tables.KEEP_HISTORY`); this module is the only place
that does, and it decides from the manifest:

- a checkpoint is *retained* if it is among the last `count` checkpoints, or younger than `age`;
- a live savepoint is always retained, whatever its age;
- the current cut (the last epoch or rollback) is always retained.

For every table the retained rows name, the Delta versions they name are kept and the rest is freed:
`vacuum(keep_versions=...)` removes data files that no kept version reads, and log entries older than the
last Delta checkpoint at or before the oldest kept version are deleted. Delta's `cleanup_metadata()` cannot
be used for that last step: it judges log files by their modification time against a table property, so it
cannot spare one chosen version (delta-facts §4-5); the engine deletes exactly the entries it no longer
needs instead. The offset log is folded up to the oldest retained epoch, except the files of the epochs the
oldest retained checkpoint and every live savepoint committed (from the checkpoint before each, plus one).
Every pass is a manifest row (kind `retention`) that says which epochs went, so readers can explain why an
epoch cannot be opened, and where the epochs of those checkpoints start (their previous rows go).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable

from engine import delta_tables, faults
from engine.delta_tables import NO_CLEANUP, before_removals, open_table
from engine.errors import UserError
from engine.manifest import (
    RESUMABLE,
    Manifest,
    checkpoint_from_row,
    entries,
    live_savepoints,
    read_checkpoints,
    savepoint_rows,
)
from engine.offset_log import OffsetLog
from engine.state_dir import StateDir
from engine.storage import delete_files, location
from sql import durations

DEFAULT_COUNT = 1000
#: the runner applies retention after this many checkpoints
EVERY_CHECKPOINTS = 100
MANIFEST_GRACE_VERSIONS = 100

_LOG_ENTRY = re.compile(r"^(\d{20})\.(json|crc|checkpoint\.parquet|checkpoint\.\d+\.\d+\.parquet)$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?\.parquet$")


class RetentionError(UserError, ValueError):
    """A retention setting that cannot be understood."""


@dataclass(frozen=True)
class RetentionPolicy:
    #: keep the last `count` checkpoints (None: no limit by count)
    count: int | None = DEFAULT_COUNT
    #: and every checkpoint younger than this (None: no limit by age)
    age: dt.timedelta | None = None

    @property
    def every(self) -> int:
        """How many checkpoints the runner lets pass between two retention passes."""
        return max(1, min(EVERY_CHECKPOINTS, self.count or EVERY_CHECKPOINTS))

    @property
    def keeps_everything(self) -> bool:
        return self.count is None and self.age is None

    def describe(self) -> str:
        if self.keeps_everything:
            return "keep every checkpoint"
        parts = []
        if self.count is not None:
            parts.append(f"the last {self.count} checkpoints")
        if self.age is not None:
            parts.append(f"checkpoints younger than {self.age}")
        return "keep " + " and ".join(parts) + ", and every savepoint"


def policy_from_options(options: dict[str, str], count: str | None = None, age: str | None = None) -> RetentionPolicy:
    """The policy from `SET 'checkpoint.retention.count' / '...age'` (CLI flags win).

    A count of `all` (or `unlimited`) keeps every checkpoint; an age alone means "only by age".
    """
    count_text = count if count is not None else options.get("checkpoint.retention.count")
    age_text = age if age is not None else options.get("checkpoint.retention.age")
    try:
        parsed_age = dt.timedelta(seconds=durations.parse_duration(age_text)) if age_text else None
    except ValueError as err:
        raise RetentionError(f"'checkpoint.retention.age': {err}") from None
    if count_text is None:
        return RetentionPolicy(count=None if parsed_age else DEFAULT_COUNT, age=parsed_age)
    text = count_text.strip().lower()
    if text in ("all", "unlimited", "none"):
        return RetentionPolicy(count=None, age=parsed_age)
    if not text.isdigit() or int(text) < 1:
        raise RetentionError(f"'checkpoint.retention.count' must be a positive number or 'all', not '{count_text}'")
    return RetentionPolicy(count=int(text), age=parsed_age)


def expired_before(state: str | Path) -> int | None:
    """Epochs below this were removed by retention (savepoints excepted); None if nothing was removed."""
    rows = read_checkpoints(StateDir(location(state)).manifest).filter(pl.col("kind") == "retention")
    if rows.is_empty():
        return None
    return int(json.loads(rows.row(-1, named=True)["metrics"])["oldest_epoch"])


def apply(
    directory: StateDir, policy: RetentionPolicy, reason: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """Free every checkpoint the policy does not keep. The caller holds the directory's lock."""
    rows = read_checkpoints(directory.manifest)
    if policy.keeps_everything or rows.is_empty():
        return {"expired_epochs": 0}
    resumable = rows.filter(pl.col("kind").is_in(list(RESUMABLE))).with_row_index("_n")
    if resumable.is_empty():
        return {"expired_epochs": 0}
    keep = pl.col("_n") == resumable.height - 1
    if policy.count is not None:
        keep |= pl.col("_n") >= resumable.height - policy.count
    if policy.age is not None:
        keep |= pl.col("committed_at") >= dt.datetime.now(dt.UTC) - policy.age
    retained = resumable.filter(keep).drop("_n")
    oldest_epoch = int(retained.get_column("epoch").min())  # type: ignore[arg-type]
    previous = expired_before(directory.root) or 0
    expired = rows.filter(
        (pl.col("kind") == "epoch") & (pl.col("epoch") < oldest_epoch) & (pl.col("epoch") >= previous)
    ).height
    kept_versions = _versions_by_table(retained)
    saved_epochs = [int(sp["epoch"]) for sp in live_savepoints(rows).values()]
    saved_rows = rows.filter((pl.col("kind") == "epoch") & pl.col("epoch").is_in(saved_epochs))
    # and the savepoints' own rows: an edited savepoint (engine.state_edit) names versions no epoch row does
    saved_versions = _versions_by_table(
        pl.concat([saved_rows, pl.DataFrame(list(savepoint_rows(rows).values()), schema=rows.schema)])
    )

    files_removed = log_entries_removed = 0
    faults.point("retention.vacuum.before")
    times = [retained.get_column("committed_at").min(), saved_rows.get_column("committed_at").min()]
    horizon = tombstone_horizon(min(t for t in times if t is not None))  # type: ignore[type-var,arg-type]
    for path in sorted(set(kept_versions) | set(saved_versions)):
        table = open_table(location(path))
        if table is None:
            continue
        _expire_tombstones(table, horizon)
        # A Delta checkpoint at today's head lets a later pass delete the log up to here.
        table.create_checkpoint()
        saved = saved_versions.get(path, set())
        oldest = min(kept_versions.get(path) or {int(table.version())})
        files_removed += len(
            table.vacuum(
                retention_hours=0,
                dry_run=False,
                enforce_retention_duration=False,
                keep_versions=sorted(_protecting(table, oldest) | saved),
                commit_properties=CommitProperties(custom_metadata={"timelapse.retention": "vacuum"}),
                post_commithook_properties=NO_CLEANUP,
            )
        )
        log_entries_removed += prune_log(location(path), min({oldest} | saved))
        faults.point("retention.vacuum.during")
    expired_rows = _forget_expired_epochs(directory.manifest, oldest_epoch, saved_epochs)
    _trim_manifest(directory.manifest, horizon)
    # The slices the oldest retained checkpoint and each savepoint committed stay readable (blame shows them),
    # and where each one's epochs start is recorded: the row of the checkpoint before it goes.
    # (A retained rollback's state is its target's, a checkpoint whose own row may be below the oldest epoch.)
    targets = [
        int(json.loads(m or "{}").get("rollback", {}).get("to_epoch", oldest_epoch))
        for m in retained.filter(pl.col("kind") == "rollback").get_column("metrics").to_list()
    ]
    starts = {cp: covered_from(rows, cp) for cp in {oldest_epoch, *saved_epochs, *targets}}
    read_by_kept = {e for cp, start in starts.items() for e in range(start, cp + 1)}
    OffsetLog(directory.offsets).fold(until_epoch=oldest_epoch, keep=read_by_kept)

    before = rows.filter(pl.col("kind") == "retention")
    previous_policy = json.loads(before.row(-1, named=True)["metrics"]).get("policy") if before.height else None
    report = {
        "oldest_epoch": oldest_epoch,
        "expired_epochs": expired,
        "policy": policy.describe(),
        "tables": len(set(kept_versions) | set(saved_versions)),
        "data_files_removed": files_removed,
        "log_entries_removed": log_entries_removed,
        "manifest_rows_removed": expired_rows,
        "covered_from": {str(cp): start for cp, start in sorted(starts.items())},
        "user": user or getpass.getuser(),
        "reason": reason,
        # a changed policy is what frees many epochs at once: say so
        **(
            {"policy_changed_from": previous_policy} if previous_policy and previous_policy != policy.describe() else {}
        ),
    }
    last = checkpoint_from_row(resumable.row(-1, named=True))
    faults.point("retention.before-manifest")
    Manifest(directory.manifest).commit(dataclasses.replace(last, kind="retention", committed_at=None, metrics=report))
    return report


def covered_from(rows: pl.DataFrame, epoch: int) -> int:
    """The first epoch checkpoint `epoch` committed: the one after the resumable row before it (epoch numbers
    only grow, a rollback row carrying the latest), or as an earlier pass recorded it once that row went."""
    before = rows.filter(pl.col("kind").is_in(list(RESUMABLE)) & (pl.col("epoch") < epoch)).get_column("epoch")
    recorded = [
        int(json.loads(m or "{}").get("covered_from", {}).get(str(epoch), 0))
        for m in rows.filter(pl.col("kind") == "retention").get_column("metrics").to_list()
    ]
    return max([int(before.max() or 0) + 1, *recorded])  # type: ignore[arg-type]


TOMBSTONES = "delta.deletedFileRetentionDuration"


def tombstone_horizon(oldest: dt.datetime) -> str:
    """How long Delta should remember removed files: back to the oldest retained checkpoint, in whole minutes,
    plus one."""
    age = dt.datetime.now(dt.UTC) - oldest
    return f"interval {int(age.total_seconds() // 60) + 2} minutes"


def _expire_tombstones(table: DeltaTable, horizon: str) -> None:
    """Every Delta checkpoint repeats a `remove` entry for each file removed within the table's
    deletedFileRetentionDuration. Left at the creation value (a century), checkpoints grow with every compaction
    ever made, and so do disk use and commit time. Retention does not need them (it names the versions to keep),
    so they are kept only as far back as the oldest retained checkpoint, which also keeps an outside `vacuum()`
    with default settings from deleting files a retained checkpoint reads."""
    if table.metadata().configuration.get(TOMBSTONES) != horizon:
        table.alter.set_table_properties({TOMBSTONES: horizon}, post_commithook_properties=NO_CLEANUP)


def _versions_by_table(rows: pl.DataFrame) -> dict[str, set[int]]:
    versions: dict[str, set[int]] = {}
    for row in rows.select("tables").iter_rows(named=True):
        for entry in entries(row):
            versions.setdefault(entry.path, set()).add(entry.version)
    return versions


def _protecting(table: DeltaTable, oldest: int) -> set[int]:
    """Versions whose files together cover every version from `oldest` to the head: `oldest` and the version
    before each later commit that removed files (`delta_tables.before_removals`), far cheaper than loading every
    kept version: appends remove nothing, and compactions are rare."""
    head = int(table.version())
    return {oldest} | before_removals(table.history(limit=max(1, head - oldest)), oldest, head)


def prune_log(path: Path, oldest_kept: int) -> int:
    """Delete the log entries before the last Delta checkpoint at or before `oldest_kept`.

    Reading version v needs a checkpoint at or before v and every commit after it up to v, so everything
    older than that checkpoint can go; without such a checkpoint nothing is deleted.
    """
    log = path / "_delta_log"
    names = [p.name for p in log.iterdir()]
    checkpoints = [int(m.group(1)) for n in names if (m := _CHECKPOINT.match(n)) and int(m.group(1)) <= oldest_kept]
    if not checkpoints:
        return 0
    boundary = max(checkpoints)
    # One DeleteObjects per 1,000 entries on an object store, not a request per entry.
    return delete_files(log / n for n in names if (m := _LOG_ENTRY.match(n)) and int(m.group(1)) < boundary)


def _forget_expired_epochs(path: Path, oldest_epoch: int, saved_epochs: list[int]) -> int:
    """Delete the manifest rows of epochs that can no longer be read, or the manifest would grow by a row per
    epoch forever. Savepoints' epochs and every other kind of row (rollbacks, savepoints, retention passes: the
    audit trail) stay; the retention rows say which epochs went."""
    table = delta_tables.delta(path)
    kept = ", ".join(str(e) for e in saved_epochs) or "-1"
    result = table.delete(
        f"kind = 'epoch' AND epoch < {oldest_epoch} AND epoch NOT IN ({kept})",
        post_commithook_properties=NO_CLEANUP,
    )
    return int(result.get("num_deleted_rows", 0))


def _trim_manifest(path: Path, horizon: str) -> None:
    """The manifest is read at its latest version only: keep the files of its last 100 versions (a reader that
    opened one a moment ago can still finish) and free the rest; its log is kept from the checkpoint before last."""
    table = delta_tables.delta(path)
    _expire_tombstones(table, horizon)
    table = delta_tables.delta(path)
    # Versions whose log an earlier pass deleted cannot be loaded, so they cannot be kept either.
    oldest = max(_loadable_from(path), int(table.version()) - MANIFEST_GRACE_VERSIONS)
    table.vacuum(
        retention_hours=0,
        dry_run=False,
        enforce_retention_duration=False,
        keep_versions=sorted(_protecting(table, oldest)),
        post_commithook_properties=NO_CLEANUP,
    )
    checkpoints = sorted(int(m.group(1)) for p in (path / "_delta_log").iterdir() if (m := _CHECKPOINT.match(p.name)))
    if len(checkpoints) >= 2:
        prune_log(path, checkpoints[-2])


def _loadable_from(path: Path) -> int:
    """The oldest version of a table whose log is complete: version 0, or its oldest Delta checkpoint."""
    log = path / "_delta_log"
    if (log / f"{0:020d}.json").exists():
        return 0
    checkpoints = [int(m.group(1)) for p in log.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return min(checkpoints, default=0)
