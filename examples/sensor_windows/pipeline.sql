-- Stateful SQL on generated readings: windows, an upserted GROUP BY, a Top-N and a running OVER aggregate.
-- timelapse run examples/sensor_windows/pipeline.sql --state /tmp/sensor-windows --once
CREATE TABLE readings (
  sensor STRING, temperature DOUBLE, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'datagen', 'number-of-rows' = '20000', 'rows-per-second' = '20', 'seed' = '7',
  'fields.sensor.values' = 's1,s2,s3,s4,s5,s6', 'fields.temperature.min' = '10', 'fields.temperature.max' = '45'
);

-- Final per-minute statistics: one row per sensor and minute, written once the minute is over.
CREATE TABLE per_minute (sensor STRING, minute TIMESTAMP(3), readings BIGINT, average DOUBLE, hottest DOUBLE)
WITH ('connector' = 'delta', 'path' = 'out/per_minute');
INSERT INTO per_minute
SELECT /*+ STATE_ID('per_minute') */ sensor, window_start, COUNT(*), AVG(temperature), MAX(temperature)
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY sensor, window_start, window_end;

-- A running count of hot readings per sensor, upserted by key.
CREATE TABLE hot_counts (sensor STRING, hot BIGINT, PRIMARY KEY (sensor) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/hot_counts');
INSERT INTO hot_counts
SELECT sensor, COUNT(*) FILTER (WHERE temperature > 40) FROM readings GROUP BY sensor;

-- The three hottest readings ever, per sensor.
CREATE TABLE hottest (sensor STRING, temperature DOUBLE, ts TIMESTAMP(3), rn BIGINT,
                      PRIMARY KEY (sensor, rn) NOT ENFORCED)
WITH ('connector' = 'delta', 'path' = 'out/hottest');
INSERT INTO hottest SELECT sensor, temperature, ts, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY sensor ORDER BY temperature DESC) AS rn FROM readings
) WHERE rn <= 3;

-- Each reading with the average of its sensor's last ten.
CREATE TABLE smoothed (sensor STRING, ts TIMESTAMP(3), temperature DOUBLE, last10 DOUBLE)
WITH ('connector' = 'delta', 'path' = 'out/smoothed');
INSERT INTO smoothed
SELECT sensor, ts, temperature,
       AVG(temperature) OVER (PARTITION BY sensor ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)
FROM readings;
