"""Event-time temporal join (`JOIN versioned FOR SYSTEM_TIME AS OF probe.rowtime`), as Flink's versioned-table join.

Input 0 are the probe rows, input 1 the versioned table's rows: each one a version of its PRIMARY KEY starting at
its time attribute (an insert or upsert gives the key these values, a delete ends the key's validity; an update's
-U is dropped, its +U is the new version). A probe row waits until the join's watermark (the minimum of both
sides') passes its time, then joins the latest version of its key with a version time at or before its own, unless
that version is a delete; INNER drops a probe row without one, LEFT pads it with NULLs. Emitted rows are final:
the output is append-only, and the same whatever the epochs (two versions of a key at the same time: the later
one in arrival order wins).

Rows behind the watermark when they arrive (the row's own source's, never below the one this operator last
emitted by) are late: probe rows go to `late_probe/`, versions to `late_versions/` (a version older than the
watermark could change results already emitted). So is a row whose time is NULL.

State (typed Delta tables, through StateTable):
    probe/     __seq  <probe columns>  _kg _epoch _deleted               rows waiting for the watermark
    versions/  __k0.. __vt  <versioned columns>  __gone  [_touched]  _kg _epoch _deleted
Per key, versions at or below the watermark are superseded by the newest of them, which alone is kept (and not
even that when it is a delete): waiting probe rows are all at or after the watermark.

State TTL (`state.ttl`, `STATE_TTL`): with event time, a version is not used by probe rows more than the TTL after
its version time, and leaves the state once the watermark is past that (a key not updated for the TTL has no
version); deterministic. With processing time, a key none of whose versions arrived within the TTL is dropped
(Flink's idle-state retention): later probe rows of that key find no version.
"""

from __future__ import annotations

import polars as pl

from engine.errors import UserError
from engine.operators.base import UTC_MS, OperatorSettings, StatefulOperator, TableSpec, behind_watermark, clock
from engine.operators.context import EpochContext
from engine.operators.over import KG_SEQS, SEQ, arrival_numbers
from engine.state_store import key_group, tidy
from sql.plan import DELETE, OP_COLUMN, UPDATE_BEFORE, TemporalJoin

VERSION_TIME, GONE, TOUCHED = "__vt", "__gone", "_touched"
PROBE_TIME = "__pt"  # the probe time in the versions' time type, while matching


def _key_names(node: TemporalJoin) -> list[str]:
    return [f"__k{i}" for i in range(len(node.right_keys))]


