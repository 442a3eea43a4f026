"""The Nexmark results table and ratio chart, from `benchmarks/results/nexmark.jsonl` (the newest run of each
engine and query): `python -m benchmarks.nexmark.report [--events N]` prints Markdown and writes the PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.nexmark.queries import QUERIES

RESULTS = Path(__file__).parents[1] / "results"


def latest(events: int | None) -> dict[tuple[str, str], dict[str, object]]:
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for line in (RESULTS / "nexmark.jsonl").read_text().splitlines():
        row = json.loads(line)
        if events is None or row.get("events") in (events, None):
            rows[(str(row["engine"]), str(row["query"]))] = row
    return rows


def _cell(row: dict[str, object] | None) -> str:
    if row is None:
        return "not run"
    if row.get("status") != "ok":
        return f"{row.get('status')}"
    return f"{int(row['events_per_s_per_core']):,}"  # type: ignore[call-overload]


def table(rows: dict[tuple[str, str], dict[str, object]]) -> str:
    lines = [
        "| query | timelapse | Spark | ratio | Flink | ratio | timelapse epoch p50 / p99 | checkpoint p50 "
        "| peak RSS (t / S / F) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for query in QUERIES:
        ours = rows.get(("timelapse", query))
        cells = [query, _cell(ours)]
        for peer in ("spark", "flink"):
            theirs = rows.get((peer, query))
            cells.append(_cell(theirs))
            both_ok = ours and theirs and ours.get("status") == "ok" and theirs.get("status") == "ok"
            ratio = (
                int(ours["events_per_s_per_core"]) / max(1, int(theirs["events_per_s_per_core"])) if both_ok else None
            )  # type: ignore[index, call-overload]
            cells.append(f"{ratio:.1f}x" if ratio else "")
        ok = ours is not None and ours.get("status") == "ok"
        cells.append(f"{ours['epoch_p50_ms']} / {ours['epoch_p99_ms']} ms" if ok else "")  # type: ignore[index]
        cells.append(f"{ours['checkpoint_p50_ms']} ms" if ok else "")  # type: ignore[index]
        rss = [rows.get((e, query), {}).get("peak_rss_mb") for e in ("timelapse", "spark", "flink")]
        cells.append(" / ".join(str(r) if r else "-" for r in rss) + " MB")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reasons(rows: dict[tuple[str, str], dict[str, object]]) -> str:
    out = []
    for (engine, query), row in sorted(rows.items(), key=lambda kv: (kv[0][0], int(kv[0][1][1:]))):
        if row.get("status") != "ok":
            out.append(f"- {engine} {query}: {row.get('reason')}")
    return "\n".join(out)


def chart(rows: dict[tuple[str, str], dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.4
    for offset, peer in ((-width / 2, "spark"), (width / 2, "flink")):
        xs, ys = [], []
        for index, query in enumerate(QUERIES):
            ours, theirs = rows.get(("timelapse", query)), rows.get((peer, query))
            if ours and theirs and ours.get("status") == "ok" and theirs.get("status") == "ok":
                xs.append(index + offset)
                ys.append(int(ours["events_per_s_per_core"]) / max(1, int(theirs["events_per_s_per_core"])))  # type: ignore[call-overload]
        ax.bar(xs, ys, width=width, label=f"timelapse / {peer.title()}")
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(QUERIES)), QUERIES)
    ax.set_yscale("log")
    ax.set_ylabel("throughput per core, ratio (log)")
    ax.set_title("Nexmark on this machine: timelapse against Spark Structured Streaming and Flink SQL")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int)
    args = parser.parse_args()
    rows = latest(args.events)
    chart(rows, RESULTS / "nexmark_ratios.png")
    print(table(rows))
    print()
    print(reasons(rows))


if __name__ == "__main__":
    main()
