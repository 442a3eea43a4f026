"""Text input: timelapse beside Pathway on the same JSON-lines and CSV files.

    python -m benchmarks.text_input --events 2M --epoch-events 500k --repeats 3 [--record]

The Nexmark events (generated once, benchmarks.nexmark) are copied to JSON lines and to CSV with a header
(timestamps as `yyyy-MM-dd HH:mm:ss.SSS` text); both engines read those same files, each run in a fresh process
(Pathway from its own virtual environment: benchmarks/nexmark/run_pathway.py). Queries: q0 (pass-through), q1
(projection with arithmetic), q2 (filter) and `tumble_count` (bids per auction per 10-second TUMBLE window).
Engines alternate within each repeat, and which goes first alternates between repeats, so that a machine's
drifting load falls on both. Per (format, query): each engine's events/s (median, min and max over the repeats)
and the ratio of the medians (as benchmarks.nexmark measures it: timelapse's first epoch is left out as warm-up,
Pathway has none to leave out), and the ratio of whole-run times, start-up included. timelapse commits a
checkpoint every epoch; Pathway checkpoints nothing here.
`--record` appends the rows to `benchmarks/results/text_input.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.nexmark.__main__ import DEFAULT_DATA, count, data_dir, generate, run_isolated
from benchmarks.record import record

ENGINES = ("timelapse", "pathway")
QUERIES = ("q0", "q1", "q2", "tumble_count")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.text_input")
    parser.add_argument("--events", default="2M")
    parser.add_argument("--epoch-events", default="500k", help="events per timelapse epoch (and per file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--formats", default="json,csv")
    parser.add_argument("--queries", default=",".join(QUERIES))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines")
    parser.add_argument("--record", action="store_true")
    return parser


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (format, query): every engine's runs, alternated."""
    events, chunk = count(args.events), count(args.epoch_events)
    generate(args.data, events, args.seed, chunk)
    data = data_dir(args.data, events, args.seed, chunk)
    engines = args.engines.split(",")
    rows = []
    for fmt in args.formats.split(","):
        for query in args.queries.split(","):
            runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
            for repeat in range(args.repeats):
                for engine in engines if repeat % 2 == 0 else engines[::-1]:
                    runs[engine].append(run_isolated(engine, query, data, events, chunk, fmt))
            rows.append(summarise(fmt, query, events, chunk, runs))
    return rows


def summarise(fmt: str, query: str, events: int, chunk: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "benchmark": "text_input",
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "format": fmt,
        "query": query,
        "events": events,
        "epoch_events": chunk,
    }
    medians = {}
    for engine, results in runs.items():
        rates = [r["events_per_s"] for r in results if r.get("status") == "ok"]
        failed = [r for r in results if r.get("status") != "ok"]
        row[engine] = {
            "runs": len(results),
            "events_per_s": rates,
            "median": round(statistics.median(rates)) if rates else None,
            "min": min(rates, default=None),
            "max": max(rates, default=None),
            # the whole run, start-up included (events/s leaves out timelapse's first epoch, Pathway's nothing)
            "elapsed_s": [r["elapsed_s"] for r in results if r.get("status") == "ok"],
            "peak_rss_mb": max((r.get("peak_rss_mb") or 0 for r in results), default=None),
            **({"status": failed[0].get("status"), "reason": failed[0].get("reason")} if failed else {}),
        }
        if rates:
            medians[engine] = statistics.median(rates)
    if "timelapse" in medians and "pathway" in medians:
        row["ratio_timelapse_to_pathway"] = round(medians["timelapse"] / medians["pathway"], 2)
        whole = {e: statistics.median(row[e]["elapsed_s"]) for e in ("timelapse", "pathway")}
        row["ratio_whole_run"] = round(whole["pathway"] / whole["timelapse"], 2)
    return row


def line(row: dict[str, Any]) -> str:
    parts = [f"{row['format']:<5} {row['query']:<13}"]
    for engine in ENGINES:
        stats = row.get(engine)
        if stats is None:
            continue
        if stats["median"] is None:
            parts.append(f"{engine} {stats.get('status')}: {stats.get('reason')}")
        else:
            parts.append(f"{engine} {stats['median']:>10,} events/s ({stats['min']:,}-{stats['max']:,})")
    if "ratio_timelapse_to_pathway" in row:
        parts.append(f"ratio {row['ratio_timelapse_to_pathway']}x (whole runs {row['ratio_whole_run']}x)")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    rows = measure(args)
    for row in rows:
        print(json.dumps(row) if args.json else line(row), flush=True)
    if args.record:
        record("text_input", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
