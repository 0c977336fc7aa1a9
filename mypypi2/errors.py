"""Every exception mypypi2 raises on purpose.

They carry data (repository, project, URL, reason), never HTTP wording: `app.py` maps
them to status codes in one table.
"""

from __future__ import annotations


class Mypypi2Error(Exception):
    """Base of every error raised on purpose."""


class ConfigError(Mypypi2Error):
    """The configuration cannot be used; the message names the offending key."""


class RepositoryNotFound(Mypypi2Error):
    def __init__(self, repository: str) -> None:
        super().__init__(f"no repository named {repository!r}")
        self.repository = repository


class ProjectNotFound(Mypypi2Error):
    def __init__(self, repository: str, project: str) -> None:
        super().__init__(f"project {project!r} not found in repository {repository!r}")
        self.repository = repository
        self.project = project


class NotAcceptable(Mypypi2Error):
    """No representation we serve matches the client's Accept header."""

    def __init__(self, accept: str) -> None:
        super().__init__(f"none of the offered media types is acceptable: {accept!r}")
        self.accept = accept


class MalformedPage(Mypypi2Error):
    """An upstream page could not be parsed; `reason` says why (raised by pure parsers)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamError(Mypypi2Error):
    """The upstream did not give a usable answer (bad status, bad body, connection failure)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"upstream {url}: {reason}")
        self.url = url
        self.reason = reason


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured timeouts."""


class UpstreamNotFound(UpstreamError):
    """The upstream answered 404 (or 410): it does not have what we asked for."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "not found")


class FileNotFound(Mypypi2Error):
    def __init__(self, repository: str, project: str, filename: str) -> None:
        super().__init__(f"file {filename!r} of project {project!r} not found in {repository!r}")
        self.repository = repository
        self.project = project
        self.filename = filename


class VerificationFailed(UpstreamError):
    """The upstream's bytes do not match the hash or size its page announced."""


class NotStored(Mypypi2Error):
    """Offline: the page was never stored, and the upstream may not be asked."""

    def __init__(self, repository: str, project: str) -> None:
        what = f"project {project!r}" if project else "the project list"
        super().__init__(f"offline: {what} of {repository!r} is not stored")
        self.repository = repository
        self.project = project


class StoredObjectMissing(Mypypi2Error):
    """The store no longer has an object a row says is stored (deleted behind our back)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"stored object {key!r} is missing from the store")
        self.key = key


class DatabaseUnavailable(Mypypi2Error):
    """PostgreSQL could not be reached, or did not answer in time (a full pool included)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"database unavailable: {reason}")
        self.reason = reason


class StartupError(Mypypi2Error):
    """The service cannot start here: the database, a directory or the port is unusable."""

    @classmethod
    def because(cls, what: str, cause: BaseException) -> StartupError:
        """`what` failed, said in one line: the first of `cause`'s message (drivers and
        tools add hints and output below it), or its type when it has none."""
        lines = str(cause).strip().splitlines()
        return cls(f"{what}: {lines[0] if lines else type(cause).__name__}")


class RelayUnavailable(Mypypi2Error):
    """The replica leading a download did not relay its bytes to us (unreachable, refused,
    or the stream was cut); `relay_url` names it."""

    def __init__(self, relay_url: str, reason: str) -> None:
        super().__init__(f"relay {relay_url}: {reason}")
        self.relay_url = relay_url
        self.reason = reason
