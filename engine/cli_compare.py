"""`timelapse compare`: two state directories (branches of one savepoint) side by side."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `compare`; returns the parsers that take a state directory."""
    return []
