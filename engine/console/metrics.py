"""Prometheus metrics of state directories, from their manifests: `/metrics` on the console (a viewer token
needed) and `timelapse run --metrics-port N` for a running pipeline without the console.

Counters and histograms come from the newest manifest row carrying `totals` (cumulative since the directory was
created, carried across restarts and rollbacks, so they never go down); gauges from the latest checkpoint.
A scrape reads the manifest only when its log changed (`History` caches the rows), so scraping is cheap.

`--metrics-port` serves without a token: it binds 127.0.0.1 unless `--metrics-host` says otherwise, and what it
shows (counts, epochs, watermarks, state sizes) holds no row of data.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import polars as pl
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.console.app import bearer, viewer
from engine.console.tokens import Grant
from engine.history import History
from engine.manifest import RESUMABLE
from engine.storage import Location, location

router = APIRouter(tags=["metrics"])
COUNTERS = (  # (metric, key of totals, label, help)
    ("timelapse_rows_in", "rows_in", "source", "Rows read, per source"),
    ("timelapse_rows_out", "rows_out", "sink", "Rows written, per sink"),
    ("timelapse_dead_letters", "dead_letters", "source", "Records rejected to dead letters, per source"),
    ("timelapse_late_rows", "late_rows", "operator", "Rows judged late, per operator"),
)
HISTOGRAMS = (
    ("timelapse_epoch_duration_seconds", "epoch_seconds", "Time to process an epoch"),
    ("timelapse_checkpoint_duration_seconds", "checkpoint_seconds", "Time to commit a checkpoint"),
)


def _buckets() -> tuple[float, ...] | None:
    try:
        from engine.epoch_report import DURATION_BUCKETS
    except ImportError:  # a version without histograms in its totals
        return None
    return tuple(DURATION_BUCKETS)


class ManifestCollector(Collector):
    """The metrics of the directories `pipelines()` names (console name -> (path, History factory))."""

    def __init__(self, pipelines: Callable[[], Iterable[tuple[str, Location, Callable[[], History]]]]) -> None:
        self.pipelines = pipelines

    def describe(self) -> list[Metric]:
        return []  # no fixed description: the collector is only registered where scraping it is cheap

    def collect(self) -> Iterator[Metric]:
        from engine.control import holder

        label = ["pipeline"]
        up = GaugeMetricFamily("timelapse_up", "1 while a pipeline runs on the directory", labels=label)
        gauges = {
            "last_epoch": GaugeMetricFamily("timelapse_last_epoch", "The last committed epoch", labels=label),
            "watermark": GaugeMetricFamily(
                "timelapse_watermark_seconds", "The watermark of the last checkpoint (Unix time)", labels=label
            ),
            "lag": GaugeMetricFamily(
                "timelapse_watermark_lag_seconds", "Commit time minus watermark of the last checkpoint", labels=label
            ),
            "epochs": CounterMetricFamily("timelapse_epochs", "Epochs processed", labels=label),
            "checkpoints": CounterMetricFamily("timelapse_checkpoints", "Checkpoints committed", labels=label),
        }
        state_rows = GaugeMetricFamily(
            "timelapse_state_rows", "Live state rows per operator", labels=["pipeline", "operator"]
        )
        state_bytes = GaugeMetricFamily(
            "timelapse_state_bytes", "State bytes per operator", labels=["pipeline", "operator"]
        )
        counters = {key: CounterMetricFamily(m, h, labels=["pipeline", lab]) for m, key, lab, h in COUNTERS}
        bounds = _buckets()
        histograms = {key: HistogramMetricFamily(m, h, labels=label) for m, key, h in HISTOGRAMS}
        for name, path, history in self.pipelines():
            up.add_metric([name], 1.0 if holder(path) is not None else 0.0)
            try:
                rows = history().manifest_rows()
            except FileNotFoundError:  # not created yet (a run just starting)
                continue
            resumable = rows.filter(pl.col("kind").is_in(list(RESUMABLE)))
            if resumable.is_empty():
                continue
            last = resumable.row(-1, named=True)
            metrics = json.loads(last["metrics"] or "{}")
            gauges["last_epoch"].add_metric([name], float(last["epoch"]))
            if last["watermark"] is not None:
                gauges["watermark"].add_metric([name], last["watermark"].timestamp())
                lag = (last["committed_at"] - last["watermark"]).total_seconds()
                gauges["lag"].add_metric([name], lag)
            for op, n in sorted((metrics.get("state_rows") or {}).items()):
                state_rows.add_metric([name, op], float(n))
            for op, n in sorted((metrics.get("state_bytes") or {}).items()):
                state_bytes.add_metric([name, op], float(n))
            totals = _totals(rows)
            gauges["epochs"].add_metric([name], float(totals.get("epochs", 0)))
            gauges["checkpoints"].add_metric([name], float(totals.get("checkpoints", 0)))
            for key, family in counters.items():
                for labelled, n in sorted((totals.get(key) or {}).items()):
                    family.add_metric([name, labelled], float(n))
            for key, family in histograms.items():
                recorded = totals.get(key)
                if bounds is None or not recorded:
                    continue
                counts = list(recorded.get("buckets") or [])[: len(bounds)]
                buckets = [(_le(b), float(c)) for b, c in zip(bounds, counts, strict=False)]
                family.add_metric(
                    [name], [*buckets, ("+Inf", float(recorded.get("count", 0)))], recorded.get("sum", 0.0)
                )
        yield up
        yield from gauges.values()
        yield state_rows
        yield state_bytes
        yield from counters.values()
        yield from histograms.values()


def _le(bound: float) -> str:
    return repr(float(bound))


def _totals(rows: pl.DataFrame) -> dict[str, Any]:
    """The newest `totals` of the manifest; for a directory written before totals existed, the sums over its
    epoch rows (without rollbacks' undoing: an approximation that never decreases)."""
    carrying = rows.filter(pl.col("metrics").str.contains('"totals"', literal=True))
    if not carrying.is_empty():
        for metrics in reversed(carrying.get_column("metrics").to_list()):
            totals = json.loads(metrics).get("totals")
            if totals:
                return dict(totals)
    totals: dict[str, Any] = {"epochs": 0, "checkpoints": 0}
    for metrics in rows.filter(pl.col("kind") == "epoch").get_column("metrics").to_list():
        info = json.loads(metrics or "{}")
        first, last = (info.get("epochs") or [0, 0])[:2]
        totals["epochs"] += int(last) - int(first) + 1
        totals["checkpoints"] += 1
        for _metric, key, _label, _help in COUNTERS:
            bucket = totals.setdefault(key, {})
            for labelled, n in (info.get(key) or {}).items():
                bucket[labelled] = bucket.get(labelled, 0) + n
    return totals


def registry_for(pipelines: Callable[[], Iterable[tuple[str, Location, Callable[[], History]]]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ManifestCollector(pipelines))
    return registry


@router.get("/metrics", summary="Prometheus metrics of the pipelines this token may see", tags=["metrics"])
def metrics(request: Request, grant: Grant = viewer) -> Response:
    console = request.app.state.console
    visible = console.visible(bearer(request))

    def pipelines() -> Iterator[tuple[str, Location, Callable[[], History]]]:
        for name in visible:
            yield name, console.directories[name], lambda name=name: console.history(name)

    return Response(generate_latest(registry_for(pipelines)), media_type=CONTENT_TYPE_LATEST)


def serve_metrics(state: str | Location, port: int, host: str, storage_options: Mapping[str, str] | None) -> None:
    """Serve `/metrics` for `state` on host:port from a background thread of this process (no token: it binds
    127.0.0.1 by default, and the numbers hold no data rows)."""
    from prometheus_client import start_http_server

    from engine.cli_types import UsageError

    path = location(state, storage_options).absolute()
    name = path.name or "pipeline"
    lock = threading.Lock()
    cached: list[History] = []

    def history() -> History:
        with lock:  # one History, made once the directory exists (the run creates it after this starts)
            if not cached:
                cached.append(History(path, storage_options))
            return cached[0]

    try:
        start_http_server(port, addr=host, registry=registry_for(lambda: [(name, path, history)]))
    except OSError as err:
        raise UsageError(f"cannot serve metrics on {host}:{port}: {err.strerror or err}") from None
