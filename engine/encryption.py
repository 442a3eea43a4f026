"""Column-level encryption: the values of declared sensitive columns are stored as AES-256-GCM ciphertext.

Declared with `'encrypt.columns' = 'card,email'` on a table (or `SET 'encrypt.columns'` for the whole pipeline)
and a key reference, `'encrypt.key' = 'env:NAME'` or `'file:/path/key'` (default `env:TIMELAPSE_KEY`). The key
itself is 32 bytes: 64 hex digits or base64 in the variable or file, or 32 raw bytes in a file. Key references
are stored with the tables; keys never are.

The engine computes on plaintext in memory; only what it writes is sealed, at the Delta write boundary
(`engine.delta_tables`), by column name: every Delta table the engine creates (sinks, operator state, late rows)
turns a declared column into a `binary` column whose field metadata (`timelapse.encrypted`) records the original
type and the key reference. Dead letters of a source that declares encrypted columns have their raw text, raw
bytes and message key sealed. Reading through `engine.delta_tables` opens them again when the key is at hand;
without it a reader sees the ciphertext.

A value is `b"\\x01" + key id (4 bytes) + nonce (12 bytes, random per value) + ciphertext + tag`; the associated
data is the header and the column's name, so a value moved to another column does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from engine.errors import UserError

META = "timelapse.encrypted"
VERSION = b"\x01"
HEADER = 5  # version + key id
NONCE = 12
DEFAULT_KEY = "env:TIMELAPSE_KEY"
# Columns of a dead-letter table that hold the record as read (a leak path for a source's sensitive values).
DEAD_LETTER_COLUMNS = ("raw", "raw_bytes", "key")


class KeyError_(UserError, ValueError):
    """A key that is missing, malformed, or does not open the values (wrong key): exit 2, one line."""


@dataclass(frozen=True)
class Key:
    ref: str  # where it came from: env:NAME, file:/path, or "given" (handed to use_key)
    secret: bytes

    @property
    def kid(self) -> bytes:
        """A 4-byte key id (a check value, not the key): tells a wrong key from damaged data."""
        return hashlib.sha256(b"timelapse column key\x00" + self.secret).digest()[:4]

    def cipher(self) -> Any:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self.secret)


def _decode(raw: bytes, ref: str) -> bytes:
    if len(raw) == 32 and ref.startswith("file:"):
        return raw
    text = raw.strip()
    for decode in (binascii.unhexlify, lambda t: base64.b64decode(t, validate=True)):
        try:
            secret = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(secret) == 32:
            return secret
    raise KeyError_(f"encryption key {ref}: must be 32 bytes (64 hex digits or base64), e.g. `openssl rand -hex 32`")


def load_key(ref: str) -> Key | None:
    """The key a reference names, or None when the variable is unset or the file missing."""
    ref = ref.strip()
    if ref.startswith("env:"):
        value = os.environ.get(ref[4:])
        return None if not value else Key(ref, _decode(value.encode(), ref))
    if ref.startswith("file:"):
        path = Path(ref[5:]).expanduser()
        if not path.is_file():
            return None
        return Key(ref, _decode(path.read_bytes(), ref))
    raise KeyError_(f"encryption key '{ref}': write 'env:VARIABLE' or 'file:/path/to/key'")


# -- the process's keys and declared columns ----------------------------------------------------
class Keyring:
    def __init__(self) -> None:
        self.by_kid: dict[bytes, Key] = {}
        self.columns: dict[str, Key] = {}  # declared sensitive column -> its key
        self.sources: dict[str, Key] = {}  # sources whose dead letters are sealed
        self.strict = False  # a pipeline run: a missing key is an error, never ciphertext passed on

    def add(self, key: Key) -> Key:
        self.by_kid.setdefault(key.kid, key)
        return key


KEYS = Keyring()


def use_key(key: str | bytes) -> None:
    """Make a key available to readers in this process (a notebook): `use_key("env:TIMELAPSE_KEY")`,
    `use_key("file:/secrets/key")` or the 32 bytes themselves."""
    if isinstance(key, bytes):
        KEYS.add(Key("given", key if len(key) == 32 else _decode(key, "given")))
        return
    found = load_key(key)
    if found is None:
        raise KeyError_(f"encryption key {key}: not set")
    KEYS.add(found)


def _split(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def configure(plan: Any) -> None:
    """Load the keys a pipeline declares (SET and its tables' options); called once by a run before any I/O."""
    global KEYS
    keyring = Keyring()
    keyring.by_kid = KEYS.by_kid
    keyring.strict = True
    loaded: dict[str, Key] = {}

    def key_for(ref: str, what: str) -> Key:
        if ref not in loaded:
            key = load_key(ref)
            if key is None:
                raise KeyError_(f"{what}: encryption key {ref} is not set")
            loaded[ref] = keyring.add(key)
        return loaded[ref]

    options = plan.options
    pipeline_ref = options.get("encrypt.key", DEFAULT_KEY)
    for column in _split(options.get("encrypt.columns")):
        keyring.columns[column] = key_for(pipeline_ref, f"SET 'encrypt.columns' ({column})")
    tables = {t.name: t for t in plan.sources.values()} | {s.table.name: s.table for s in plan.sinks}
    for table in tables.values():
        columns = _split(table.options.get("encrypt.columns"))
        if not columns:
            continue
        key = key_for(table.options.get("encrypt.key", pipeline_ref), f"table '{table.name}'")
        for column in columns:
            other = keyring.columns.get(column)
            if other is not None and other.kid != key.kid:
                raise KeyError_(f"table '{table.name}': column '{column}' is declared with two different keys")
            keyring.columns[column] = key
        if table.name in plan.sources:
            keyring.sources[table.name] = key
    KEYS = keyring


def reset() -> None:
    """Forget the declared columns (tests run several pipelines in one process); known keys stay."""
    global KEYS
    keys = KEYS.by_kid
    KEYS = Keyring()
    KEYS.by_kid = keys


def dead_letter_key(source: str) -> Key | None:
    return KEYS.sources.get(source)


def declared(names: Iterable[str]) -> dict[str, Key]:
    """The declared sensitive columns among `names`, with their keys."""
    return {n: KEYS.columns[n] for n in names if n in KEYS.columns}


# -- schemas -------------------------------------------------------------------------------------
def field_meta(field: Any) -> dict[str, str] | None:
    """The encryption record of a Delta or Arrow field (None: a plain column)."""
    metadata = field.metadata or {}
    raw = metadata.get(META) if META in metadata else metadata.get(META.encode())
    if raw is None:
        return None
    return dict(json.loads(raw))


def sealed_columns(schema: Any) -> dict[str, dict[str, str]]:
    """Per encrypted column of a Delta table's schema, its record (original type, key reference, key id)."""
    return {f.name: meta for f in schema.fields if (meta := field_meta(f)) is not None}


def _type_record(dtype: pa.DataType) -> str:
    return base64.b64encode(pa.schema([pa.field("v", dtype)]).serialize().to_pybytes()).decode()


def _type_of(record: Mapping[str, str]) -> pl.DataType:
    arrow = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(record["type"]))).field("v").type
    return pl.from_arrow(pa.array([], arrow)).dtype  # type: ignore[union-attr]


