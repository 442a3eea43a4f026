"""The Nexmark query files, filled in for a run: where the sources come from and where the results go."""

from __future__ import annotations

import os
import re
from pathlib import Path

HERE = Path(__file__).parent
QUERIES = [f"q{i}" for i in range(23)]
#: queries beside Nexmark's own, run only when named (benchmarks/text_input.py)
EXTRA_QUERIES = ["tumble_count"]
#: the files the sources read: the generated Parquet files, or their JSON-lines or CSV copies (with a header)
FORMATS = ("parquet", "json", "csv")


#: each kind's share of the events (1:3:46)
SHARE = {"person": 1 / 50, "auction": 3 / 50, "bid": 46 / 50}


def text_folder(data: Path, fmt: str, kind: str) -> Path:
    """Where the files of one kind of events are in `fmt` (benchmarks.nexmark.__main__.text_copies writes copies)."""
    return data / kind if fmt == "parquet" else data / ("json" if fmt == "json" else "csv-header") / kind


def source_options(
    kind: str, data: Path | None, events: int, epoch_events: int | None = None, fmt: str | None = None
) -> str:
    """`fmt`: parquet, json or csv (default: `NEXMARK_FORMAT`, which the harness sets for its runs, else parquet)."""
    if data is None:
        return f"'connector' = 'nexmark', 'nexmark.table' = '{kind}', 'events.num' = '{events}'"
    fmt = fmt or os.environ.get("NEXMARK_FORMAT", "parquet")
    options = f"'connector' = 'filesystem', 'format' = '{fmt}', 'path' = '{text_folder(data, fmt, kind)}'"
    if fmt == "csv":
        options += ", 'csv.header' = 'true'"
    if epoch_events:  # each epoch reads the same span of event time from every kind
        options += f", 'scan.max-epoch-rows' = '{max(1, int(epoch_events * SHARE[kind]))}'"
    return options


def sink_options(sink: Path | None, extra: str | None) -> str:
    if sink is None:
        return "'connector' = 'blackhole'"
    options = f"'connector' = 'delta', 'path' = '{sink}'"
    if extra and extra.startswith("partition-by="):
        options += f", 'partition-by' = '{extra.split('=', 1)[1]}'"
    return options


def script(
    query: str,
    data: Path | None,
    events: int,
    sink: Path | None = None,
    side_input: Path | None = None,
    epoch_events: int | None = None,
) -> str:
    """The full timelapse script of `query`: the three source tables, then the query with its sink."""
    sources = (HERE / "sources.sql").read_text()
    sources = re.sub(r"\$\{SOURCE:(\w+)\}", lambda m: source_options(m.group(1), data, events, epoch_events), sources)
    text = (HERE / f"{query}.sql").read_text()
    sources = sources.replace("${PROCTIME}", "p_time AS PROCTIME(),\n  " if "p_time" in text else "")
    text = re.sub(r"\$\{SINK(?::([^}]*))?\}", lambda m: sink_options(sink, m.group(1)), text)
    text = text.replace("${SIDE_INPUT}", str(side_input or HERE / "side_input"))
    return sources + "\n" + text
