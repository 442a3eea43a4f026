-- The mission's example: hot readings from JSON files into a Delta table.
-- Run from anywhere: timelapse run examples/sensors/pipeline.sql --state /tmp/sensors-state --once
CREATE TABLE SensorData (
  id STRING, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'data/readings', 'format' = 'json');

CREATE TABLE hot_readings (id STRING, temperature DOUBLE, ts TIMESTAMP(3))
WITH ('connector' = 'delta', 'path' = 'out/hot_readings');

-- A second INSERT shares the source: both run in the same epochs.
CREATE TABLE alerts (id STRING, message STRING) WITH ('connector' = 'print');

INSERT INTO hot_readings SELECT id, temperature, ts FROM SensorData WHERE temperature > 30;
INSERT INTO alerts
SELECT id, CONCAT('critical: ', CAST(temperature AS STRING), ' at ', DATE_FORMAT(ts, 'HH:mm:ss'))
FROM SensorData WHERE temperature > 40;
