"""`timelapse demo`: the product's story in under a minute, on generated sensor readings, no files or servers.

A stateful pipeline runs (per-minute windows and a running summary per sensor, into Delta tables), a savepoint
names the good state, a deploy of changed SQL computes something wrong, a diff of the state since the savepoint
finds it, a rollback returns state, sinks and source offsets to the savepoint together, and the fixed SQL
recomputes the rest: the final tables equal a run that never saw the bad deploy.

Every step prints the `timelapse` command that does the same thing, then its output; the steps themselves call
the engine's Python API (Pipeline, versioning, History), as those commands do.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import polars as pl

from engine import delta_tables

GOOD_VIEW = "CREATE VIEW Celsius AS SELECT sensor, (temp_f - 32) * 5 / 9 AS celsius, ts FROM SensorData;"
# The bad deploy: a "tidy-up" that dropped the parentheses. 32 * 5 / 9 binds first (and is integer division).
BAD_VIEW = "CREATE VIEW Celsius AS SELECT sensor, temp_f - 32 * 5 / 9 AS celsius, ts FROM SensorData;"

DEMO_SQL = f"""\
-- Sensor readings in Fahrenheit, generated deterministically: 5 sensors, 10 readings per second of event time.
CREATE TABLE SensorData (
  sensor STRING,
  temp_f DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'datagen',
  'number-of-rows' = '6000',
  'rows-per-second' = '10',
  'seed' = '42',
  'fields.sensor.values' = 'sensor-1,sensor-2,sensor-3,sensor-4,sensor-5',
  'fields.temp_f.min' = '59',
  'fields.temp_f.max' = '104'
);

-- The dashboards want Celsius.
{GOOD_VIEW}

