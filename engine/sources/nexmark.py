"""`'connector' = 'nexmark'`: the Nexmark benchmark's event stream (people, auctions and bids), generated.

One stream of events numbered from 1 interleaves the three kinds 1:3:46 (`id % 50`: 0 a person, 1-3 an auction,
the rest bids). A table declares which kind it reads with `'nexmark.table' = 'bid' | 'auction' | 'person'`
(default: the table's name). Every field is a pure function of (seed, event id), computed column-wise in Polars,
so any split into epochs, any engine reading the files `write_files` produces, and any rerun see identical data.
Event time advances with the event number at `'rate'` events per second of event time from `'start-time'`, and
is never out of order. Options: `'events.num'` (default 10,000,000), `'rate'` (10,000), `'seed'` (0),
`'start-time'` ('2026-01-01 00:00:00').

The rules follow the reference generator: ids are derived from the event number (people and auctions from
1000 up); half the bids go to a "hot" auction and three quarters come from a "hot" bidder; prices are log-uniform
over [100, 1e8]; auctions expire after a few hundred milliseconds of event time; `extra` pads rows to about 100
(bid), 200 (person) and 500 (auction) bytes.
"""

from __future__ import annotations

import hashlib
import random
import string
from pathlib import Path
from typing import Any

import polars as pl

from engine.sources.base import ConnectorError, Source, SourceBatch, row_ranges
from sql.values import parse_timestamp

KINDS = ("person", "auction", "bid")
FIRST_NAMES = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"]
LAST_NAMES = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"]
CITIES = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
]
STATES = ["AZ", "CA", "ID", "OR", "WA", "WY"]
HOT_CHANNELS = ["Google", "Facebook", "Baidu", "Apple"]
HOT_SHARE_AUCTIONS, HOT_SHARE_BIDDERS, HOT_SHARE_SELLERS = 0.5, 0.75, 0.75
IN_FLIGHT_EVENTS = 1666  # about 100 auctions' worth of events: an auction's expected life, in events
_ALPHABET = string.ascii_lowercase
PADDING = 500


def _salt(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"nexmark/{name}".encode(), digest_size=4).digest(), "little") + seed * 7919


