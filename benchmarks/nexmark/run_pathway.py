"""One Nexmark query on Pathway: `python -m benchmarks.nexmark.run_pathway Q DATA EVENTS EPOCH` (format from
`NEXMARK_FORMAT`: json or csv).

Runs under Pathway's own virtual environment (`NEXMARK_PATHWAY_VENV`, default ~/.cache/timelapse/pathway-venv,
`pip install pathway==0.33.0`): it pins its own dependencies. Alignment with timelapse: the same text files
(JSON lines, or CSV with a header: Pathway's CSV reader takes column names from it), read in static mode, one
worker thread per core (`PATHWAY_THREADS`), the same schema, event times parsed from their text as timelapse parses
them, and a sink that discards rows (`pw.io.null`). Queries Pathway expresses here: q0-q2 and `tumble_count` (bids
per auction per 10-second TUMBLE window). Pathway has no micro-batches: no epoch latency; it checkpoints nothing
here (timelapse commits every epoch).
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.nexmark.measure import PeakMemory, cli, result, unsupported

QUERIES = ("q0", "q1", "q2", "tumble_count")
#: the event times' text form in the generated copies, in Pathway's strptime language
TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"


def text_folder(data: Path, fmt: str, kind: str) -> Path:
    """Where the text copies of one kind of events are (benchmarks.nexmark.__main__.text_copies writes them)."""
    return data / ("json" if fmt == "json" else "csv-header") / kind


def build(pw: Any, query: str, folder: Path, fmt: str) -> Any:
    class Bid(pw.Schema):
        auction: int
        bidder: int
        price: int
        channel: str
        url: str
        dateTime: str
        extra: str

    if fmt == "json":
        bid = pw.io.jsonlines.read(str(folder), schema=Bid, mode="static")
    else:
        bid = pw.io.csv.read(str(folder), schema=Bid, mode="static")
    when = pw.this.dateTime.dt.strptime(TIMESTAMP)
    if query == "q0":
        return bid.select(pw.this.auction, pw.this.bidder, pw.this.price, dateTime=when, extra=pw.this.extra)
    if query == "q1":
        return bid.select(
            pw.this.auction, pw.this.bidder, price=0.908 * pw.this.price, dateTime=when, extra=pw.this.extra
        )
    if query == "q2":
        return bid.filter(pw.this.auction % 123 == 0).select(pw.this.auction, pw.this.price)
    timed = bid.select(pw.this.auction, at=when)
    return timed.windowby(
        pw.this.at, window=pw.temporal.tumbling(datetime.timedelta(seconds=10)), instance=pw.this.auction
    ).reduce(
        auction=pw.this._pw_instance,
        window_start=pw.this._pw_window_start,
        window_end=pw.this._pw_window_end,
        bids=pw.reducers.count(),
    )


def main(query: str, data: Path, events: int, epoch_events: int) -> dict[str, object]:
    fmt = os.environ.get("NEXMARK_FORMAT", "json")
    if query not in QUERIES:
        return unsupported("pathway", query, "not written for Pathway here (q0-q2 and tumble_count are)")
    if fmt not in ("json", "csv"):
        return unsupported("pathway", query, f"Pathway reads the JSON or CSV copies here, not {fmt}")
    os.environ.setdefault("PATHWAY_THREADS", str(os.cpu_count() or 1))
    import pathway as pw

    memory = PeakMemory().start()
    started = time.perf_counter()
    cpu_started = time.process_time()
    output = build(pw, query, text_folder(data, fmt, "bid"), fmt)
    pw.io.null.write(output)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    memory.stop()
    return result(
        "pathway",
        query,
        events,
        elapsed,
        elapsed,
        [],
        [],
        memory.peak,
        cpu_utilisation=round(cpu / elapsed, 2),
        format=fmt,
    )


if __name__ == "__main__":
    cli(main)
