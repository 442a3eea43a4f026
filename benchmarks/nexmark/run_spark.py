"""One Nexmark query on Spark Structured Streaming: `python -m benchmarks.nexmark.run_spark Q DATA EVENTS EPOCH`.

Alignment with timelapse (see benchmarks/README.md): local mode on all cores, the same Parquet files read as
file streams (one file of each kind per micro-batch: the files hold EPOCH events each), the RocksDB state
store, a checkpoint location (Spark commits offsets and state every micro-batch, as timelapse checkpoints every
epoch), the `noop` sink, and `availableNow` so the run ends when the input is consumed. Throughput excludes the
first micro-batch (JVM and query warm-up). Spark SQL has no window TVFs, so windowed queries use its `window()`
and `session_window()` functions; queries Spark cannot run in streaming report Spark's own error.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.nexmark.measure import PeakMemory, cli, result, unsupported

SCHEMAS = {
    "person": "id BIGINT, name STRING, emailAddress STRING, creditCard STRING, city STRING, state STRING, "
    "dateTime TIMESTAMP, extra STRING",
    "auction": "id BIGINT, itemName STRING, description STRING, initialBid BIGINT, reserve BIGINT, "
    "dateTime TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra STRING",
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, dateTime TIMESTAMP, extra STRING",
}

RANKS = """
  count(*) AS total_bids,
  count_if(price < 10000) AS rank1_bids,
  count_if(price >= 10000 AND price < 1000000) AS rank2_bids,
  count_if(price >= 1000000) AS rank3_bids"""
DISTINCTS = """,
  count(DISTINCT bidder) AS total_bidders,
  count(DISTINCT auction) AS total_auctions"""

QUERIES = {
    "q0": "SELECT auction, bidder, price, dateTime, extra FROM bid",
    "q1": "SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    "q3": """SELECT P.name, P.city, P.state, A.id FROM auction A JOIN person P ON A.seller = P.id
             WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')""",
    "q4": """SELECT category, avg(final) FROM (
               SELECT max(B.price) AS final, A.category FROM auction A JOIN bid B ON A.id = B.auction
               AND B.dateTime BETWEEN A.dateTime AND A.expires GROUP BY A.id, A.category) GROUP BY category""",
    "q5": """SELECT auction, count(*) AS num, window FROM bid
             GROUP BY auction, window(dateTime, '10 seconds', '2 seconds')""",
    "q7": """SELECT B.auction, B.price, B.bidder, B.dateTime FROM bid B JOIN (
               SELECT max(price) AS maxprice, window.end AS wend FROM bid GROUP BY window(dateTime, '10 seconds')
             ) B1 ON B.price = B1.maxprice AND B.dateTime BETWEEN B1.wend - INTERVAL 10 SECONDS AND B1.wend""",
    "q8": """SELECT P.id, P.name, P.w FROM (
               SELECT id, name, window AS w FROM person GROUP BY id, name, window(dateTime, '10 seconds')) P
             JOIN (SELECT seller, window AS w FROM auction GROUP BY seller, window(dateTime, '10 seconds')) A
             ON P.id = A.seller AND P.w = A.w""",
    "q9": """SELECT * FROM (SELECT A.id, B.price, row_number() OVER (PARTITION BY A.id ORDER BY B.price DESC) AS rn
             FROM auction A JOIN bid B ON A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires)
             WHERE rn = 1""",
    "q10": """SELECT auction, bidder, price, dateTime, extra, date_format(dateTime, 'yyyy-MM-dd') AS dt,
              date_format(dateTime, 'HH:mm') AS hm FROM bid""",
    "q11": """SELECT bidder, count(*) AS bid_count, session_window.start, session_window.end FROM bid
              GROUP BY bidder, session_window(dateTime, '10 seconds')""",
    "q12": """SELECT bidder, count(*) AS bid_count, window FROM (SELECT *, current_timestamp() AS p_time FROM bid)
              GROUP BY bidder, window(p_time, '10 seconds')""",
    "q13": """SELECT B.auction, B.bidder, B.price, B.dateTime, S.value FROM bid B
              JOIN side_input S ON B.auction % 10000 = S.key""",
    "q14": """SELECT auction, bidder, 0.908 * price AS price,
                CASE WHEN hour(dateTime) >= 8 AND hour(dateTime) <= 18 THEN 'dayTime'
                     WHEN hour(dateTime) <= 6 OR hour(dateTime) >= 20 THEN 'nightTime' ELSE 'otherTime' END,
                dateTime, extra, length(extra) - length(replace(extra, 'c', '')) AS c_counts
              FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000""",
    "q15": f"SELECT date_format(dateTime, 'yyyy-MM-dd') AS day, {RANKS}{DISTINCTS} FROM bid GROUP BY 1",
    "q16": f"""SELECT channel, date_format(dateTime, 'yyyy-MM-dd') AS day, max(date_format(dateTime, 'HH:mm')),
               {RANKS}{DISTINCTS} FROM bid GROUP BY 1, 2""",
    "q17": f"""SELECT auction, date_format(dateTime, 'yyyy-MM-dd') AS day, {RANKS},
               min(price), max(price), avg(price), sum(price) FROM bid GROUP BY 1, 2""",
    "q18": """SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC) AS rn
              FROM bid) WHERE rn = 1""",
    "q19": """SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid)
              WHERE rn <= 10""",
    "q20": """SELECT B.auction, B.bidder, B.price, B.channel, B.url, B.dateTime, B.extra, A.itemName,
              A.description, A.initialBid, A.reserve, A.dateTime AS adt, A.expires, A.seller, A.category, A.extra AS ae
              FROM bid B JOIN auction A ON B.auction = A.id WHERE A.category = 10""",
    "q21": """SELECT auction, bidder, price, channel,
                CASE WHEN lower(channel) = 'apple' THEN '0' WHEN lower(channel) = 'google' THEN '1'
                     WHEN lower(channel) = 'facebook' THEN '2' WHEN lower(channel) = 'baidu' THEN '3'
                     ELSE regexp_extract(url, '(&|^)channel_id=([^&]*)', 2) END AS channel_id
              FROM bid WHERE regexp_extract(url, '(&|^)channel_id=([^&]*)', 2) <> ''
                 OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')""",
    "q22": """SELECT auction, bidder, price, channel, split(url, '/')[3] AS dir1, split(url, '/')[4] AS dir2,
              split(url, '/')[5] AS dir3 FROM bid""",
}
# Stateless queries and joins run in append mode (Spark requires it for joins); aggregations in update mode.
APPEND = {"q0", "q1", "q2", "q3", "q7", "q8", "q10", "q11", "q13", "q14", "q20", "q21", "q22"}
UNSUPPORTED = {"q6": "an OVER aggregate over an updating input: Spark streaming has no OVER windows"}


