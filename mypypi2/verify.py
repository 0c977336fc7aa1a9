"""Whether bytes from an upstream are the ones its page announced: hashes, and size if known.

One rule for distribution files (verified as they stream) and for PEP 658 metadata
(verified whole): every announced digest of an algorithm hashlib knows must match
(models.ALLOWED_HASHES), and a file whose size the page or the upstream announced must
have exactly that many bytes, refused at the first byte too many.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from mypypi2.errors import VerificationFailed


class Verifier:
    def __init__(
        self, url: str, hashes: Mapping[str, str], size: int | None = None, *, what: str = ""
    ) -> None:
        """`url` (redacted) and `what` ("metadata ") name the bytes in errors."""
        self._url = url
        self._what = what
        self._wanted = hashes
        self._running: dict[str, hashlib._Hash] = {}
        for algorithm in hashes:
            try:
                self._running[algorithm] = hashlib.new(algorithm)
            except ValueError:
                continue
        # Always: a storage key needs it (not checked unless the page announced one).
        self._sha256 = self._running.setdefault("sha256", hashlib.sha256())
        self.expected_size = size
        self.received = 0

    def announced(self, length: int | None) -> None:
        """The upstream says how many bytes it sends (Content-Length): the size to expect,
        unless the page said another."""
        if length is None:
            return
        if self.expected_size is None:
            self.expected_size = length
        elif length != self.expected_size:
            raise VerificationFailed(
                self._url, f"upstream sends {length} bytes, page says {self.expected_size}"
            )

    def update(self, chunk: bytes) -> None:
        """Count in the next bytes; VerificationFailed, before they are counted, when they
        go past the expected size (a body longer than announced is not the file)."""
        expected = self.expected_size
        if expected is not None and self.received + len(chunk) > expected:
            raise VerificationFailed(self._url, f"upstream sends over {expected} bytes")
        for running in self._running.values():
            running.update(chunk)
        self.received += len(chunk)

    def verify(self) -> str:
        """The sha256 of every byte received, once they are all there and match what was
        announced; VerificationFailed otherwise."""
        expected = self.expected_size
        if expected is not None and self.received != expected:
            raise VerificationFailed(
                self._url, f"received {self.received} bytes, expected {expected}"
            )
        for algorithm, running in self._running.items():
            digest = self._wanted.get(algorithm)
            if digest is not None and running.hexdigest() != digest:
                raise VerificationFailed(
                    self._url,
                    f"{self._what}{algorithm} mismatch: got {running.hexdigest()}, "
                    f"expected {digest}",
                )
        return self._sha256.hexdigest()
