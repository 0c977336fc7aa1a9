from __future__ import annotations

from mypypi2.errors import StartupError


def test_a_startup_error_keeps_the_first_line_of_its_cause() -> None:
    cause = RuntimeError("\nconnection refused\n\tIs the server running on that host?\n")

    error = StartupError.because("cannot use the database", cause)

    assert str(error) == "cannot use the database: connection refused"


def test_a_cause_without_a_message_is_named_by_its_type() -> None:
    assert str(StartupError.because("cannot start", TimeoutError())) == (
        "cannot start: TimeoutError"
    )
