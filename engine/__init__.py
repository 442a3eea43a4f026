"""The timelapse runtime: epochs, operators, Delta state and sinks, checkpoints and history."""

from engine.history import checkpoint, state_at
from engine.pipeline import Pipeline
from sql.udf import udaf, udf

__all__ = ["Pipeline", "checkpoint", "state_at", "udaf", "udf"]
