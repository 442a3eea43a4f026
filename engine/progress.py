"""What `timelapse run` shows while it runs and when it ends: the live progress line and the summary.

The counts follow the summary's meaning (README, "timelapse run --json"): `in` is the good rows processed,
dead letters (records that could not be read) are counted apart.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from engine.runner import EpochReport


class Progress:
    """One live status line on a terminal; a line every few seconds when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0
        self.rows = 0
        self.started = time.perf_counter()

    def __call__(self, report: EpochReport) -> None:
        self.rows += sum(report.rows_in.values())
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = self.rows / max(now - self.started, 1e-9)
        wm = report.watermark.strftime("%Y-%m-%d %H:%M:%S") if report.watermark else "-"
        dead = sum(report.dead_letters.values())
        line = (
            f"epoch {report.epoch:>6}  in {sum(report.rows_in.values()):>8}  out {sum(report.rows_out.values()):>8}"
            f"  {rate:>10,.0f} rows/s  watermark {wm}  commit {report.commit_s * 1000:6.1f} ms"
            + (f"  dead letters {dead}" if dead else "")
            + ("  (replayed)" if report.replayed else "")
            + ("  (drain: every watermark at the end of time)" if report.drain else "")
        )
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif now - self.last_print >= 2.0:
            sys.stderr.write(line + "\n")
            self.last_print = now

    def finish(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def render_summary(summary: dict[str, Any]) -> str:
    """The end-of-run summary as text (the `--json` summary is the dict itself)."""
    lines = [f"{summary['epochs']} epoch(s) run; last committed epoch {summary['last_epoch']}"]
    for name, count in summary["rows_in"].items():
        lines.append(f"  read    {count:>10}  rows from {name}")
    for name, count in summary["dead_letters"].items():
        lines.append(f"  dead    {count:>10}  records from {name} (see {summary['state']}/dead_letters/)")
    for name, count in summary["rows_out"].items():
        lines.append(f"  wrote   {count:>10}  to {name}")
    if summary["watermark"]:
        lines.append(f"  watermark {summary['watermark']}")
    return "\n".join(lines)
