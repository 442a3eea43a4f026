"""Where the engine's files live: a local disk or an object store (S3, GCS, Azure), behind one small interface.

A location is either a `pathlib.Path` (a local file or folder) or an `ObjectPath` (`s3://bucket/key`), which
offers the part of `Path`'s interface the engine uses (`/`, `name`, `parent`, `exists`, `read_bytes`,
`iterdir`, `glob`, `unlink`, ...), so code that walks a state directory reads the same on both. Writes that
must be atomic, conditional puts (the lease), byte ranges, copying and deleting whole trees go through the
functions below, which pick the local or the object-store way.

Object stores are reached through obstore (the `s3` extra), the Python binding of the Rust `object_store` crate
that delta-rs itself is built on; Delta tables are opened by delta-rs with the same options (`table_uri`,
`storage_options`). Credentials and endpoints come from the standard environment variables (`AWS_*`,
`GOOGLE_*`, `AZURE_*`), which both libraries read, and from per-location options (a table's `'storage.*'` keys,
`--storage-option`), which travel with the `ObjectPath` to everything under it.

Object stores have no directories: a folder exists when an object lies under its prefix; `mkdir` does nothing.
A single PUT is atomic (a reader sees the old object or the new one), so `write_atomic` is one PUT there.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any, TypeAlias
from urllib.parse import unquote, urlparse

from engine.errors import StorageFailure, UserError

#: schemes delta-rs and obstore speak, by the store that serves them
OBJECT_SCHEMES = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
    "azure": "azure",
}

# Options that configure the HTTP client rather than the store (obstore takes them apart; delta-rs takes all in one).
CLIENT_OPTIONS = frozenset(
    {"allow_http", "allow_invalid_certificates", "connect_timeout", "timeout", "proxy_url", "pool_idle_timeout"}
)


class UnsupportedStorage(UserError, ValueError):
    """A URI whose scheme the engine cannot read or write."""


class ObjectStoreError(StorageFailure, OSError):
    """An object store refused or failed a request (after the client's retries)."""


class ConditionFailed(RuntimeError):
    """A conditional put lost: the object exists (create) or changed since it was read (update)."""


@dataclass(frozen=True)
class ObjectPath:
    """`scheme://bucket/key` in an object store, with the options to reach it (not part of its identity)."""

    scheme: str
    bucket: str
    key: str = ""
    options: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    # -- naming ----------------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else f"{self.scheme}://{self.bucket}"

    def __truediv__(self, other: str | PurePosixPath) -> ObjectPath:
        key = posixpath.normpath(posixpath.join(self.key, str(other))) if self.key else posixpath.normpath(str(other))
        if key.startswith(".."):
            raise UnsupportedStorage(f"{other} leads out of the bucket {self.scheme}://{self.bucket}")
        return ObjectPath(self.scheme, self.bucket, "" if key == "." else key, self.options)

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.scheme, self.bucket, posixpath.dirname(self.key), self.options)

    @property
    def parts(self) -> tuple[str, ...]:
        return (f"{self.scheme}://{self.bucket}", *(p for p in self.key.split("/") if p))

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def is_absolute(self) -> bool:
        return True

    def resolve(self, strict: bool = False) -> ObjectPath:
        return self

    absolute = resolve

    def expanduser(self) -> ObjectPath:
        return self

    def is_symlink(self) -> bool:
        return False

    def is_relative_to(self, other: object) -> bool:
        if not isinstance(other, ObjectPath) or (other.scheme, other.bucket) != (self.scheme, self.bucket):
            return False
        return not other.key or self.key == other.key or self.key.startswith(other.key + "/")

    def relative_to(self, other: ObjectPath) -> PurePosixPath:
        if not self.is_relative_to(other):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.key[len(other.key) :].lstrip("/") or ".")

    def with_options(self, options: Mapping[str, str]) -> ObjectPath:
        merged = dict(self.options) | {k: str(v) for k, v in options.items()}
        return ObjectPath(self.scheme, self.bucket, self.key, tuple(sorted(merged.items())))

    def __fspath__(self) -> str:
        raise TypeError(f"{self} is in an object store, not on the local disk")

    # -- reading ---------------------------------------------------------------------------------
    def _prefix(self) -> str:
        return f"{self.key}/" if self.key else ""

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_file(self) -> bool:
        if not self.key:
            return False
        try:
            _call(self, "read", lambda ob: ob.head(_store(self), self.key))
        except FileNotFoundError:
            return False
        return True

    def is_dir(self) -> bool:
        listing = _call(self, "list", lambda ob: ob.list_with_delimiter(_store(self), prefix=self._prefix() or None))
        return bool(listing["objects"] or listing["common_prefixes"])

    def stat(self) -> SimpleNamespace:
        meta = _call(self, "read", lambda ob: ob.head(_store(self), self.key))
        return SimpleNamespace(
            st_size=int(meta["size"]), st_mtime=meta["last_modified"].timestamp(), e_tag=meta["e_tag"]
        )

    def read_bytes(self) -> bytes:
        return bytes(_call(self, "read", lambda ob: ob.get(_store(self), self.key).bytes()))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def iterdir(self) -> Iterator[ObjectPath]:
        listing = _call(self, "list", lambda ob: ob.list_with_delimiter(_store(self), prefix=self._prefix() or None))
        for prefix in listing["common_prefixes"]:
            yield self / posixpath.basename(prefix.rstrip("/"))
        for meta in listing["objects"]:
            yield self / posixpath.basename(meta["path"])

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """`*.json`-style patterns in this folder; `**/<pattern>` anywhere under it."""
        if pattern.startswith("**/"):
            yield from self.rglob(pattern[3:])
            return
        for child in self.iterdir():
            if fnmatch.fnmatchcase(child.name, pattern):
                yield child

    def rglob(self, pattern: str) -> Iterator[ObjectPath]:
        for meta in self.list_files():
            if fnmatch.fnmatchcase(posixpath.basename(meta["path"]), pattern):
                yield ObjectPath(self.scheme, self.bucket, meta["path"], self.options)

    def list_files(self) -> list[dict[str, Any]]:
        """Every object under this prefix (one paged LIST), with its size, modification time and ETag."""
        batches = _call(self, "list", lambda ob: list(ob.list(_store(self), prefix=self._prefix() or None)))
        return [meta for batch in batches for meta in batch]

    # -- writing ---------------------------------------------------------------------------------
    def write_bytes(self, data: bytes) -> int:
        _call(self, "write", lambda ob: ob.put(_store(self), self.key, data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not self.is_file():
            raise FileNotFoundError(str(self))
        _call(self, "delete", lambda ob: ob.delete(_store(self), self.key))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a folder exists once an object lies under it."""

    def rmdir(self) -> None:
        """Nothing to do: an empty folder does not exist."""


Location: TypeAlias = Path | ObjectPath


# -- parsing -------------------------------------------------------------------------------------
def scheme_of(text: str) -> str | None:
    """The URI scheme of `text`, lower case; None for a plain path (a one-letter scheme is a Windows drive)."""
    parsed = urlparse(str(text))
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else None


def is_uri(text: str | Location) -> bool:
    return isinstance(text, ObjectPath) or scheme_of(str(text)) is not None


def location(text: str | Location, options: Mapping[str, str] | None = None, base_dir: Path | None = None) -> Location:
    """The location `text` names: an `ObjectPath` for `s3://`, `gs://`, `az://`...; a local `Path` for a plain
    path or `file://` (relative to `base_dir`, or the working directory). Refused: any other scheme."""
    if isinstance(text, ObjectPath):
        return text.with_options(options) if options else text
    if isinstance(text, Path):
        return text if text.is_absolute() or base_dir is None else base_dir / text
    scheme = scheme_of(text)
    if scheme is None:
        path = Path(text).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path
    parsed = urlparse(text)
    if scheme == "file":
        return Path(unquote(parsed.path))
    if scheme not in OBJECT_SCHEMES:
        known = ", ".join(f"{s}://" for s in ("s3", "gs", "az", "abfss", "file"))
        raise UnsupportedStorage(f"'{text}': the scheme {scheme}:// is not supported (use a local path or {known})")
    if not parsed.netloc:
        raise UnsupportedStorage(f"'{text}' names no bucket (expected {scheme}://<bucket>/<path>)")
    key = posixpath.normpath(unquote(parsed.path).lstrip("/")) if parsed.path.strip("/") else ""
    if key.startswith(".."):
        raise UnsupportedStorage(f"'{text}' leads out of its bucket")
    path = ObjectPath(scheme, parsed.netloc, "" if key == "." else key)
    if options:
        register(path, options)
    known = _BUCKET_OPTIONS.get((path.scheme, path.bucket))
    return path.with_options(known) if known else path


# Options given for a bucket (a table's `storage.*`, `--storage-option`) hold for every later location in it, so
# a path read back from the manifest as text reaches its bucket as the path the user declared did.
_BUCKET_OPTIONS: dict[tuple[str, str], dict[str, str]] = {}


def register(path: ObjectPath, options: Mapping[str, str]) -> None:
    """Remember `options` for every location in `path`'s bucket, in this process."""
    if options:
        known = _BUCKET_OPTIONS.setdefault((path.scheme, path.bucket), {})
        known.update({k: str(v) for k, v in options.items()})


def absolute(path: Location) -> Location:
    """`path` made absolute (`..` and `.` folded, symlinks kept); an object path already is."""
    return path if isinstance(path, ObjectPath) else Path(os.path.abspath(path))


def table_uri(path: str | Location) -> str:
    """What delta-rs and Polars take as a table's address."""
    return str(path)


def storage_options(path: str | Location) -> dict[str, str] | None:
    """The options delta-rs and Polars need to reach `path` (None on a local disk, or when the environment's
    `AWS_*` variables say all: both libraries read them)."""
    if isinstance(path, str):
        if scheme_of(path) not in OBJECT_SCHEMES:
            return None
        path = location(path)
    if not isinstance(path, ObjectPath):
        return None
    merged = _BUCKET_OPTIONS.get((path.scheme, path.bucket), {}) | dict(path.options)
    return merged or None


# -- operations that differ by storage ----------------------------------------------------------
def write_atomic(path: Location, data: bytes) -> None:
    """Replace `path` whole: a reader (or a crash) sees the old content or the new, never part of it."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data)  # a PUT is atomic
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_versioned(path: ObjectPath) -> tuple[bytes, str] | None:
    """An object's content and its ETag (for a later `put_if_match`); None if it does not exist."""
    try:
        result = _call(path, "read", lambda ob: ob.get(_store(path), path.key))
    except FileNotFoundError:
        return None
    return bytes(result.bytes()), str(result.meta["e_tag"])


def put_if_absent(path: ObjectPath, data: bytes) -> str:
    """Create `path` unless it exists (`If-None-Match: *`); its ETag. ConditionFailed if it exists."""
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    try:
        result = _call(
            path,
            "write",
            lambda ob: ob.put(_store(path), path.key, data, mode="create"),
            passing=(AlreadyExistsError, PreconditionError),
        )
    except (AlreadyExistsError, PreconditionError):
        raise ConditionFailed(f"{path} exists") from None
    return str(result["e_tag"])


def put_if_match(path: ObjectPath, data: bytes, e_tag: str) -> str:
    """Replace `path` if it is still the version `e_tag` names (`If-Match`); its new ETag. ConditionFailed if not."""
    from obstore.exceptions import PreconditionError

    try:
        result = _call(
            path,
            "write",
            lambda ob: ob.put(_store(path), path.key, data, mode={"e_tag": e_tag}),
            passing=(PreconditionError, FileNotFoundError),
        )
    except (PreconditionError, FileNotFoundError):
        raise ConditionFailed(f"{path} changed since it was read") from None
    return str(result["e_tag"])


def read_range(path: Location, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file."""
    if end <= start:
        return b""
    if isinstance(path, ObjectPath):
        return bytes(_call(path, "read", lambda ob: ob.get_range(_store(path), path.key, start=start, end=end)))
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(end - start)


def read_if_exists(path: Location) -> bytes | None:
    """A file's content, or None if it does not exist: one GET on an object store, where `exists()` then
    `read_bytes()` costs a HEAD, a LIST (is it a folder?) and the GET."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def delete_files(paths: Iterable[Location]) -> int:
    """Delete these files (missing ones are skipped); how many were asked for. On an object store one request
    per 1,000 keys of a bucket (DeleteObjects), not one per file."""
    count = 0
    batches: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[ObjectPath]] = {}
    for path in paths:
        count += 1
        if isinstance(path, ObjectPath):
            batches.setdefault((path.scheme, path.bucket, path.options), []).append(path)
        else:
            path.unlink(missing_ok=True)
    for group in batches.values():
        for chunk in range(0, len(group), 1000):
            keys = [p.key for p in group[chunk : chunk + 1000]]
            _call(group[0], "delete", lambda ob, keys=keys, at=group[0]: ob.delete(_store(at), keys))
    return count


def move(source: Location, target: Location) -> None:
    """Move one file within a state directory: a rename on a local disk; in an object store (which has no
    rename) a server-side copy, then the delete of the original, so a crash between the two leaves both copies
    and never neither."""
    if isinstance(source, ObjectPath) and isinstance(target, ObjectPath):
        if (source.scheme, source.bucket) == (target.scheme, target.bucket):
            _call(target, "copy", lambda ob: ob.copy(_store(target), source.key, target.key))
        else:
            target.write_bytes(source.read_bytes())
        source.unlink(missing_ok=True)
        return
    if isinstance(source, Path) and isinstance(target, Path):
        source.rename(target)
        return
    target.write_bytes(source.read_bytes())
    source.unlink()


def remove_tree(path: Location) -> None:
    """Delete a folder and everything under it (nothing if it is absent)."""
    if isinstance(path, ObjectPath):
        delete_files(ObjectPath(path.scheme, path.bucket, meta["path"], path.options) for meta in path.list_files())
        return
    shutil.rmtree(path, ignore_errors=True)


def copy_tree(source: Location, target: Location) -> int:
    """Copy every file under `source` to the same relative place under `target`, across storages; the count.
    Within one bucket the store copies server-side."""
    if isinstance(source, Path) and isinstance(target, Path):
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=False)
        return sum(1 for _ in files_under(target))
    count = 0
    for relative in files_under(source):
        src, dst = source / relative, target / relative
        if (
            isinstance(src, ObjectPath)
            and isinstance(dst, ObjectPath)
            and (src.scheme, src.bucket)
            == (
                dst.scheme,
                dst.bucket,
            )
        ):
            _call(dst, "copy", lambda ob, src=src, dst=dst: ob.copy(_store(dst), src.key, dst.key))
        else:
            if isinstance(dst, Path):
                dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
        count += 1
    return count


def file_sizes(root: Location) -> dict[str, int]:
    """The size of every file under `root`, by relative POSIX path (an object store's in one paged LIST)."""
    if isinstance(root, ObjectPath):
        prefix = root._prefix()
        return {meta["path"][len(prefix) :]: int(meta["size"]) for meta in root.list_files()}
    return {relative: (root / relative).stat().st_size for relative in files_under(root)}


def files_under(root: Location) -> Iterator[str]:
    """The relative POSIX paths of every file under `root` (symlinks to files included, not followed into
    directories)."""
    if isinstance(root, ObjectPath):
        prefix = root._prefix()
        for meta in root.list_files():
            yield meta["path"][len(prefix) :]
        return
    for folder, _dirs, names in os.walk(root):
        for name in names:
            yield (Path(folder) / name).relative_to(root).as_posix()


# -- the object-store client ------------------------------------------------------------------
_STORES: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}

