"""`timelapse savepoint export`: a savepoint as a self-contained, checksummed directory."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `savepoint-export`; returns the parsers that take a state directory."""
    return []
