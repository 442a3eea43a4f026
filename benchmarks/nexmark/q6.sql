-- q6: average selling price by seller: the average of each seller's last 10 winning prices.
-- An OVER aggregate over an updating input (the winning price changes as bids arrive); Flink cannot run it.
CREATE TABLE nexmark_q6 (seller BIGINT, avg_price DOUBLE) WITH (${SINK});
INSERT INTO nexmark_q6
SELECT Q.seller, AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.dateTime ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)
FROM (
  SELECT MAX(B.price) AS final, A.seller, B.dateTime
  FROM auction AS A, bid AS B
  WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
  GROUP BY A.id, A.seller, B.dateTime
) AS Q;
