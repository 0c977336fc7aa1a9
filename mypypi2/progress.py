"""A one-line progress bar for commands run at a terminal (redrawn in place on stderr)."""

from __future__ import annotations

from typing import TextIO

_WIDTH = 30


class ProgressBar:
    def __init__(self, stream: TextIO, total: int, unit: str) -> None:
        self._stream = stream
        self._total = total
        self._unit = unit
        self._done = 0

    def advance(self, count: int, note: str = "") -> None:
        self._done += count
        filled = _WIDTH * self._done // self._total if self._total else _WIDTH
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._stream.write(f"\r\x1b[K[{bar}] {self._done}/{self._total} {self._unit} {note}")
        self._stream.flush()

    def clear(self) -> None:
        """Erase the bar, so that a plain line can be written where it was."""
        self._stream.write("\r\x1b[K")
        self._stream.flush()

    def end(self) -> None:
        self._stream.write("\n")
        self._stream.flush()
