"""Keep Rust panic text away from the user.

Rust libraries (Polars, delta-rs) print a panic's message, and with RUST_BACKTRACE a backtrace, straight to
file descriptor 2 from native code, even when the panic is caught and turned into a Python exception (or
happens in a background thread, such as a Tokio worker seeing "Already shut down" on a full disk). Python-level
redirection cannot catch that. So the CLI points fd 2 at a pipe and a thread forwards what arrives there
to the real stderr, leaving out panic blocks. Python's own stderr (errors, warnings, the live progress line)
is written to the real stderr directly and is never held back. TIMELAPSE_DEBUG=1 turns the filter off.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: the first line of a panic, as Rust's default hook writes it
PANIC_START = re.compile(r"^thread '[^']*'(?: \(\d+\))? panicked at ")
#: lines that continue a panic block: its message (indented when it runs over lines), the backtrace, the notes
_CONTINUES = re.compile(r"^(\s|stack backtrace:|note: |$)")


class PanicFilter:
    """Feeds on text as it arrives; returns what is to be shown. A panic block is its header line, the
    message line after it, then any indented, backtrace or `note:` lines, up to a blank line or other text."""

    def __init__(self) -> None:
        self.in_panic = False
        self.after_header = False
        self.partial = ""
        self.midline = False  # part of a line has been shown; the rest follows as is
        self.blank = ""  # a blank line held back: Rust starts each panic block with one

    def feed(self, text: str) -> str:
        out = []
        lines = (self.partial + text).splitlines(keepends=True)
        self.partial = ""
        for line in lines:
            finished = line.endswith(("\n", "\r"))
            if self.midline:  # the rest of a line already being shown
                out.append(line)
                self.midline = not finished
                continue
            if not finished:
                # An unfinished line: shown at once unless it may be (the start of) a panic header.
                if self.in_panic or "thread '".startswith(line[:8]) or line.startswith("thread '"):
                    self.partial = line
                else:
                    out.append(self.blank + line)
                    self.blank, self.midline = "", True
                continue
            out.append(self._line(line))
        return "".join(out)

    def _line(self, line: str) -> str:
        if PANIC_START.match(line):
            self.in_panic, self.after_header, self.blank = True, True, ""
            return ""
        if not self.in_panic and not line.strip():
            held, self.blank = self.blank, line
            return held
        held, self.blank = self.blank, ""
        return held + self._block(line)

    def _block(self, line: str) -> str:
        if self.in_panic:
            if self.after_header:  # the panic's message
                self.after_header = False
                return ""
            if _CONTINUES.match(line):
                if not line.strip():
                    self.in_panic = False  # a blank line ends a block
                return ""
            self.in_panic = False
        return line

    def close(self) -> str:
        rest, self.partial = self.partial, ""
        held, self.blank = self.blank, ""
        return held + ("" if self.in_panic or PANIC_START.match(rest) else rest)


@contextmanager
def without_panic_text() -> Iterator[None]:
    """Within the block, native writes to fd 2 pass through a `PanicFilter`; Python's sys.stderr writes to the
    original stderr. Nothing changes when TIMELAPSE_DEBUG is set or fd 2 cannot be redirected."""
    if os.environ.get("TIMELAPSE_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    previous = sys.stderr
    # Only a sys.stderr that writes to fd 2 needs to be pointed past the pipe; one an embedding program (or a
    # test's capture) has replaced is left alone, so its messages still reach whoever replaced it.
    if _writes_fd2(previous):
        encoding = getattr(previous, "encoding", None) or "utf-8"
        sys.stderr = io.TextIOWrapper(
            io.FileIO(real, "w", closefd=False), encoding=encoding, errors="backslashreplace", write_through=True
        )
    thread = threading.Thread(target=_forward, args=(read_end, real), name="timelapse-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = previous
        os.dup2(real, 2)  # closes the pipe's write end: the thread sees the end of its input
        thread.join(timeout=2.0)
        if not thread.is_alive():  # else a child process still holds the pipe: the thread keeps `real`
            os.close(real)


def _writes_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False


def _forward(read_end: int, real: int) -> None:
    panic = PanicFilter()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while chunk := os.read(read_end, 65536):
            shown = panic.feed(decoder.decode(chunk))
            if shown:
                os.write(real, shown.encode())
        rest = panic.close()
        if rest:
            os.write(real, rest.encode())
    except OSError:
        pass
    finally:
        os.close(read_end)