class Generator:
    """The columns of each event kind, as Polars expressions over `event` (the event id, from 1)."""

    def __init__(self, seed: int = 0, rate: float = 10_000.0, start_us: int = 1_767_225_600_000_000) -> None:
        self.seed = seed
        self.rate = rate
        self.start_us = start_us
        rng = random.Random(seed)
        self.padding = "".join(rng.choice(_ALPHABET) for _ in range(PADDING * 2))
        # url paths: 5-letter words joined by '/', so one slice at a word boundary gives "abcde/fghij/klmno"
        self.paths = "/".join("".join(rng.choice(_ALPHABET) for _ in range(5)) for _ in range(PADDING + 3))

    # -- shared pieces -------------------------------------------------------------------------------------
    def u(self, field: str) -> pl.Expr:
        """A uniform draw in [0, 1) for each event: Polars' vectorised hash of the event id, salted per field.
        (It is stable for a given Polars version, which is what the runs and files compared together share.)"""
        return (pl.col("event").hash(seed=_salt(field, self.seed)) // 2048).cast(pl.Float64) / float(2**53)

    def _int(self, field: str, low: int, high: int) -> pl.Expr:
        """Uniform over [low, high)."""
        return (self.u(field) * (high - low)).floor().cast(pl.Int64) + low

    def _text(self, field: str, length: int) -> pl.Expr:
        """A random lower-case string: a slice of a fixed random text at a hashed offset (one string operation,
        where a letter per draw would cost one each)."""
        return pl.lit(self.padding).str.slice(self._int(field, 0, PADDING), length)

    def _choice(self, field: str, values: list[str]) -> pl.Expr:
        return self._int(field, 0, len(values)).replace_strict(dict(enumerate(values)), return_dtype=pl.String)

    def _extra(self, field: str, size: int) -> pl.Expr:
        return pl.lit(self.padding).str.slice(self._int(field, 0, PADDING), size)

    def _price(self, field: str) -> pl.Expr:
        return (pl.lit(10.0).pow(self.u(field) * 6) * 100).round(0).cast(pl.Int64)

    @property
    def _epoch(self) -> pl.Expr:
        return pl.col("event") // 50

    @property
    def _offset(self) -> pl.Expr:
        return pl.col("event") % 50

    def _last_person(self) -> pl.Expr:
        return self._epoch

    def _last_auction(self) -> pl.Expr:
        off, epoch = self._offset, self._epoch
        return (
            pl.when(off == 0).then((epoch - 1) * 3 + 2).when(off < 4).then(epoch * 3 + off - 1).otherwise(epoch * 3 + 2)
        )

    def _recent_person(self, field: str) -> pl.Expr:
        return pl.max_horizontal(self._last_person() - self._int(field, 0, 1000), pl.lit(0, pl.Int64))

    def date_time(self) -> pl.Expr:
        micros = ((pl.col("event") - 1).cast(pl.Float64) * (1_000_000.0 / self.rate) / 1000).floor().cast(
            pl.Int64
        ) * 1000 + self.start_us
        return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").cast(pl.Datetime("ms", "UTC"))

    # -- the three kinds -----------------------------------------------------------------------------------
    def person(self) -> dict[str, pl.Expr]:
        card = [self._int(f"card/{i}", 0, 10_000).cast(pl.String).str.zfill(4) for i in range(4)]
        return {
            "id": self._last_person() + 1000,
            "name": pl.concat_str(
                [self._choice("first", FIRST_NAMES), self._choice("last", LAST_NAMES)], separator=" "
            ),
            "emailAddress": pl.concat_str([self._text("user", 7), pl.lit("@"), self._text("host", 5), pl.lit(".com")]),
            "creditCard": pl.concat_str(card, separator=" "),
            "city": self._choice("city", CITIES),
            "state": self._choice("state", STATES),
            "dateTime": self.date_time(),
            "extra": self._extra("person/extra", 120),
        }

    def auction(self) -> dict[str, pl.Expr]:
        initial = self._price("initial")
        horizon_ms = IN_FLIGHT_EVENTS * 1000.0 / self.rate
        hot_seller = (self._last_person() // 100) * 100
        seller = (
            pl.when(self.u("hot seller") < HOT_SHARE_SELLERS).then(hot_seller).otherwise(self._recent_person("seller"))
        )
        return {
            "id": self._last_auction() + 1000,
            "itemName": self._text("item", 12),
            "description": self._text("description", 30),
            "initialBid": initial,
            "reserve": initial + self._price("reserve"),
            "dateTime": self.date_time(),
            "expires": self.date_time()
            + pl.duration(milliseconds=1 + (self.u("expires") * 2 * horizon_ms).floor().cast(pl.Int64)),
            "seller": seller + 1000,
            "category": self._int("category", 10, 15),
            "extra": self._extra("auction/extra", 380),
        }

    def bid(self) -> dict[str, pl.Expr]:
        last = self._last_auction()
        low = pl.max_horizontal(last - 100, pl.lit(0, pl.Int64))
        near = low + (self.u("auction") * (last + 10 - low + 1)).floor().cast(pl.Int64)
        auction = pl.when(self.u("hot auction") < HOT_SHARE_AUCTIONS).then((last // 100) * 100).otherwise(near)
        hot_bidder = (self._last_person() // 100) * 100 + 1
        bidder = (
            pl.when(self.u("hot bidder") < HOT_SHARE_BIDDERS).then(hot_bidder).otherwise(self._recent_person("bidder"))
        )
        hot = self.u("hot channel") < 0.5
        number = self._int("channel number", 0, 10_000)
        channel = (
            pl.when(hot)
            .then(self._choice("channel", HOT_CHANNELS))
            .otherwise(pl.concat_str([pl.lit("channel-"), number.cast(pl.String)]))
        )
        path = pl.lit(self.paths).str.slice(self._int("url", 0, PADDING) * 6, 17)
        with_id = ~hot & (self.u("channel id") < 0.9)
        channel_id = pl.when(with_id).then(pl.lit("&channel_id=") + number.cast(pl.String)).otherwise(pl.lit(""))
        url = pl.concat_str([pl.lit("https://www.nexmark.com/"), path, pl.lit("/item.htm?query=1"), channel_id])
        return {
            "auction": auction + 1000,
            "bidder": bidder + 1000,
            "price": self._price("price"),
            "channel": channel,
            "url": url,
            "dateTime": self.date_time(),
            "extra": self._extra("bid/extra", 20),
        }

    def kind_mask(self, kind: str) -> pl.Expr:
        off = self._offset
        return {"person": off == 0, "auction": (off >= 1) & (off < 4), "bid": off >= 4}[kind]

    def events(self, kind: str, first: int, end: int) -> pl.DataFrame:
        """The rows of `kind` among events [first, end) (ids from 1)."""
        columns = getattr(self, kind)()
        ids = pl.int_range(first, end, dtype=pl.Int64, eager=True).alias("event").to_frame()
        return ids.filter(self.kind_mask(kind)).select(**columns)


class NexmarkSource(Source):
    def __init__(self, table: Any, base_dir: Path) -> None:
        super().__init__(table, base_dir)
        self.kind = self.option("nexmark.table", table.name).lower()
        if self.kind not in KINDS:
            raise ConnectorError(
                f"table '{table.name}': 'nexmark.table' must be one of {', '.join(KINDS)} (it defaults to the "
                "table's name)"
            )
        self.total = int(self.option("events.num", "10000000"))
        start = pl.select(parse_timestamp(pl.lit(self.option("start-time", "2026-01-01 00:00:00")))).item()
        if start is None:
            raise ConnectorError(f"table '{table.name}': 'start-time' is not a timestamp")
        self.generator = Generator(
            int(self.option("seed", "0")), float(self.option("rate", "10000")), int(start.timestamp() * 1_000_000)
        )
        expected = list(getattr(self.generator, self.kind)())
        declared = [name for name in self.schema]
        missing = [name for name in declared if name not in expected]
        if missing:
            raise ConnectorError(
                f"table '{table.name}'{table.where()}: a nexmark {self.kind} has no column {', '.join(missing)}; "
                f"its columns are {', '.join(expected)}"
            )
        self.event = 1  # the next event id to read

    def restore(self, position: Any, history: list[dict[str, Any]]) -> None:
        self.event = int(position["event"]) if position else 1

    @property
    def position(self) -> Any:
        return {"event": self.event}

    def plan(self, max_rows: int | None) -> dict[str, Any] | None:
        """A slice of events (all kinds count): at most `max_rows` events, so at most that many rows."""
        end = self.total + 1 if max_rows is None else min(self.total + 1, self.event + max_rows)
        return None if end <= self.event else {"start": self.event, "end": end}

    def split(self, piece: dict[str, Any], shares: int) -> list[dict[str, Any] | None]:
        """By event range: an event is a function of its number alone."""
        ranges = row_ranges(int(piece["start"]), int(piece["end"]), shares)
        return [{**piece, "start": a, "end": b} if b > a else None for a, b in ranges]  # an empty range reads nothing

    def read(self, piece: dict[str, Any]) -> SourceBatch:
        rows = self.generator.events(self.kind, int(piece["start"]), int(piece["end"]))
        return SourceBatch(rows.select(list(self.schema)).cast(self.schema))  # type: ignore[arg-type]

    def advance(self, piece: dict[str, Any]) -> None:
        self.event = int(piece["end"])


def write_files(
    directory: Path, events: int, fmt: str = "parquet", seed: int = 0, rate: float = 10_000.0, chunk: int = 1_000_000
) -> dict[str, int]:
    """Write the first `events` events as `<directory>/<kind>/part-NNNNN.<fmt>` (parquet or json lines), for
    engines that read files. Returns the rows written per kind."""
    generator = Generator(seed, rate)
    counts = dict.fromkeys(KINDS, 0)
    for part, first in enumerate(range(1, events + 1, chunk)):
        end = min(events + 1, first + chunk)
        for kind in KINDS:
            rows = generator.events(kind, first, end)
            folder = directory / kind
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"part-{part:05d}.{'parquet' if fmt == 'parquet' else 'json'}"
            if fmt == "parquet":
                rows.write_parquet(target)
            else:
                rows.with_columns(pl.col(pl.Datetime).dt.strftime("%Y-%m-%d %H:%M:%S%.3f")).write_ndjson(target)
            counts[kind] += rows.height
    return counts
