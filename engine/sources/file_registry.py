"""What a filesystem source knows about its files: registrations, fingerprints, the folder walk, and the migration
of registrations written by older versions.

A file is named by its path relative to the source's folder (POSIX separators), so moving the project moves
nothing in the source's eyes. Each registration is one entry of the offset log's `files_added` list:

- a *segment*: bytes `[start, end)` of a file, holding `records` records numbered from `first` (a file is one
  segment when first seen, and one more each time complete lines are appended to it);
- a *skip*: a registered segment whose unread records are gone (the file was deleted, truncated or rewritten
  under `'source.missing-files' = 'skip'`), recorded as a dead letter;
- a *refusal*: a path that leads outside the allowed roots (a symlink), recorded as a dead letter, never read.

On an object store (`s3://bucket/prefix`) names are the keys relative to the prefix as well, so a folder copied to a
bucket (or back) keeps its registrations; dead letters and errors name a file by its full URI. A discovery is one
paged LIST of the prefix (sizes, times and ETags come with it: no request per file), and bytes are read by ranged
GETs of exactly the registered ranges.

Skips and refusals hold no records: the source's cursor passes them without cost.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat as stat_mode
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import paths, storage
from engine.storage import Location, ObjectPath, ObjectStoreError

#: a fingerprint hashes this many bytes at each end of a file's registered part
FINGERPRINT_BYTES = 4096
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class Entry:
    path: str  # relative to the source's folder
    start: int = 0
    end: int = 0
    first: int = 0
    records: int = 0
    fingerprint: str | None = None  # of the file's bytes [0, end); None for registrations by older versions
    skip: int | None = None  # a skip: the index of the segment whose unread records are gone
    unread: int = 0  # a skip: the first record of that segment not read
    refused: str | None = None  # a refusal: where the path leads
    reason: str = ""

    @property
    def segment(self) -> bool:
        return self.skip is None and self.refused is None

    def to_json(self) -> dict[str, Any]:
        if self.skip is not None:
            return {"path": self.path, "skip": self.skip, "unread": self.unread, "reason": self.reason}
        if self.refused is not None:
            return {"path": self.path, "refused": self.refused, "reason": self.reason}
        return {
            "path": self.path,
            "start": self.start,
            "end": self.end,
            "first": self.first,
            "records": self.records,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(**data)


@dataclass(frozen=True)
class Found:
    """A file a discovery listed, with what the listing said of it."""

    path: Location
    size: int
    mtime_ns: int
    tag: str = ""  # an object's ETag: a rewrite within the same second is seen too

    @property
    def observed(self) -> tuple[int, int, str]:
        return (self.size, self.mtime_ns, self.tag)


def fingerprint(path: Location, end: int) -> str | None:
    """A cheap identity of a file's first `end` bytes: a hash of the first and the last 4 KiB of them (None when
    the file is shorter). A file rewritten in place is noticed unless both ends of its old content stay the same."""
    tail_start = max(0, end - FINGERPRINT_BYTES)
    try:
        if isinstance(path, ObjectPath):  # two ranged GETs (one when the ends overlap)
            if tail_start <= FINGERPRINT_BYTES:
                whole = read_range(path, 0, end)
                head, tail = whole[: min(end, FINGERPRINT_BYTES)], whole[tail_start:]
            else:
                head, tail = read_range(path, 0, FINGERPRINT_BYTES), read_range(path, tail_start, end)
        else:
            with open(path, "rb") as handle:
                head = handle.read(min(end, FINGERPRINT_BYTES))
                handle.seek(tail_start)
                tail = handle.read(end - tail_start)
    except OSError:
        return None
    if len(tail) != end - tail_start:
        return None
    return _digest(end, head, tail)


def fingerprint_of(path: Location, start: int, data: bytes) -> str | None:
    """`fingerprint(path, start + len(data))` where `data` holds the file's bytes from `start`: the parts it covers
    are taken from it, so a file read whole at registration is not read again for its fingerprint."""
    end = start + len(data)
    tail_start = max(0, end - FINGERPRINT_BYTES)
    if tail_start < start:
        return fingerprint(path, end)  # a short segment: the tail reaches into bytes read earlier
    head = data[: min(end, FINGERPRINT_BYTES)] if start == 0 else None
    if head is None:
        try:
            head = read_range(path, 0, min(end, FINGERPRINT_BYTES))
        except OSError:
            return None
    return _digest(end, head, data[tail_start - start :])


def _digest(end: int, head: bytes, tail: bytes) -> str:
    digest = hashlib.blake2b(digest_size=8)
    digest.update(end.to_bytes(8, "little"))
    digest.update(head)
    digest.update(tail)
    return digest.hexdigest()


def read_range(path: Location, start: int, end: int | None) -> bytes:
    """Bytes `[start, end)` of `path` (to its end when `end` is None); fewer when the file is shorter. An object
    is read by one ranged GET (`end` None: the whole object from `start`)."""
    if isinstance(path, ObjectPath):
        try:
            if end is None:
                return path.read_bytes()[start:] if start == 0 else storage.read_range(path, start, path.stat().st_size)
            return storage.read_range(path, start, end)
        except ObjectStoreError:
            # A range starting past the end is refused by the store: the object is shorter than registered.
            if path.stat().st_size <= start:  # (FileNotFoundError when it is gone)
                return b""
            raise
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read() if end is None else handle.read(end - start)


def split_lines(data: bytes, at_file_start: bool) -> list[bytes]:
    """The lines of `data` (a final line without its newline included); a byte-order mark at the start of a file
    is not part of its first record."""
    if at_file_start and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if b"\r" not in data:  # the usual case: no per-line pass
        return lines
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def count_lines(data: bytes, at_file_start: bool) -> int:
    """`len(split_lines(data, at_file_start))`, counted in C without making a bytes object per line."""
    if at_file_start and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def walk(root: Location) -> tuple[dict[str, Found], dict[str, Location], Location]:
    """The files under `root` by relative name, the names that lead outside the allowed roots (with where
    they lead), and the folder names are relative to (`root`, or its parent when `root` names one file).
    Symlinked folders are followed once each; names starting with `.` or `_` (of the file or of a folder on its way)
    are skipped as in-progress. A path inside an allowed root leads outside it only through a symlink, so only
    symlinks are resolved."""
    if isinstance(root, ObjectPath):
        return _walk_objects(root)
    files: dict[str, Found] = {}
    refused: dict[str, Location] = {}
    checked = bool(paths.allowed_roots())

    def outside(path: Path) -> bool:
        if checked and path.is_symlink() and (real := paths.outside_roots(path)) is not None:
            refused[relative(path, base)] = real
            return True
        return False

    def add(name: str, path: Path) -> None:
        try:
            info = path.stat()
        except OSError:
            return  # gone since it was listed: the next discovery sees it gone
        if stat_mode.S_ISREG(info.st_mode):
            files[name] = Found(path, info.st_size, info.st_mtime_ns)

    if root.is_file() or (root.is_symlink() and not root.is_dir()):
        base = root.parent
        if root.is_file() and not outside(root):
            add(root.name, root)
        return files, refused, base
    base = root
    if not root.is_dir():
        return files, refused, base
    visited: set[str] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a symlink loop, or a folder reached twice
            dirnames[:] = []
            continue
        visited.add(real)
        here = Path(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")) and not outside(here / d))
        for name in filenames:
            path = here / name
            if name.startswith((".", "_")) or outside(path):
                continue
            add(relative(path, base), path)
    return files, refused, base


def _walk_objects(root: ObjectPath) -> tuple[dict[str, Found], dict[str, Location], Location]:
    """`walk` on an object store: one paged LIST of the prefix. When nothing lies under it, `root` may name one
    object: one HEAD tells."""
    files: dict[str, Found] = {}
    prefix = f"{root.key}/" if root.key else ""
    for meta in root.list_files():
        name = str(meta["path"])[len(prefix) :]
        if not name or any(part.startswith((".", "_")) for part in name.split("/")):
            continue
        mtime = int(meta["last_modified"].timestamp() * 1e9)
        files[name] = Found(root / name, int(meta["size"]), mtime, str(meta.get("e_tag") or ""))
    if files or not root.key:
        return files, {}, root
    try:
        info = root.stat()
    except FileNotFoundError:
        return files, {}, root
    return {root.name: Found(root, int(info.st_size), int(info.st_mtime * 1e9), str(info.e_tag or ""))}, {}, root.parent


def relative(path: Location, base: Location) -> str:
    return path.relative_to(base).as_posix()


def migrate(recorded: list[str], base: Location) -> dict[str, str]:
    """Relative names for the absolute paths that older versions recorded.

    A path inside `base` is taken relative to it. The others were recorded before the project moved: they are
    taken relative to the old folder, which is found among the ancestors of their common path as the one under
    which the most of them exist in `base` today (ties: the one with `base`'s name, then the deepest).
    """
    names: dict[str, str] = {}
    moved: list[str] = []
    if not recorded or isinstance(base, ObjectPath):  # older versions read local folders only
        return names
    here = os.path.normpath(base)
    for text in recorded:
        path = os.path.normpath(text)
        if path.startswith(here + os.sep):
            names[text] = Path(os.path.relpath(path, here)).as_posix()
        else:
            moved.append(path)
    if not moved:
        return names
    common = Path(os.path.commonpath(moved)) if len(moved) > 1 else Path(moved[0]).parent
    best: tuple[int, int, int] | None = None
    chosen = common
    for depth, candidate in enumerate([common, *common.parents]):
        if candidate == candidate.parent:
            break
        found = sum((base / os.path.relpath(p, candidate)).exists() for p in moved)
        score = (found, int(candidate.name == base.name), -depth)
        if best is None or score > best:
            best, chosen = score, candidate
    for text in recorded:
        path = os.path.normpath(text)
        if text not in names:
            names[text] = Path(os.path.relpath(path, chosen)).as_posix()
    return names


def cut_spans(
    spans: list[tuple[int, int, int]], start: list[int], end: list[int], shares: int
) -> list[tuple[list[int], list[int]]]:
    """Cut the record ranges `spans` ((file index, lo, hi), in order) between the cursors `start` and `end` into
    `shares` consecutive (start, end) cursor pairs of nearly equal record counts (a cut may fall inside a file)."""
    total = sum(hi - lo for _index, lo, hi in spans)

    def cursor(at: int) -> list[int]:
        for index, lo, hi in spans:
            if at < hi - lo:
                return [index, lo + at]
            at -= hi - lo
        return end

    cuts = [start, *[cursor(total * i // shares) for i in range(1, shares)], end]
    return list(itertools.pairwise(cuts))
