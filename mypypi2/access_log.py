"""The access log: one line per request, on stdout, written by a sink (observe.py).

Text lines start like the common log format, so log tools read the usual fields, and go on
with key=value fields:

    127.0.0.1 - - [01/Dec/2026:15:36:24 +0000] "GET /pypi/simple/demo/" 200 1432
    id=3f9c0a1b2c4d-1a repository=pypi kind=page outcome=hit installer=pip duration=0.4ms

(one line).
`format = "json"` writes the same fields as one JSON object per line. Lines are kept in
memory and written a few times a second (and at shutdown), in writes of whole lines no
larger than a pipe writes at once, so the lines of several workers sharing one stream
never interleave and a request costs no system call.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import quote

import msgspec

from mypypi2 import tasks
from mypypi2.config import LogFormat
from mypypi2.observe import RequestRecord, UpstreamRecord

FLUSH_SECONDS = 0.2
# POSIX guarantees writes up to PIPE_BUF (4096 on Linux) to a pipe are not interleaved.
_ATOMIC_WRITE = 4096
# Characters left as they are when a path or query is logged: anything else (spaces,
# quotes, controls, non-ASCII) is percent-encoded, so one line is always one request.
_SAFE = "/:@!$&'()*+,;=-._~%?"


class _JsonLine(msgspec.Struct, omit_defaults=True):
    time: str
    request_id: str
    method: str
    path: str
    status: int
    bytes: int
    duration_ms: float
    kind: str
    outcome: str
    installer: str
    client: str | None = None
    query: str | None = None
    repository: str | None = None
    project: str | None = None
    stale_reason: str | None = None
    coalesced: bool = False


class AccessLog:
    """A Sink writing one line per finished request to `fd`."""

    def __init__(self, log_format: LogFormat, fd: int = 1) -> None:
        self._fd = fd
        self._line = self._json_line if log_format == "json" else self._text_line
        self._lines: list[str] = []
        self._task: asyncio.Task[None] | None = None
        # The time as the log writes it, made once per second (strftime is slow).
        self._second = -1
        self._stamp = ""
        self._encoder = msgspec.json.Encoder()

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_often())

    async def close(self) -> None:
        await tasks.stop(self._task)
        self.flush()

    def request(self, record: RequestRecord) -> None:
        self._lines.append(self._line(record))

    def upstream(self, record: UpstreamRecord) -> None:
        pass  # upstream failures are logged by the client, once each

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        chunk: list[str] = []
        size = 0
        for line in lines:
            if size + len(line) > _ATOMIC_WRITE and chunk:
                self._write("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write("".join(chunk))

    def _write(self, text: str) -> None:
        data = text.encode()
        while data:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                continue
            except OSError:
                return  # stdout closed: the lines have nowhere to go
            data = data[written:]

    async def _flush_often(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if self._lines:
                self.flush()

    def _now(self, iso: bool) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ" if iso else "%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)
            )
        return self._stamp

    def _text_line(self, record: RequestRecord) -> str:
        target = _safe(record.path)
        if record.query:
            target = f"{target}?{_safe(record.query)}"
        # Fields that most requests lack cost nothing when absent.
        repository = "" if record.repository is None else f" repository={record.repository}"
        extra = "" if record.stale_reason is None else f" stale={record.stale_reason}"
        if record.coalesced:
            extra += " coalesced"
        return (
            f'{record.client or "-"} - - [{self._now(False)}] "{record.method} {target}" '
            f"{record.status} {record.bytes_sent} id={record.request_id}{repository} "
            f"kind={record.kind} outcome={record.outcome}{extra} installer={record.installer} "
            f"duration={record.seconds * 1000:.1f}ms\n"
        )

    def _json_line(self, record: RequestRecord) -> str:
        line = _JsonLine(
            time=self._now(True),
            request_id=record.request_id,
            method=record.method,
            path=record.path,
            status=record.status,
            bytes=record.bytes_sent,
            duration_ms=round(record.seconds * 1000, 3),
            kind=record.kind,
            outcome=record.outcome or "",
            installer=record.installer,
            client=record.client,
            query=record.query or None,
            repository=record.repository,
            project=record.project,
            stale_reason=record.stale_reason,
            coalesced=record.coalesced,
        )
        return self._encoder.encode(line).decode() + "\n"


def _safe(text: str) -> str:
    if text.isascii() and text.isprintable() and " " not in text and '"' not in text:
        return text
    return quote(text, safe=_SAFE)
