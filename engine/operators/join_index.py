"""A join side's rows indexed by the hash of their join key, kept sorted: an epoch's rows find the stored rows that
may be their partners by binary search (numpy `searchsorted`), so a regular join's probe costs what the epoch
touches instead of a hash join over the whole side. The index is in memory only, rebuilt from the rows (never
stored); equal hashes are only candidates, the join on the key columns decides."""

from __future__ import annotations

import numpy as np
import polars as pl


class KeyIndex:
    """Sorted key hashes and the row number (in the side's frame) each belongs to."""

    def __init__(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        self.hashes = hashes
        self.rows = rows

    @classmethod
    def build(cls, hashes: pl.Series) -> KeyIndex:
        values = hashes.to_numpy()
        order = np.argsort(values, kind="stable")
        return cls(values[order], order.astype(np.int64))

    def extend(self, hashes: pl.Series, start: int) -> KeyIndex:
        """With rows `start`, `start + 1`, ... appended to the frame (one hash each, in order)."""
        added = self.build(hashes)
        at = np.searchsorted(self.hashes, added.hashes)
        return KeyIndex(np.insert(self.hashes, at, added.hashes), np.insert(self.rows, at, added.rows + start))

    def candidates(self, probe: pl.Series) -> pl.Series:
        """Row numbers of the rows whose key hash is one of `probe`'s, in frame order."""
        wanted = np.unique(probe.to_numpy())
        low = np.searchsorted(self.hashes, wanted, side="left")
        high = np.searchsorted(self.hashes, wanted, side="right")
        lengths = high - low
        total = int(lengths.sum())
        if total == 0:
            return pl.Series("row", [], pl.Int64)
        # The ranges [low, high) concatenated, without a Python loop.
        starts = np.repeat(low - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        positions = starts + np.arange(total)
        return pl.Series("row", np.sort(self.rows[positions]))