#: a request is retried for at most this long before the error reaches the user (obstore's default is 3 min)
RETRY_TIMEOUT = timedelta(seconds=30)


def obstore_module() -> Any:
    try:
        import obstore
    except ImportError:
        raise UnsupportedStorage(
            "object storage needs the s3 extra: pip install 'timelapse[s3]' (it serves s3://, gs:// and az://)"
        ) from None
    return obstore


def _store(path: ObjectPath) -> Any:
    cache_key = (path.scheme, path.bucket, path.options)
    store = _STORES.get(cache_key)
    if store is None:
        obstore_module()
        from obstore.store import from_url

        config: dict[str, Any] = {}
        client: dict[str, Any] = {}
        for key, value in path.options:
            bare = key.lower().removeprefix("aws_").removeprefix("google_").removeprefix("azure_")
            if bare in CLIENT_OPTIONS:
                client[bare] = value.lower() == "true" if bare.startswith("allow_") else value
            else:
                config[key] = value
        if os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true":
            client.setdefault("allow_http", True)
        retry = {
            "max_retries": 5,
            "retry_timeout": RETRY_TIMEOUT,
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2.0},
        }
        try:
            store = from_url(
                f"{path.scheme}://{path.bucket}",
                config=config or None,
                client_options=client or None,
                retry_config=retry,
            )  # type: ignore[arg-type]
        except BaseException as error:  # a Rust panic on a malformed option is a BaseException
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            raise UnsupportedStorage(f"{path.scheme}://{path.bucket}: {first_line(error)}") from None
        _STORES[cache_key] = store
    return store


