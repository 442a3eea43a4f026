-- q9: winning bids. The highest bid of each auction (earliest on ties) among bids within its lifetime.
CREATE TABLE nexmark_q9 (
  id BIGINT, itemName STRING, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3),
  seller BIGINT, category BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, bid_dateTime TIMESTAMP(3),
  PRIMARY KEY (id) NOT ENFORCED
) WITH (${SINK});
INSERT INTO nexmark_q9
SELECT id, itemName, initialBid, reserve, dateTime, expires, seller, category, auction, bidder, price, bid_dateTime
FROM (
  SELECT A.id, A.itemName, A.initialBid, A.reserve, A.dateTime, A.expires, A.seller, A.category,
         B.auction, B.bidder, B.price, B.dateTime AS bid_dateTime,
         ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.dateTime ASC) AS rownum
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
)
WHERE rownum <= 1;