def seal_schema(table: pa.Table, keys: Mapping[str, Key]) -> pa.Table:
    """`table` with each column in `keys` encrypted and marked in its field metadata."""
    if not keys:
        return table
    for name, key in keys.items():
        index = table.schema.get_field_index(name)
        if index < 0:
            continue
        column = table.column(index)
        if pa.types.is_binary(column.type) and field_meta(table.schema.field(index)) is not None:
            continue  # sealed already
        record = {"type": _type_record(column.type), "key": key.ref, "kid": key.kid.hex()}
        field = pa.field(name, pa.binary(), nullable=True, metadata={META: json.dumps(record)})
        values = pa.array(sealed_values(pl.from_arrow(column), name, key), pa.binary())  # type: ignore[arg-type]
        table = table.set_column(index, field, values)
    return table


def seal_for(schema: Any, table: pa.Table, refuse: Iterable[str] = ()) -> pa.Table:
    """Seal `table`'s columns as the target Delta table's `schema` records them (the table decides, once created).
    `refuse`: columns that must be plaintext (a MERGE's keys: ciphertext with random nonces never matches)."""
    records = sealed_columns(schema)
    if not records:
        return table
    if both := sorted(set(refuse) & set(records)):
        raise KeyError_(f"encrypted column '{both[0]}' cannot be a primary key of an upserting sink")
    return seal_schema(table, {name: key_of(record, name) for name, record in records.items()})


