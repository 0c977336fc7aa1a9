"""The time source every use case reads, so tests can pass their own."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]  # seconds since the epoch
