"""The timelapse runtime: epochs, operators, Delta state and sinks, checkpoints and history."""

from engine.comparison import Comparison, compare
from engine.history import History, HistoryError, checkpoint, open, state_at
from engine.key_blame import blame
from engine.pipeline import Pipeline
from engine.savepoint_export import export_savepoint
from engine.state_bootstrap import bootstrap_state
from engine.state_edit import edit_state
from sql.udf import udaf, udf

__all__ = [
    "Comparison",
    "History",
    "HistoryError",
    "Pipeline",
    "blame",
    "bootstrap_state",
    "checkpoint",
    "compare",
    "edit_state",
    "export_savepoint",
    "open",
    "state_at",
    "udaf",
    "udf",
]