def key_of(record: Mapping[str, str], column: str) -> Key:
    """The key a column was sealed with: a known key with its id, else the reference it records."""
    kid = bytes.fromhex(record["kid"])
    key = KEYS.by_kid.get(kid)
    if key is not None:
        return key
    found = load_key(record["key"])
    if found is None:
        raise KeyError_(f"column '{column}' is encrypted with the key {record['key']}, which is not set")
    if found.kid != kid:
        raise KeyError_(
            f"column '{column}': the key {record['key']} (id {found.kid.hex()}) is not the one it was encrypted "
            f"with (id {kid.hex()}): wrong key"
        )
    return KEYS.add(found)


# -- values --------------------------------------------------------------------------------------
def _plain_bytes(series: pl.Series) -> pl.Series:
    if series.dtype == pl.Binary:
        return series
    if series.dtype.is_temporal():
        series = series.to_physical()
    return series.cast(pl.String).cast(pl.Binary)


def encrypt(series: pl.Series, column: str, key: Key) -> pl.Series:
    """AES-256-GCM per value (random nonce each), with the header and column name as associated data."""
    return pl.Series(column, sealed_values(series, column, key), dtype=pl.Binary)


def sealed_values(series: pl.Series, column: str, key: Key) -> list[bytes | None]:
    cipher = key.cipher()
    header = VERSION + key.kid
    aad = header + column.encode()
    values = _plain_bytes(series).to_list()
    nonces = os.urandom(NONCE * len(values))
    out = [
        None
        if v is None
        else header + nonces[i * NONCE : (i + 1) * NONCE] + cipher.encrypt(nonces[i * NONCE : (i + 1) * NONCE], v, aad)
        for i, v in enumerate(values)
    ]
    return out


def decrypt(series: pl.Series, column: str, record: Mapping[str, str]) -> pl.Series:
    """The plaintext values of a sealed column, in their original type."""
    from cryptography.exceptions import InvalidTag

    values = series.to_list()
    kids = {v[1:HEADER] for v in values if v is not None}
    ciphers = {kid: (_key(kid, column, record).cipher(), VERSION + kid + column.encode()) for kid in kids}
    try:
        plain = [
            None
            if v is None
            else ciphers[v[1:HEADER]][0].decrypt(
                v[HEADER : HEADER + NONCE], v[HEADER + NONCE :], ciphers[v[1:HEADER]][1]
            )
            for v in values
        ]
    except InvalidTag:
        raise KeyError_(
            f"column '{column}': a value does not authenticate (wrong key, or a value moved from another column)"
        ) from None
    dtype = _type_of(record)
    result = pl.Series(column, plain, dtype=pl.Binary)
    if dtype == pl.Binary:
        return result
    text = result.cast(pl.String)
    if dtype.is_temporal():
        return text.cast(pl.Series([], dtype=dtype).to_physical().dtype).cast(dtype)
    return text.cast(dtype)


def _key(kid: bytes, column: str, record: Mapping[str, str]) -> Key:
    key = KEYS.by_kid.get(kid)
    if key is not None:
        return key
    if kid.hex() == record["kid"]:
        return key_of(record, column)
    raise KeyError_(f"column '{column}': no key with id {kid.hex()} is at hand: wrong key")


def can_open(record: Mapping[str, str]) -> bool:
    """Whether this process holds (or can load) the key a column records; a run must, a reader may not."""
    if bytes.fromhex(record["kid"]) in KEYS.by_kid or KEYS.strict:
        return True
    try:
        return load_key(record["key"]) is not None
    except KeyError_:
        return False


def open_frame(frame: pl.DataFrame, records: Mapping[str, dict[str, str]]) -> pl.DataFrame:
    """`frame` (read from a table with these sealed columns) with every column whose key is at hand decrypted."""
    columns = [
        decrypt(frame[name], name, record)
        for name, record in records.items()
        if name in frame.columns and frame.schema[name] == pl.Binary and can_open(record)
    ]
    for column in columns:  # a column read sealed is written sealed by this process too (a branch's copy)
        KEYS.columns.setdefault(column.name, key_of(records[column.name], column.name))
    return frame.with_columns(columns) if columns else frame
