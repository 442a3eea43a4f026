-- q13: bounded side input join. Bids joined to a 10,000-row side table on auction % 10000 (a lookup join).
CREATE TABLE side_input (key BIGINT, `value` STRING) WITH ('connector' = 'filesystem', 'path' = '${SIDE_INPUT}',
  'format' = 'parquet');
CREATE TABLE nexmark_q13 (auction BIGINT, bidder BIGINT, price BIGINT, dateTime TIMESTAMP(3), `value` STRING)
WITH (${SINK});
INSERT INTO nexmark_q13
SELECT B.auction, B.bidder, B.price, B.dateTime, S.`value`
FROM (SELECT *, MOD(auction, 10000) AS side_key FROM bid) B
JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON B.side_key = S.key;
