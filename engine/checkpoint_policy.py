"""When an epoch becomes a durable checkpoint.

Every epoch by default; or every N epochs, every so many seconds, when operator state has grown or shrunk by a
size, or when `timelapse checkpoint` asked for one (a request file): whichever comes first. The run's last
epoch always becomes a checkpoint (the runner checkpoints before it ends).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sql import durations


@dataclass(frozen=True)
class CheckpointPolicy:
    """When an epoch becomes a durable checkpoint: whichever of the set criteria comes first."""

    every_epochs: int | None = 1
    seconds: float | None = None
    #: operator state (in memory) grew or shrank by this many bytes since the last checkpoint
    growth_bytes: int | None = None


def checkpoint_policy(interval: str | None, growth: str | None = None) -> CheckpointPolicy:
    """`'5 epochs'`, `'10 s'`, or None (every epoch); `growth` ('64 MB') adds a state-growth trigger, and
    alone means 'every 60 s, or sooner when the state grows that much'."""
    size = durations.parse_size(growth) if growth else None
    if not interval:
        return CheckpointPolicy(every_epochs=None, seconds=60.0, growth_bytes=size) if size else CheckpointPolicy()
    words = interval.strip().lower().split()
    if len(words) == 2 and words[1] in ("epoch", "epochs") and words[0].isdigit() and int(words[0]) > 0:
        return CheckpointPolicy(every_epochs=int(words[0]), growth_bytes=size)
    return CheckpointPolicy(every_epochs=None, seconds=durations.parse_duration(interval), growth_bytes=size)


class CheckpointSchedule:
    """The policy and what it is measured from: the last checkpoint's epoch, time and state size."""

    def __init__(self, policy: CheckpointPolicy, epoch: int, state_bytes: int) -> None:
        self.policy = policy
        self.checkpointed(epoch, state_bytes)

    def checkpointed(self, epoch: int, state_bytes: int) -> None:
        self.epoch = epoch
        self.time = time.monotonic()
        self.state_bytes = state_bytes

    def due(self, epoch: int, state_bytes: int, requested: bool) -> bool:
        policy = self.policy
        return (
            (policy.every_epochs is not None and epoch - self.epoch >= policy.every_epochs)
            or (policy.seconds is not None and time.monotonic() - self.time >= policy.seconds)
            or (policy.growth_bytes is not None and abs(state_bytes - self.state_bytes) >= policy.growth_bytes)
            or requested
        )