def first_line(error: BaseException) -> str:
    """An object-store error as one line: its first, without the request dump the client appends."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = text.split(": Error performing", 1)[0]
    return text[:300]


REQUESTS = {"count": 0}  # object-store requests this process made through this module (benchmarks read it)


def _call(path: ObjectPath, what: str, action: Any, passing: tuple[type[BaseException], ...] = ()) -> Any:
    """Run one obstore request; a failure becomes ObjectStoreError with one line, a missing object
    FileNotFoundError, and the exceptions in `passing` pass through for the caller."""
    ob = obstore_module()
    REQUESTS["count"] += 1
    try:
        return action(ob)
    except FileNotFoundError as error:
        if FileNotFoundError in passing:
            raise
        raise FileNotFoundError(f"{path}: not found") from error
    except Exception as error:
        if passing and isinstance(error, passing):
            raise
        raise ObjectStoreError(f"cannot {what} {path}: {first_line(error)}") from None


def options_from(values: Mapping[str, str], prefix: str = "storage.") -> dict[str, str]:
    """The storage options among a table's WITH options: `'storage.aws_region' = 'eu-west-1'` ->
    `{"aws_region": "eu-west-1"}` (delta-rs' and obstore's own key names)."""
    return {k[len(prefix) :]: str(v) for k, v in values.items() if k.startswith(prefix)}
