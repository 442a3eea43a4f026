"""The timelapse runtime: epochs, operators, Delta state and sinks, checkpoints and history."""

from engine.pipeline import Pipeline
from sql.udf import udf

__all__ = ["Pipeline", "udf"]
