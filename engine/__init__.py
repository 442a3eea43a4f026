"""The timelapse runtime: epochs, operators, Delta state and sinks, checkpoints and history."""

from engine.history import History, HistoryError, checkpoint, open, state_at
from engine.pipeline import Pipeline
from engine.savepoint_export import export_savepoint
from sql.udf import udaf, udf

__all__ = ["History", "HistoryError", "Pipeline", "checkpoint", "export_savepoint", "open", "state_at", "udaf", "udf"]
