"""The timelapse runtime: epochs, operators, Delta state and sinks, checkpoints and history."""

from engine.pipeline import Pipeline
from sql.udf import udaf, udf

__all__ = ["Pipeline", "udaf", "udf"]