-- Final statistics per sensor and minute, written once the minute is over.
CREATE TABLE per_minute (sensor STRING, minute TIMESTAMP(3), readings BIGINT, avg_c DOUBLE, max_c DOUBLE)
WITH ('connector' = 'delta', 'path' = 'out/per_minute');
INSERT INTO per_minute
SELECT /*+ STATE_ID('per_minute') */ sensor, window_start, COUNT(*), AVG(celsius), MAX(celsius)
FROM TABLE(TUMBLE(TABLE Celsius, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY sensor, window_start, window_end;

-- A running summary per sensor, upserted by key.
CREATE TABLE per_sensor (sensor STRING, readings BIGINT, hottest_c DOUBLE, PRIMARY KEY (sensor) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/per_sensor');
INSERT INTO per_sensor
SELECT /*+ STATE_ID('per_sensor') */ sensor, COUNT(*), MAX(celsius) FROM Celsius GROUP BY sensor;
"""
BAD_SQL = DEMO_SQL.replace(GOOD_VIEW, BAD_VIEW)

MARKER = ".timelapse-demo"
EPOCH_ROWS = 1000
SAVEPOINT = "before_deploy"
HOTTEST = "max_celsius__max"  # the per_sensor state's column for MAX(celsius)


class Story:
    """Prints each step: a title, the equivalent command, then what it did (nothing in JSON mode)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.steps: list[dict[str, Any]] = []
        self.number = 0

    def step(self, title: str, command: str, result: Any) -> None:
        self.number += 1
        self.steps.append({"step": self.number, "title": title, "command": command, "result": result})
        self.say(f"\n{self.number}. {title}\n   $ {command}")

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(text)

    def table(self, frame: pl.DataFrame) -> None:
        if self.quiet:
            return
        with pl.Config(
            tbl_rows=12,
            tbl_width_chars=200,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
            float_precision=1,
        ):
            print("\n".join("   " + line for line in str(frame).splitlines()))


def _ran(summary: dict[str, Any]) -> str:
    written = ", ".join(f"{n} to {name}" for name, n in summary["rows_out"].items())
    return (
        f"   {summary['epochs']} epochs (last: {summary['last_epoch']}): read "
        f"{summary['rows_in'].get('SensorData', 0)} readings; wrote {written}"
    )


def run_demo(directory: Path, as_json: bool = False) -> int:
    from engine import versioning
    from engine.history import History
    from engine.pipeline import Pipeline

    if directory.exists():
        if not (directory / MARKER).exists():
            print(f"error: {directory} exists and was not made by the demo; pass --dir", file=sys.stderr)
            return 2
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by `timelapse demo`; safe to delete\n")
    good, bad = directory / "pipeline.sql", directory / "pipeline_v2.sql"
    good.write_text(DEMO_SQL)
    bad.write_text(BAD_SQL)
    state = directory / "state"
    story = Story(quiet=as_json)
    story.say(
        f"timelapse demo: a stateful pipeline, a bad deploy, found and undone. Files are in {directory}/;\n"
        f"each step shows the command that does it (run from {directory}/)."
    )

    run = f"--state state --max-epoch-rows {EPOCH_ROWS}"
    first = Pipeline.from_sql(good, state=state).run(max_epochs=3, max_epoch_rows=EPOCH_ROWS)
    story.step(
        "Run the pipeline on the first half of the readings: per-minute windows, a running summary per sensor",
        f"timelapse run pipeline.sql {run} --max-epochs 3",
        first,
    )
    story.say(_ran(first))
    h = History(state)
    story.table(h.sink("per_sensor").sort("sensor"))

    saved = versioning.create_savepoint(state, SAVEPOINT, reason="before deploying pipeline_v2.sql")
    story.step(
        "Name this point before deploying a change",
        f"timelapse savepoint create state --name {SAVEPOINT}",
        saved,
    )
    story.say(f"   savepoint '{SAVEPOINT}' marks epoch {saved['epoch']}")

    deployed = Pipeline.from_sql(bad, state=state).run(max_epochs=2, max_epoch_rows=EPOCH_ROWS)
    story.step(
        "Deploy changed SQL: a tidy-up of the unit conversion (spot the bug)",
        f"timelapse run pipeline_v2.sql {run} --max-epochs 2",
        deployed,
    )
    story.say(f"   - {GOOD_VIEW}\n   + {BAD_VIEW}")
    kept = ", ".join(f"{c['state_id']} {c['status']}" for c in deployed.get("upgrade", []))
    story.say(f"   the SQL changed; operator state: {kept}\n" + _ran(deployed))

    after = int(deployed["last_epoch"])
    diff = h.diff("per_sensor", SAVEPOINT, after)
    story.step(
        "What did the deploy change? Diff the per-sensor state between the savepoint and now",
        f"timelapse diff state per_sensor {SAVEPOINT} {after}",
        diff.to_dicts(),
    )
    story.table(
        diff.select(
            "change", "sensor", "count__count_before", "count__count_after", f"{HOTTEST}_before", f"{HOTTEST}_after"
        )
    )
    story.say(
        f"   The hottest reading went from {diff.get_column(f'{HOTTEST}_before').max():.1f} to "
        f"{diff.get_column(f'{HOTTEST}_after').max():.1f} °C on every sensor: the new SQL is wrong."
    )
    query = f"SELECT * FROM sink.per_minute EXCEPT SELECT * FROM sink.per_minute AS OF SAVEPOINT '{SAVEPOINT}'"
    bad_windows = h.sql(query)
    story.step("And which output rows did it write?", f'timelapse sql state "{query}"', bad_windows.height)
    story.table(bad_windows.sort("sensor", "minute").head(4))
    wrong = bad_windows.filter(pl.col("max_c") > 50).height
    story.say(f"   {bad_windows.height} per-minute rows written since the savepoint; {wrong} report more than 50 °C.")

    rolled = versioning.rollback(state, savepoint=SAVEPOINT, reason="bad deploy: unit conversion")
    story.step(
        "Roll back to the savepoint: state, sinks and source offsets together",
        f'timelapse rollback state --savepoint {SAVEPOINT} --reason "bad deploy: unit conversion"',
        rolled,
    )
    story.say(
        f"   rolled back to epoch {rolled['rolled_back_to']}: {rolled['tables']} tables restored; "
        f"the next run starts at epoch {rolled['next_epoch']} from that epoch's offsets"
    )

    fixed = Pipeline.from_sql(good, state=state).run(once=True, max_epoch_rows=EPOCH_ROWS)
    story.step(
        "Run the fixed SQL: the readings after the savepoint are processed again, once",
        f"timelapse run pipeline.sql {run} --once",
        fixed,
    )
    story.say(_ran(fixed))
    story.table(h.sink("per_sensor").sort("sensor"))

    # The proof: the same SQL on a fresh state directory, never deployed badly, gives the same tables.
    clean = _clean_run(directory)
    same = {name: _same(h.sink(name), frame) for name, frame in clean.items()}
    story.step(
        "Compare with a run that never saw the bad deploy",
        "timelapse run clean/pipeline.sql --state clean/state --once   # the same SQL, on a fresh directory",
        same,
    )
    story.say(
        "   "
        + "; ".join(f"{name}: {'identical' if ok else 'DIFFERENT'}" for name, ok in same.items())
        + ": nothing lost, nothing counted twice."
    )

    events = versioning.history(state)
    story.step("The history, with who rolled back what and why", "timelapse log state", events)
    story.say("\n".join("   " + line for line in versioning.render_history(events).splitlines()))

    if as_json:
        print(
            json.dumps(
                {"dir": str(directory), "steps": story.steps, "identical_to_clean_run": all(same.values())}, default=str
            )
        )
        return 0
    tries = [
        ('timelapse sql state "SHOW TABLES"', "what there is to query"),
        (f"timelapse state state per_sensor --at {SAVEPOINT}", "the state as it was at the savepoint"),
        (f'timelapse sql state "SELECT * FROM sink.per_minute AS OF EPOCH {after}"', "the bad output, still readable"),
        (f"timelapse branch state whatif --from savepoint {SAVEPOINT}", "an independent copy to try things on"),
    ]
    width = max(len(command) for command, _ in tries)
    story.say(f"\nTry next (from {directory}/):")
    story.say("\n".join(f"  {command:<{width}}  # {why}" for command, why in tries))
    return 0 if all(same.values()) else 1


def _clean_run(directory: Path) -> dict[str, pl.DataFrame]:
    """The sinks of the good SQL run on a fresh state directory with sinks of its own, in one go."""
    from engine.pipeline import Pipeline

    root = directory / "clean"
    root.mkdir()
    (root / "pipeline.sql").write_text(DEMO_SQL)
    Pipeline.from_sql(root / "pipeline.sql", state=root / "state").run(once=True, max_epoch_rows=EPOCH_ROWS)
    return {name: delta_tables.read(root / "out" / name) for name in ("per_minute", "per_sensor")}


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Equal rows, comparing floats to a relative 1e-9 (sums of the same values in another order may differ
    in the last bits); rows sorted by their non-float columns, which are each table's key."""
    from polars.testing import assert_frame_equal

    keys = [c for c, t in a.schema.items() if not t.is_float()]
    try:
        assert_frame_equal(a.sort(keys), b.sort(keys), check_exact=False, rel_tol=1e-9)
    except AssertionError:
        return False
    return True
