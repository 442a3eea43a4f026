"""Prometheus metrics of state directories, from their manifests: `/metrics` on the console and
`timelapse run --metrics-port N` for a running pipeline without the console."""

from __future__ import annotations

from collections.abc import Mapping

from engine.storage import Location


def serve_metrics(state: str | Location, port: int, host: str, storage_options: Mapping[str, str] | None) -> None:
    """Serve `/metrics` for `state` on host:port from a background thread of this process."""
    raise NotImplementedError