def main(query: str, data: Path, events: int, epoch_events: int) -> dict[str, object]:
    if query in UNSUPPORTED:
        return unsupported("spark", query, UNSUPPORTED[query])
    from pyspark.sql import SparkSession

    memory = PeakMemory().start()
    cores = os.cpu_count() or 1
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(f"nexmark-{query}")
        .config("spark.sql.shuffle.partitions", str(cores))
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory() as work:
        for kind, schema in SCHEMAS.items():
            stream = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(data / kind))
            stream.withWatermark("dateTime", "4 seconds").createOrReplaceTempView(kind)
        spark.read.parquet(str(data / "side_input")).createOrReplaceTempView("side_input")
        started = time.perf_counter()
        try:
            frame = spark.sql(QUERIES[query])
            mode = "append" if query in APPEND else "update"
            writer = frame.writeStream.format("noop").outputMode(mode).option("checkpointLocation", f"{work}/cp")
            running = writer.trigger(availableNow=True).start()
            running.awaitTermination()
        except Exception as err:  # Spark cannot run this query in streaming: record its reason
            memory.stop()
            spark.stop()
            return unsupported("spark", query, str(err).strip().splitlines()[0])
        elapsed = time.perf_counter() - started
        progress = running.recentProgress
    memory.stop()
    spark.stop()
    batches = [p for p in progress if p.get("numInputRows", 0) > 0] or list(progress)
    durations = [p["durationMs"].get("triggerExecution", 0) / 1000 for p in batches]
    commits = [(p["durationMs"].get("walCommit", 0) + p["durationMs"].get("commitOffsets", 0)) / 1000 for p in batches]
    warm = sum(durations[1:]) if len(durations) > 1 else elapsed
    return result("spark", query, events, elapsed, warm, durations, commits, memory.peak)


if __name__ == "__main__":
    cli(main)
