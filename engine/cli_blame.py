"""`timelapse blame`: every epoch that changed one key's state, and the input it read."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `blame`; returns the parsers that take a state directory."""
    return []
