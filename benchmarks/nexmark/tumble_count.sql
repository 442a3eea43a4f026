-- tumble_count (not a Nexmark query): bids per auction in 10-second TUMBLE windows, the window count that
-- benchmarks/text_input.py runs beside Pathway.
CREATE TABLE nexmark_tumble_count (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), bids BIGINT)
WITH (${SINK});
INSERT INTO nexmark_tumble_count
SELECT auction, window_start, window_end, COUNT(*) AS bids
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
