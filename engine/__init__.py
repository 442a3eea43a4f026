"""The timelapse runtime: epochs, operators, Delta state and sinks, checkpoints and history."""

from engine.history import History, HistoryError, checkpoint, open, state_at
from engine.pipeline import Pipeline
from engine.state_bootstrap import bootstrap_state
from engine.state_edit import edit_state
from sql.udf import udaf, udf

__all__ = [
    "History",
    "HistoryError",
    "Pipeline",
    "bootstrap_state",
    "checkpoint",
    "edit_state",
    "open",
    "state_at",
    "udaf",
    "udf",
]
