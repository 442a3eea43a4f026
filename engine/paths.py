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
from urllib.parse import unquote, urlparse

from engine.errors import UserError
from engine.storage import is_uri, location

ROOTS_VARIABLE = "TIMELAPSE_ALLOWED_ROOTS"


class PathNotAllowed(UserError, ValueError):
    """A connector path outside the configured roots."""


def allowed_roots() -> list[Path]:
    text = os.environ.get(ROOTS_VARIABLE, "")
    return [Path(p).expanduser().resolve() for p in text.split(os.pathsep) if p.strip()]


def connector_path(table: str, option: str, value: str, base_dir: Path) -> Path:
    """The absolute path `value` names (relative to `base_dir`), refused if it lies outside the allowed roots."""
    if is_uri(value):  # an object store (s3://...); unsupported schemes are refused by `location`
        return location(value)  # type: ignore[return-value]
    candidate = Path(value).expanduser()
    path = candidate if candidate.is_absolute() else base_dir / candidate
    real = outside_roots(path)
    if real is not None:
        raise PathNotAllowed(
            f"table '{table}': '{option}' = '{value}' resolves to {real}, outside the allowed roots ({_listing()})"
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


def confined_file(table: str, path: Path, what: str = "file") -> Path:
    """`path`, refused (naming the table and the file) when it leads outside the allowed roots: for files a
    connector opens that the user did not name themselves (a lookup table's files, the data files a Delta log
    names), where a symlink, an absolute path or `..` could lead anywhere."""
    real = outside_roots(path)
    if real is not None:
        listing = _listing()
        raise PathNotAllowed(f"table '{table}': {what} {path} leads to {real}, outside the allowed roots ({listing})")
    return path


def confined_delta_table(table: str, path: Path) -> None:
    """Refuse a Delta table at `path` through which reads or writes would leave the allowed roots: the table
    directory itself and any symlink under it (its `_delta_log`, a log or checkpoint file, a partition directory
    new files would be written into, a data file). Checked when the table is opened, before anything is written:
    delta-rs writes new files itself, always under the table directory, so what it writes stays inside once no
    symlink leads out. `confined_files` checks the data files a log names, which may be absolute paths."""
    if not allowed_roots():
        return
    confined_file(table, path, "the Delta table")
    if path.is_dir():
        for folder, dirs, names in os.walk(path):  # followlinks=False: a symlinked directory is checked, not entered
            for name in (*dirs, *names):
                entry = Path(folder) / name
                if entry.is_symlink():
                    confined_file(table, entry)


def confined_files(table: str, uris: list[str]) -> None:
    """Refuse when one of the data files `uris` (a Delta table's `file_uris()`) leads outside the roots."""
    if not allowed_roots():
        return
    for uri in uris:
        local = local_path(uri)
        if local is not None:
            confined_file(table, local)


def local_path(uri: str) -> Path | None:
    """The local path of a Delta file URI (`file:///...` or a plain path); None for object storage."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if len(parsed.scheme) <= 1 else None  # one letter: a Windows drive


def _listing() -> str:
    return ", ".join(str(r) for r in allowed_roots())
