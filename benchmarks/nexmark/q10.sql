-- q10: log to a file system. Every bid, written partitioned by date and hour-minute (a partitioned Delta table).
CREATE TABLE nexmark_q10 (
  auction BIGINT, bidder BIGINT, price BIGINT, dateTime TIMESTAMP(3), extra STRING, dt STRING, hm STRING
) WITH (${SINK:partition-by=dt,hm});
INSERT INTO nexmark_q10
SELECT auction, bidder, price, dateTime, extra, DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm')
FROM bid;
