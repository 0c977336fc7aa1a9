"""The terminal progress bar of `mypypi2 gc`."""

from __future__ import annotations

import io

from mypypi2.progress import ProgressBar


def test_the_bar_is_redrawn_in_place_and_fills_up() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, 4, "files")

    bar.advance(1, "1.0 kB")
    bar.advance(3)
    bar.end()

    frames = stream.getvalue().split("\r\x1b[K")[1:]
    assert frames[0].startswith("[" + "#" * 7 + "-" * 23 + "] 1/4 files 1.0 kB")
    assert frames[1].startswith("[" + "#" * 30 + "] 4/4 files")
    assert stream.getvalue().endswith("\n")


def test_nothing_to_do_is_a_full_bar() -> None:
    stream = io.StringIO()

    ProgressBar(stream, 0, "files").advance(0)

    assert "[" + "#" * 30 + "] 0/0" in stream.getvalue()
