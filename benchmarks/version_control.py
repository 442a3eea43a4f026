"""Version control for state: the cost of `state edit`, `savepoint export`, `compare` and `blame` against state size.

    python -m benchmarks.version_control [--keys 10000,100000,1000000] [--repeat 3] [--record]

A GROUP BY over N keys (datagen), upserted into a Delta sink, runs one epoch that fills state and sink with N
keys, then 10 epochs that change 1 % of them; savepoint `sp` names the last. Then, each repeated and reported as
median (min-max):
- `edit 1 key`: `state edit` of one key's counter at `sp` (a new savepoint each time);
- `edit 1 %`: `state edit` deleting 1 % of the keys;
- `export`: `savepoint export` of `sp` with its sink (compacted state, checksums), and its size beside the
  original directory's;
- `compare`: a branch from the 1 %-deleted savepoint and the parent each run 5 more epochs over the same input;
  `engine.compare` of their sink and of the operator's state at the current cut, and the sink's per-epoch counts;
- `blame`: one key's changes over the 16 checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import engine
from benchmarks.record import record
from engine import versioning
from engine.branching import create_branch
from engine.runner import Runner
from sql import plan_script

SQL = """
SET 'checkpoint.retention.count' = 'all';
CREATE TABLE events (k BIGINT, v DOUBLE, ts TIMESTAMP(3))
WITH ('connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '1000000000',
      'fields.k.min' = '0', 'fields.k.max' = '{max_key}');
CREATE TABLE totals (k BIGINT, n BIGINT, total DOUBLE, PRIMARY KEY (k) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = '{root}/totals');
INSERT INTO totals SELECT /*+ STATE_ID('totals') */ k, COUNT(*), SUM(v) FROM events GROUP BY k;
"""


def timed(action: Callable[[int], Any], repeat: int) -> tuple[str, Any]:
    """`action(i)` run `repeat` times: 'median (min-max) ms', and the last result."""
    times, result = [], None
    for i in range(repeat):
        began = time.perf_counter()
        result = action(i)
        times.append((time.perf_counter() - began) * 1000)
    spread = f"{statistics.median(times):.0f} ms ({min(times):.0f}-{max(times):.0f})"
    return spread, result


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(keys: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        change = max(1, keys // 100)
        plan = plan_script(SQL.format(rows=2 * keys + 15 * change, max_key=keys - 1, root=root))
        state = root / "state"
        runner = Runner(plan, state, root)
        runner.run_epoch(2 * keys)
        for _ in range(10):
            runner.run_epoch(change)
        runner.close()
        versioning.create_savepoint(state, "sp", reason="benchmark")
        first = int(engine.open(state).state("totals").get_column("k").min())  # type: ignore[arg-type]
        row: dict[str, Any] = {"keys": keys, "changed_per_epoch": change}

        row["edit_1_key"], _ = timed(
            lambda i: engine.edit_state(
                state,
                f"UPDATE totals SET count__count = count__count + 1, __rows = __rows + 1 WHERE k = {first}",
                savepoint="sp",
                as_savepoint=f"one{i}",
            ),
            repeat,
        )
        row["edit_1_percent"], report = timed(
            lambda i: engine.edit_state(
                state, "DELETE FROM totals WHERE k % 100 = 0", savepoint="sp", as_savepoint=f"pct{i}"
            ),
            repeat,
        )
        row["edit_1_percent_rows"] = report["tables"]["totals"]["deleted"]
        row["export"], _ = timed(
            lambda i: engine.export_savepoint(state, "sp", root / f"export{i}", with_sinks=True), repeat
        )
        row["export_mb"] = round(size(root / "export0") / 1e6, 1)
        row["original_mb"] = round((size(state) + size(root / "totals")) / 1e6, 1)

        create_branch(state, root / "branch", savepoint="pct0", sink_paths={"totals": str(root / "branch-totals")})
        for directory in (state, root / "branch"):
            run = Runner(plan, directory, root)
            for _ in range(5):
                run.run_epoch(change)
            run.close()
        row["compare_sink"], found = timed(lambda i: engine.compare(state, root / "branch", sink="totals"), repeat)
        row["compare_sink_counts"] = found.counts()
        row["compare_sink_epochs"] = found.per_epoch.height
        row["compare_state"], _ = timed(lambda i: engine.compare(state, root / "branch", operator="totals"), repeat)
        row["blame"], changes = timed(lambda i: engine.blame(state, "totals", key={"k": first}), repeat)
        row["blame_changes"] = changes.height
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows = []
    for keys in args.keys.split(","):
        row = {"benchmark": "version-control", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
        row |= measure(int(keys), args.repeat)
        print(json.dumps(row))
        rows.append(row)
    if args.record:
        record("version_control", rows)


if __name__ == "__main__":
    main()
