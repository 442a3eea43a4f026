"""`timelapse demo`: the mission's example pipeline on generated sensor readings, no files needed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import polars as pl

DEMO_SQL = """\
-- Sensor readings, generated deterministically: 5 sensors, 10 readings per second of event time.
CREATE TABLE SensorData (
  id STRING,
  temperature DOUBLE,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'datagen',
  'number-of-rows' = '5000',
  'rows-per-second' = '10',
  'seed' = '42',
  'fields.id.values' = 'sensor-1,sensor-2,sensor-3,sensor-4,sensor-5',
  'fields.temperature.min' = '15',
  'fields.temperature.max' = '40'
);

CREATE TABLE hot_readings (id STRING, temperature DOUBLE, ts TIMESTAMP(3))
WITH ('connector' = 'delta', 'path' = 'out/hot_readings');

INSERT INTO hot_readings SELECT id, temperature, ts FROM SensorData WHERE temperature > 30;
"""

MARKER = ".timelapse-demo"


def run_demo(directory: Path, as_json: bool = False) -> int:
    from engine.pipeline import Pipeline

    if directory.exists():
        if not (directory / MARKER).exists():
            print(f"error: {directory} exists and was not made by the demo; pass --dir", file=sys.stderr)
            return 2
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by `timelapse demo`; safe to delete\n")
    sql_path = directory / "pipeline.sql"
    sql_path.write_text(DEMO_SQL)
    state = directory / "state"

    pipeline = Pipeline.from_sql(sql_path, state=state)
    summary = pipeline.run(once=True, max_epoch_rows=1000)
    table = directory / "out" / "hot_readings"
    result = pl.read_delta(str(table))
    if as_json:
        print(json.dumps({**summary, "sink_rows": result.height, "sink": str(table)}))
        return 0

    print(pipeline.explain())
    print()
    print(
        f"Ran {summary['epochs']} epochs: read {summary['rows_in'].get('SensorData', 0)} readings, "
        f"wrote {summary['rows_out'].get('hot_readings', 0)} hot ones to {table}."
    )
    with pl.Config(tbl_rows=6, tbl_hide_dataframe_shape=True):
        print(result.sort("ts").head(6))
        print("\nHot readings per sensor:")
        print(
            result.group_by("id").agg(pl.len().alias("readings"), pl.col("temperature").max().alias("max")).sort("id")
        )
    print(f"""
Try next:
  timelapse explain {sql_path}
  timelapse run {sql_path} --state {state} --once        # nothing new: exactly-once, no duplicates
  python -c "import polars as pl; print(pl.read_delta('{table}', version=1))"   # time travel
  python -c "import polars as pl; print(pl.read_delta('{state}/manifest'))"     # one row per epoch
""")
    return 0
