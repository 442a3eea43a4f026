"""Where connectors may read and write: every `path` option is resolved here, and checked against the allowed
roots when some are configured.

Roots come from `TIMELAPSE_ALLOWED_ROOTS` (paths separated by `:`), which `timelapse run --allowed-root DIR`
extends. A path is resolved (user home, relative to the SQL file, symlinks and `..` followed) before the
check, so neither `../../etc` nor a symlink leads out of a root. Without roots, any path is allowed, as in
Flink and Spark.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOTS_VARIABLE = "TIMELAPSE_ALLOWED_ROOTS"


class PathNotAllowed(ValueError):
    """A connector path outside the configured roots."""


def allowed_roots() -> list[Path]:
    text = os.environ.get(ROOTS_VARIABLE, "")
    return [Path(p).expanduser().resolve() for p in text.split(os.pathsep) if p.strip()]


def connector_path(table: str, option: str, value: str, base_dir: Path) -> Path:
    """The absolute path `value` names (relative to `base_dir`), refused if it lies outside the allowed roots."""
    candidate = Path(value).expanduser()
    path = candidate if candidate.is_absolute() else base_dir / candidate
    real = outside_roots(path)
    if real is not None:
        listing = ", ".join(str(r) for r in allowed_roots())
        raise PathNotAllowed(
            f"table '{table}': '{option}' = '{value}' resolves to {real}, outside the allowed roots ({listing})"
        )
    return path


def outside_roots(path: Path) -> Path | None:
    """Where `path` really leads (every symlink followed) when that lies outside the allowed roots; None when it
    is allowed (or no roots are configured). Sources check every file they discover, sinks and lookup joins every
    path they open, so a symlink placed inside an allowed folder cannot lead out of it."""
    roots = allowed_roots()
    if not roots:
        return None
    real = path.resolve()
    return None if any(real == root or real.is_relative_to(root) for root in roots) else real
