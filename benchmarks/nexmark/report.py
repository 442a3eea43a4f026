"""The Nexmark results table and ratio chart, from `benchmarks/results/nexmark.jsonl`:
`python -m benchmarks.nexmark.report [--events N] [--since YYYY-MM-DD] [--engines timelapse,spark,flink,pathway]
[--checkpoints background|inline]`
prints Markdown and writes the PNG.

Every run recorded for an (engine, query) at that event count (since the date) counts: the table shows the median
events/s per core and, with several runs, their spread (min-max); ratios are of medians. The last column sets
timelapse beside Feldera's published per-core figure (shared/notes/nexmark.md and the issue that set the goals).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.nexmark.queries import QUERIES

RESULTS = Path(__file__).parents[1] / "results"
# Feldera's published throughput per core (events/s), the goals' yardstick.
FELDERA = {"q0": 436_000, "q4": 265_000, "q5": 412_000, "q7": 196_000, "q9": 57_000, "q16": 51_000,
           "q18": 85_000, "q19": 75_000, "q20": 85_000}  # fmt: skip
PEERS = ("spark", "flink", "pathway", "polars")


def runs(
    events: int | None, since: str | None, checkpoints: str | None = None
) -> dict[tuple[str, str], list[dict[str, object]]]:
    """`checkpoints`: only timelapse runs whose checkpoints were written so (`background`, `inline`; runs
    recorded before 2026-12-03 wrote them inline)."""
    found: dict[tuple[str, str], list[dict[str, object]]] = {}
    for line in (RESULTS / "nexmark.jsonl").read_text().splitlines():
        row = json.loads(line)
        if events is not None and row.get("events") not in (events, None):
            continue
        if checkpoints and row.get("engine") == "timelapse" and row.get("checkpoints", "inline") != checkpoints:
            continue
        if since is not None and str(row.get("date", "")) < since:
            continue
        found.setdefault((str(row["engine"]), str(row["query"])), []).append(row)
    return found


def rate(rows: list[dict[str, object]] | None) -> float | None:
    """Median events/s per core of the runs that finished."""
    ok = [float(r["events_per_s_per_core"]) for r in rows or [] if r.get("status") == "ok"]  # type: ignore[arg-type]
    return statistics.median(ok) if ok else None


def _cell(rows: list[dict[str, object]] | None) -> str:
    if not rows:
        return "not run"
    ok = [int(r["events_per_s_per_core"]) for r in rows if r.get("status") == "ok"]  # type: ignore[call-overload]
    if not ok:
        return str(rows[-1].get("status"))
    median = f"{int(statistics.median(ok)):,}"
    return median if len(ok) == 1 else f"{median} ({min(ok) // 1000}-{max(ok) // 1000}k)"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.1f}x" if ours and theirs else ""


def table(found: dict[tuple[str, str], list[dict[str, object]]], peers: tuple[str, ...]) -> str:
    header = ["query", "timelapse"]
    for peer in peers:
        header += [peer.title(), "ratio"]
    header += ["Feldera (published)", "ratio", "timelapse epoch p50 / p99", "peak RSS (" + " / ".join(
        e[0].upper() if e != "timelapse" else "t" for e in ("timelapse", *peers)) + ")"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for query in QUERIES:
        mine = found.get(("timelapse", query))
        if not mine and not any(found.get((p, query)) for p in peers):
            continue
        ours = rate(mine)
        cells = [query, _cell(mine)]
        for peer in peers:
            theirs = found.get((peer, query))
            cells += [_cell(theirs), _ratio(ours, rate(theirs))]
        feldera = FELDERA.get(query)
        cells += [f"{feldera:,}" if feldera else "", _ratio(ours, feldera)]
        last = next((r for r in reversed(mine or []) if r.get("status") == "ok"), None)
        cells.append(f"{last['epoch_p50_ms']} / {last['epoch_p99_ms']} ms" if last else "")
        rss = []
        for engine in ("timelapse", *peers):
            peaks = [r.get("peak_rss_mb") for r in found.get((engine, query), []) if r.get("peak_rss_mb")]
            rss.append(str(max(peaks)) if peaks else "-")  # type: ignore[type-var]
        cells.append(" / ".join(rss) + " MB")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reasons(found: dict[tuple[str, str], list[dict[str, object]]]) -> str:
    out = []
    for (engine, query), rows in sorted(found.items(), key=lambda kv: (kv[0][0], int(kv[0][1][1:]))):
        if rows and rows[-1].get("status") != "ok":
            out.append(f"- {engine} {query}: {rows[-1].get('status')}: {rows[-1].get('reason')}")
    return "\n".join(out)


def chart(found: dict[tuple[str, str], list[dict[str, object]]], peers: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(1, len(peers))
    for n, peer in enumerate(peers):
        xs, ys = [], []
        for index, query in enumerate(QUERIES):
            ours, theirs = rate(found.get(("timelapse", query))), rate(found.get((peer, query)))
            if ours and theirs:
                xs.append(index - 0.4 + width * (n + 0.5))
                ys.append(ours / theirs)
        ax.bar(xs, ys, width=width, label=f"timelapse / {peer.title()}")
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(QUERIES)), QUERIES)
    ax.set_yscale("log")
    ax.set_ylabel("throughput per core, ratio (log)")
    ax.set_title("Nexmark on this machine: timelapse against its peers (median of runs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int)
    parser.add_argument("--since", help="only runs recorded on or after this date (YYYY-MM-DD)")
    parser.add_argument("--engines", default=",".join(("timelapse", *PEERS)))
    parser.add_argument("--chart", type=Path, default=RESULTS / "nexmark_ratios.png")
    parser.add_argument("--checkpoints", choices=("background", "inline"), help="timelapse runs written so only")
    args = parser.parse_args()
    peers = tuple(e for e in args.engines.split(",") if e != "timelapse")
    found = runs(args.events, args.since, args.checkpoints)
    chart(found, peers, args.chart)
    print(table(found, peers))
    print()
    print(reasons(found))


if __name__ == "__main__":
    main()
