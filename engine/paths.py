"""Where connectors may read and write: every `path` option is resolved here, and checked against the allowed
roots when some are configured.

A path is a local path or an object-store URI (`s3://bucket/prefix`, `gs://`, `az://`; engine.storage); any other
scheme (`hdfs://`, `http://`) is refused, naming the table and the option, before anything is written. A table's
`'storage.<key>'` options travel with its location (credentials, endpoint, encryption for its bucket).

Roots come from `TIMELAPSE_ALLOWED_ROOTS` (entries separated by `:`; an entry may be a URI such as
`s3://bucket/prefix`, whose own `://` does not separate), which `timelapse run --allowed-root DIR` extends. A local
path is resolved (user home, relative to the SQL file, symlinks and `..` followed) before the check, so neither
`../../etc` nor a symlink leads out of a root; an object key's `..` are folded before the check (object stores have
no symlinks), so `s3://b/prefix/../other` is `s3://b/other`. A local root never admits an object path, nor an
object root a local one. Without roots, any path is allowed, as in Flink and Spark.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from engine.errors import EngineError, UserError
from engine.storage import Location, ObjectPath, ObjectStoreError, UnsupportedStorage, first_line, is_uri, location

ROOTS_VARIABLE = "TIMELAPSE_ALLOWED_ROOTS"
#: the schemes a connector's 'path' may name, as the refusal lists them
SUPPORTED = "a local path, file://, s3://, gs:// or az://"


class PathNotAllowed(UserError, ValueError):
    """A connector path outside the configured roots."""


class MissingBucket(UserError, ValueError):
    """A connector path in a bucket (container) that does not exist: a typo in the SQL, which no retry mends."""


#: how object stores say that a bucket or container does not exist (S3, GCS, Azure)
_NO_BUCKET = ("NoSuchBucket", "bucket does not exist", "ContainerNotFound")


@contextmanager
def reaching(table: str, path: Location) -> Iterator[None]:
    """Where a connector first reaches its object-store location: a failure becomes one line naming the table.
    A missing bucket is a user error (exit 2: the SQL names it, and no retry creates it); any other failure of the
    store (credentials, network, after the client's retries) a storage failure (exit 5). Local paths: unchanged."""
    try:
        yield
    except EngineError:
        raise
    except FileNotFoundError:
        if isinstance(path, ObjectPath) and bucket_missing(path):
            raise _missing(table, path) from None
        raise
    except Exception as err:
        if not isinstance(path, ObjectPath) or not (isinstance(err, OSError) or "Delta" in type(err).__name__):
            raise
        if bucket_missing(path):
            raise _missing(table, path) from None
        raise ObjectStoreError(f"table '{table}': cannot reach {path}: {_one_line(err)}") from None


def _missing(table: str, path: ObjectPath) -> MissingBucket:
    return MissingBucket(
        f"table '{table}': 'path' = '{path}': the bucket '{path.bucket}' does not exist "
        "(check its name, or create it first)"
    )


def bucket_missing(path: ObjectPath) -> bool:
    """Whether `path`'s bucket does not exist: one GET of a key that is not there answers NoSuchBucket then."""
    probe = ObjectPath(path.scheme, path.bucket, ".timelapse-bucket-probe", path.options)
    try:
        probe.read_bytes()
    except FileNotFoundError as err:
        return any(marker in str(err.__cause__ or err) for marker in _NO_BUCKET)
    except Exception as err:
        return any(marker in str(err) for marker in _NO_BUCKET)
    return False


def _one_line(err: BaseException) -> str:
    """A delta-rs or object-store error's first meaningful line, without colour codes or request dumps."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip(" ↳") for line in text.splitlines() if line.strip(" ↳")]
    return first_line(Exception(" / ".join(lines[:2]) if lines else type(err).__name__))


def allowed_roots() -> list[Location]:
    text = os.environ.get(ROOTS_VARIABLE, "")
    # `:` separates entries, except the one of a URI's `scheme://`
    entries = [p.strip() for p in re.split(r":(?!//)", text) if p.strip()]
    roots: list[Location] = []
    for entry in entries:
        if is_uri(entry):
            root = location(entry)
            roots.append(root if isinstance(root, ObjectPath) else root.expanduser().resolve())
        else:
            roots.append(Path(entry).expanduser().resolve())
    return roots


def connector_path(
    table: str, option: str, value: str, base_dir: Path, options: Mapping[str, str] | None = None
) -> Location:
    """The absolute location `value` names (relative to `base_dir`), refused if its scheme is not supported or
    it lies outside the allowed roots. `options` (a table's storage options) are registered for its bucket."""
    try:
        path = location(value, options or None, base_dir)
    except UnsupportedStorage as err:
        raise UnsupportedStorage(f"table '{table}': '{option}' = '{value}': {_reason(err)}") from None
    if isinstance(path, Path):
        path = path.expanduser()
    real = outside_roots(path)
    if real is not None:
        raise PathNotAllowed(
            f"table '{table}': '{option}' = '{value}' resolves to {real}, outside the allowed roots ({_listing()})"
        )
    return path


def _reason(err: UnsupportedStorage) -> str:
    text = str(err)
    if "is not supported" in text:
        scheme = text.split("the scheme ", 1)[-1].split(" ", 1)[0]
        return f"the scheme {scheme} is not supported; use {SUPPORTED}"
    return text.split(": ", 1)[-1] if text.startswith("'") else text


def outside_roots(path: Location) -> Location | None:
    """Where `path` really leads (every symlink followed) when that lies outside the allowed roots; None when it
    is allowed (or no roots are configured). Sources check every file they discover, sinks and lookup joins every
    path they open, so a symlink placed inside an allowed folder cannot lead out of it."""
    roots = allowed_roots()
    if not roots:
        return None
    if isinstance(path, ObjectPath):
        inside = any(isinstance(r, ObjectPath) and (path == r or path.is_relative_to(r)) for r in roots)
        return None if inside else path
    real = path.resolve()
    local = [r for r in roots if isinstance(r, Path)]
    return None if any(real == root or real.is_relative_to(root) for root in local) else real


def confined_file(table: str, path: Location, what: str = "file") -> Location:
    """`path`, refused (naming the table and the file) when it leads outside the allowed roots: for files a
    connector opens that the user did not name themselves (a lookup table's files, the data files a Delta log
    names), where a symlink, an absolute path or `..` could lead anywhere."""
    real = outside_roots(path)
    if real is not None:
        listing = _listing()
        raise PathNotAllowed(f"table '{table}': {what} {path} leads to {real}, outside the allowed roots ({listing})")
    return path


def confined_delta_table(table: str, path: Location) -> None:
    """Refuse a Delta table at `path` through which reads or writes would leave the allowed roots: the table
    directory itself and any symlink under it (its `_delta_log`, a log or checkpoint file, a partition directory
    new files would be written into, a data file). Checked when the table is opened, before anything is written:
    delta-rs writes new files itself, always under the table directory, so what it writes stays inside once no
    symlink leads out. `confined_files` checks the data files a log names, which may be absolute paths. An object
    store has no symlinks: the table's own location is all there is to check."""
    if not allowed_roots():
        return
    confined_file(table, path, "the Delta table")
    if isinstance(path, Path) and path.is_dir():
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
        else:
            try:
                confined_file(table, location(uri))
            except UnsupportedStorage:
                raise PathNotAllowed(
                    f"table '{table}': data file {uri} is in a storage timelapse cannot check"
                ) from None


def local_path(uri: str) -> Path | None:
    """The local path of a Delta file URI (`file:///...` or a plain path); None for object storage."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if len(parsed.scheme) <= 1 else None  # one letter: a Windows drive


def _listing() -> str:
    return ", ".join(str(r) for r in allowed_roots())