def _visible(schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    return {n: t for n, t in schema.items() if not n.startswith("__")}


class TemporalJoinOperator(StatefulOperator):
    def __init__(self, node: TemporalJoin, settings: OperatorSettings | None = None) -> None:
        super().__init__(node, settings)
        self.keys = _key_names(node)
        right = node.inputs[1].schema
        self.key_types = {k: right[c] for k, c in zip(self.keys, node.right_keys, strict=True)}
        self.time_type = right[node.right_time]
        self.left_cols = list(node.left_names)
        self.right_cols = list(node.right_names)
        self.right_out = [node.right_names[c] for c in self.right_cols]
        self.probes = self.specs["probe"].empty()
        self.versions = self.specs["versions"].empty()
        # The keys the next pruning looks at (None: all). In memory only: a restart looks at every key once.
        self.unsettled: pl.DataFrame | None = None

    @classmethod
    def table_specs(cls, node: TemporalJoin) -> list[TableSpec]:
        left, right = _visible(node.inputs[0].schema), _visible(node.inputs[1].schema)
        keys = _key_names(node)
        key_types = {k: right[c] for k, c in zip(keys, node.right_keys, strict=True)}
        values = {node.right_names[c]: t for c, t in right.items()}
        values[GONE] = pl.Boolean()
        if node.ttl is not None and node.ttl.time == "processing":
            values[TOUCHED] = UTC_MS
        return [
            TableSpec("probe", "probe", [SEQ], {SEQ: pl.Int64()}, dict(left)),
            TableSpec(
                "versions",
                "versions",
                [*keys, VERSION_TIME],
                {**key_types, VERSION_TIME: right[node.right_time]},
                values,
            ),
            TableSpec("late_probe", "late_probe", role="late", columns=list(left)),
            TableSpec("late_versions", "late_versions", role="late", columns=list(right)),
        ]

    def _probe_keys(self) -> list[pl.Expr]:
        return [
            e.cast(self.key_types[k], strict=False).alias(k)
            for e, k in zip(self.node.left_keys, self.keys, strict=True)
        ]

    def _version_keys(self) -> list[pl.Expr]:
        return [pl.col(c).alias(k) for c, k in zip(self.node.right_keys, self.keys, strict=True)]

    def input_key_group(self, index: int) -> pl.Expr | None:
        return key_group(self._probe_keys() if index == 0 else self._version_keys())

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"probe": self.probes, "versions": self.versions}

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        if name == "probe":
            self.probes = frame
        else:
            self.versions = frame
            self.unsettled = None

    # -- per epoch -----------------------------------------------------------------------------
    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        probe, versions = inputs
        previous, self.last_watermark = self.last_watermark, ctx.watermark
        now = clock(self.node.ttl, ctx)
        if versions.height:
            self._add_versions(versions, previous, now)
        if self.node.ttl is not None and self.node.ttl.time == "processing" and now is not None:
            self._expire_idle_keys(now)
        fresh = self._new_probes(probe, previous, ctx.epoch) if probe.height else self.probes.head(0)
        watermark = ctx.watermark
        if watermark is None:
            self._wait(fresh)
            return self.empty_output()
        wm = pl.lit(watermark).cast(UTC_MS)
        # A probe row is final once the watermark is past its time: a version at exactly the watermark is on time.
        due = pl.col(self.node.left_time).cast(UTC_MS) < wm
        stored_due = self.probes.filter(due)
        fresh_due = fresh.filter(due)
        self._wait(fresh.filter(~due))
        if stored_due.height:
            self.probes = self.probes.filter(~due)
            self.state_tables["probe"].stage(self.probes.head(0), stored_due.select(SEQ, "_kg"))
        ready = pl.concat([stored_due, fresh_due], how="vertical_relaxed") if stored_due.height else fresh_due
        out = self._match(ready) if ready.height else self.empty_output()
        self._prune(watermark)
        return out

    def _late(self, rows: pl.DataFrame, time: str, previous: object, table: str) -> pl.DataFrame:
        """Rows behind the watermark, or without a time, to the late table; the others back."""
        late = behind_watermark(pl.col(time), previous) | pl.col(time).is_null()  # type: ignore[arg-type]
        reason = (
            pl.when(pl.col(time).is_null())
            .then(pl.lit(f"its time attribute {time} is NULL"))
            .otherwise(pl.lit("arrived behind the watermark"))
        )
        return self.late_tables[table].split(rows, late, reason)

    def _add_versions(self, rows: pl.DataFrame, previous: object, now: object) -> None:
        gone = pl.lit(False)
        if OP_COLUMN in rows.columns:  # an update's -U: its +U, which follows, is the new version
            rows = rows.filter(pl.col(OP_COLUMN) != UPDATE_BEFORE)
            gone = pl.col(OP_COLUMN) == DELETE
        rows = self._late(rows, self.node.right_time, previous, "late_versions")
        fresh = rows.select(
            *self._version_keys(),
            pl.col(self.node.right_time).alias(VERSION_TIME),
            *[pl.col(c).alias(n) for c, n in self.node.right_names.items()],
            gone.alias(GONE),
        ).filter(pl.all_horizontal(pl.col(k).is_not_null() for k in self.keys))  # a NULL key equals nothing
        if fresh.height == 0:
            return
        keyed = [*self.keys, VERSION_TIME]
        fresh = fresh.unique(keyed, keep="last", maintain_order=True)  # the later of two at one time wins
        if TOUCHED in self.versions.columns:
            fresh = fresh.with_columns(pl.lit(now).cast(UTC_MS).alias(TOUCHED))
        fresh = fresh.with_columns(key_group(self.keys).alias("_kg")).select(self.versions.columns)
        fresh = fresh.cast(dict(self.versions.schema))  # type: ignore[arg-type]
        kept = self.versions.join(fresh.select(keyed), on=keyed, how="anti")
        self.versions = tidy(pl.concat([kept, fresh], how="vertical_relaxed"))
        self.state_tables["versions"].stage(fresh, fresh.head(0).select(*keyed, "_kg"))
        if self.unsettled is not None:
            self.unsettled = pl.concat([self.unsettled, fresh.select(self.keys)])

    def _expire_idle_keys(self, now: object) -> None:
        """Processing-time TTL: the keys none of whose versions arrived within the TTL leave the state."""
        assert self.node.ttl is not None
        if self.versions.height == 0:
            return
        cutoff = pl.lit(now).cast(UTC_MS) - self.node.ttl.duration
        idle = pl.col(TOUCHED).max().over(self.keys) < cutoff
        self._drop(idle)

    def _new_probes(self, rows: pl.DataFrame, previous: object, epoch: int) -> pl.DataFrame:
        rows = self._late(rows, self.node.left_time, previous, "late_probe")
        fresh = rows.select(*self.left_cols, *self._probe_keys())
        fresh = fresh.with_columns(arrival_numbers(self.keys, epoch), key_group(self.keys).alias("_kg"))
        if fresh.get_column(SEQ).null_count():
            raise UserError(
                f"operator '{self.node.state_id}': more than {KG_SEQS:,} probe rows of one key group in one "
                "epoch; run with smaller epochs (--max-epoch-rows)"
            )
        return fresh.select(self.probes.columns).cast(dict(self.probes.schema))  # type: ignore[arg-type]

    def _wait(self, rows: pl.DataFrame) -> None:
        if rows.height:
            self.probes = tidy(pl.concat([self.probes, rows], how="vertical_relaxed"))
            self.state_tables["probe"].stage(rows, rows.head(0).select(SEQ, "_kg"))

    def _match(self, ready: pl.DataFrame) -> pl.DataFrame:
        """Each ready probe row with the version of its key in force at its time (or NULLs)."""
        left_time = self.node.left_time
        probes = ready.with_columns(*self._probe_keys(), pl.col(left_time).cast(self.time_type).alias(PROBE_TIME)).sort(
            PROBE_TIME, SEQ
        )
        # only the versions of the ready rows' keys: an epoch's work follows its rows more than the state
        versions = self.versions.join(probes.select(self.keys).unique(), on=self.keys, how="semi")
        versions = versions.drop("_kg", TOUCHED, strict=False).sort(VERSION_TIME)
        joined = probes.join_asof(
            versions,
            left_on=PROBE_TIME,
            right_on=VERSION_TIME,
            by=self.keys,
            strategy="backward",
            check_sortedness=False,
        )
        found = pl.col(VERSION_TIME).is_not_null() & ~pl.col(GONE).fill_null(True)
        if self.node.ttl is not None and self.node.ttl.time == "event":  # a version lives for the TTL
            found = found & (pl.col(PROBE_TIME) - pl.col(VERSION_TIME) < self.node.ttl.duration)
        joined = joined.with_columns(found.alias("__found"))
        nulls = [pl.when(pl.col("__found")).then(pl.col(c)).otherwise(None).alias(c) for c in self.right_out]
        joined = joined.with_columns(nulls)
        if self.node.residual is not None:  # other ON conditions: a version failing them is no match
            joined = joined.with_columns((pl.col("__found") & self.node.residual.fill_null(False)).alias("__found"))
            joined = joined.with_columns(
                pl.when(pl.col("__found")).then(pl.col(c)).otherwise(None).alias(c) for c in self.right_out
            )
        if self.node.kind == "INNER":
            joined = joined.filter(pl.col("__found"))
        if joined.height == 0:
            return self.empty_output()
        return joined.select(list(self.node.schema)).cast(self.node.schema)  # type: ignore[arg-type]

    def _prune(self, watermark: object) -> None:
        """Versions no waiting or later probe row can use: per key, those at or below the watermark but the newest
        (a delete among them too), and with an event-time TTL, one whose life ended before the watermark.

        Only the unsettled keys are looked at (those with a version above the last watermark, or new ones): a
        settled key holds one version, below the watermark, until a new one comes. An event-time TTL looks at all."""
        if self.versions.height == 0:
            return
        event_ttl = self.node.ttl is not None and self.node.ttl.time == "event"
        candidates = self.versions
        if self.unsettled is not None and not event_ttl:
            candidates = self.versions.join(self.unsettled.unique(), on=self.keys, how="semi")
        wm = pl.lit(watermark).cast(UTC_MS)
        at = pl.col(VERSION_TIME).cast(UTC_MS)
        below = at <= wm
        newest = pl.when(below).then(at).otherwise(None).max().over(self.keys)
        useless = below & ((at < newest) | pl.col(GONE))
        if event_ttl:
            useless = useless | (at + self.node.ttl.duration <= wm)  # type: ignore[union-attr]
        marked = candidates.with_columns(useless.fill_null(False).alias("__useless"))
        self.unsettled = marked.filter(~pl.col("__useless") & ~below).select(self.keys)
        gone = marked.filter(pl.col("__useless")).drop("__useless")
        if gone.height:
            keyed = [*self.keys, VERSION_TIME]
            self.versions = self.versions.join(gone.select(keyed), on=keyed, how="anti", maintain_order="left")
            self.state_tables["versions"].stage(gone.head(0), gone.select(*keyed, "_kg"))

    def _drop(self, condition: pl.Expr) -> None:
        mask = self.versions.select(condition.fill_null(False)).to_series()
        if not mask.any():
            return
        gone = self.versions.filter(mask)
        self.versions = self.versions.filter(~mask)
        self.state_tables["versions"].stage(gone.head(0), gone.select(*self.keys, VERSION_TIME, "_kg"))
