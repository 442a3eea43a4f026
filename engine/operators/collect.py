"""Running an operator's lazy queries at the cost an epoch's size calls for.

On a small epoch, planning a query (the optimiser's passes, choosing an engine) costs several times more than
running it: a one-row epoch's aggregate spent most of its time there. Small epochs therefore run their queries
unoptimised on the in-memory engine (what an eager call does). Large ones keep the optimiser: it shares the
subplans the queries of one `collect_all` have in common (an epoch's partial aggregates), which pays off there.
"""

from __future__ import annotations

import polars as pl

#: epochs of at most this many rows run their queries unoptimised
SMALL_EPOCH_ROWS = 10_000


def collect_all(queries: list[pl.LazyFrame], rows: int) -> list[pl.DataFrame]:
    """The results of `queries`, over an epoch of `rows` input rows."""
    if rows <= SMALL_EPOCH_ROWS:
        return pl.collect_all(queries, optimizations=pl.QueryOptFlags.none(), engine="in-memory")
    return pl.collect_all(queries)


def collect(query: pl.LazyFrame, rows: int) -> pl.DataFrame:
    return collect_all([query], rows)[0]
