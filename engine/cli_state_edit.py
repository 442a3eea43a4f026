"""`timelapse state edit` and `timelapse state bootstrap`: new savepoints made by changing state."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `state-edit` and `state-bootstrap`; returns the parsers that take a state directory."""
    return []
