"""ChangelogNormalize: after the Scan of an upsert source (upsert-kafka), as in Flink. Stateful.

An upsert source says only "this key now holds this row" (+U) or "this key is gone" (-D). Keeping the last row
of each PRIMARY KEY turns that into a changelog every downstream operator can consume:
+I for a new key, -U old / +U new when the row changed, -D old when an existing key is deleted; an upsert
equal to the stored row and a delete of an unknown key emit nothing.

Within an epoch the changes of a key are reduced to the last one (record order), and that one is compared with
the stored row: what an epoch emits is the net change of each key, and the stored rows after any sequence of
epochs are the same whatever their sizes. State table (one row per key):
    <key columns>  <other columns>  _kg _epoch _deleted
"""

from __future__ import annotations

import polars as pl

from engine.operators.base import OperatorSettings, StatefulOperator, TableSpec
from engine.operators.context import EpochContext
from engine.state_store import key_group, tidy
from sql.plan import DELETE, INSERT, OP_COLUMN, UPDATE_AFTER, UPDATE_BEFORE, ChangelogNormalize

ORDER, SIDE = "__order", "__side"


class ChangelogNormalizeOperator(StatefulOperator):
    def __init__(self, node: ChangelogNormalize, settings: OperatorSettings | None = None) -> None:
        super().__init__(node, settings)
        self.keys = list(node.keys)
        self.columns = [n for n in node.schema if not n.startswith("__")]
        self.values = [c for c in self.columns if c not in self.keys]
        self.rows = self.specs[""].empty()

    @classmethod
    def table_specs(cls, node: ChangelogNormalize) -> list[TableSpec]:
        schema = {n: t for n, t in node.schema.items() if not n.startswith("__")}
        keys = {k: schema[k] for k in node.keys}
        values = {n: t for n, t in schema.items() if n not in node.keys}
        return [TableSpec("", "state", list(node.keys), keys, values)]

    def input_key_group(self, index: int) -> pl.Expr | None:
        return key_group(self.keys)

    def frames(self) -> dict[str, pl.DataFrame]:
        return {"": self.rows}

    def set_frame(self, name: str, frame: pl.DataFrame) -> None:
        self.rows = frame

    def process(self, inputs: list[pl.DataFrame], ctx: EpochContext) -> pl.DataFrame:
        (changes,) = inputs
        if changes.height == 0:
            return self.empty_output()
        # the last change of each key in this epoch, in record order; its position orders the output
        last = (
            changes.with_row_index(ORDER)
            .group_by(self.keys, maintain_order=True)
            .last()
            .with_columns(pl.col(OP_COLUMN).is_in([UPDATE_BEFORE, DELETE]).alias("__gone"))
        )
        stored = self.rows.join(last.select(self.keys), on=self.keys, how="semi", nulls_equal=True)
        old = stored.select(
            *self.keys, *[pl.col(v).alias(f"{v}\x00old") for v in self.values], pl.lit(True).alias("__had")
        )
        both = last.join(old, on=self.keys, how="left", nulls_equal=True).with_columns(pl.col("__had").fill_null(False))
        same = pl.all_horizontal([pl.col(v).eq_missing(pl.col(f"{v}\x00old")) for v in self.values] or [pl.lit(True)])
        deleted = both.filter(pl.col("__gone") & pl.col("__had"))
        inserted = both.filter(~pl.col("__gone") & ~pl.col("__had"))
        updated = both.filter(~pl.col("__gone") & pl.col("__had") & ~same)
        old_columns = [*self.keys, *[pl.col(f"{v}\x00old").alias(v) for v in self.values]]
        out = pl.concat(
            [
                deleted.select(*old_columns, ORDER, pl.lit(DELETE).alias(OP_COLUMN), pl.lit(0).alias(SIDE)),
                updated.select(*old_columns, ORDER, pl.lit(UPDATE_BEFORE).alias(OP_COLUMN), pl.lit(0).alias(SIDE)),
                updated.select(*self.columns, ORDER, pl.lit(UPDATE_AFTER).alias(OP_COLUMN), pl.lit(1).alias(SIDE)),
                inserted.select(*self.columns, ORDER, pl.lit(INSERT).alias(OP_COLUMN), pl.lit(1).alias(SIDE)),
            ],
            how="vertical_relaxed",
        ).sort(ORDER, SIDE)
        # state: new and changed rows replace the stored ones, deleted keys leave
        fresh = pl.concat([inserted, updated], how="vertical_relaxed").select(self.columns)
        fresh = fresh.with_columns(key_group(self.keys).alias("_kg")).select(self.rows.columns)
        gone = deleted.select(self.keys).with_columns(key_group(self.keys).alias("_kg"))
        touched = pl.concat([fresh.select(self.keys), gone.select(self.keys)], how="vertical_relaxed")
        kept = self.rows.join(touched, on=self.keys, how="anti", nulls_equal=True)
        self.rows = tidy(pl.concat([kept, fresh], how="vertical_relaxed"))
        self.table.stage(fresh, gone)
        return out.select(list(self.node.schema)).cast(self.node.schema)  # type: ignore[arg-type]
