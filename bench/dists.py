"""Real, installable wheels built in memory (stdlib only), with their PEP 658 metadata.

A wheel is a zip with `<pkg>/__init__.py`, a `.dist-info` holding METADATA, WHEEL and a
RECORD of hashes: enough for pip and uv to resolve from the metadata and install it. An
optional payload (random bytes, stored uncompressed) gives a file any size we want.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property

_EPOCH = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Dist:
    project: str  # as displayed
    version: str
    filename: str
    content: bytes
    metadata: bytes
    requires_python: str | None = None

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @cached_property
    def metadata_sha256(self) -> str:
        return hashlib.sha256(self.metadata).hexdigest()


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _escaped(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def metadata(name: str, version: str, requires: list[str], requires_python: str | None) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    return ("\n".join(lines) + "\n").encode()


def wheel(
    name: str,
    version: str,
    requires: list[str] | None = None,
    *,
    tag: str = "py3-none-any",
    payload: int = 0,
    requires_python: str | None = None,
    seed: int = 0,
) -> Dist:
    """A wheel for `name` `version`; `payload` random bytes make it (at least) that big."""
    package = _escaped(name)
    dist_info = f"{package}-{version}.dist-info"
    meta = metadata(name, version, list(requires or []), requires_python)
    files = {
        f"{package}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": meta,
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: mypypi2-bench\nRoot-Is-Purelib: true\nTag: {tag}\n"
        ).encode(),
    }
    if payload:
        files[f"{package}/payload.bin"] = random.Random(f"{name}{version}{seed}").randbytes(payload)
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, content in files.items():
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            # Random bytes do not compress: store them, deflate the small text files.
            info.compress_type = zipfile.ZIP_STORED if payload else zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return Dist(
        name,
        version,
        f"{package}-{version}-{tag}.whl",
        buffer.getvalue(),
        meta,
        requires_python,
    )
