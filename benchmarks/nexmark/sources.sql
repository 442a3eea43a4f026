-- The three Nexmark views, as timelapse tables. The harness fills in ${SOURCE}: the nexmark connector, or the
-- generated files that every engine reads ('connector' = 'filesystem', 'format' = 'parquet', 'path' = ...).
-- Queries on processing time (q12, q13) get `p_time AS PROCTIME()` added to bid.
CREATE TABLE person (
  id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING,
  dateTime TIMESTAMP(3), extra STRING,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (${SOURCE:person});

CREATE TABLE auction (
  id BIGINT, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT,
  dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (${SOURCE:auction});

CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP(3), extra STRING,
  ${PROCTIME}WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (${SOURCE:bid});
