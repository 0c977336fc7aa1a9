"""Real, installable distributions built in memory for the local upstream.

Wheels are zip files with METADATA, WHEEL and a RECORD of hashes, as installers check.
Sdists carry a tiny in-tree PEP 517 backend with no build requirements, so pip, uv and
poetry can build them with no index for build tools (the tests have no network).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import textwrap
import zipfile

from tests.local_upstream import UpstreamFile


def _escaped(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def metadata(name: str, version: str, requires: list[str] | None = None) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires or []]
    return ("\n".join(lines) + "\n").encode()


def wheel(name: str, version: str, requires: list[str] | None = None) -> UpstreamFile:
    """A pure-Python wheel whose `.metadata` is served alongside (PEP 658)."""
    package = _escaped(name)
    dist_info = f"{package}-{version}.dist-info"
    meta = metadata(name, version, requires)
    files = {
        f"{package}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": meta,
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: mypypi2-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    return UpstreamFile(
        f"{package}-{version}-py3-none-any.whl", _zip_wheel(files, dist_info), metadata=meta
    )


def _zip_wheel(files: dict[str, bytes], dist_info: str) -> bytes:
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    files = {**files, f"{dist_info}/RECORD": ("\n".join(record) + "\n").encode()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            # A fixed timestamp makes the same wheel byte-identical on every build.
            archive.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


# The in-tree backend shipped in every sdist: it turns the package into a wheel with the
# standard library only.
_BACKEND = textwrap.dedent(
    """
    import base64, hashlib, os, zipfile

    NAME, VERSION, PACKAGE, REQUIRES = {name!r}, {version!r}, {package!r}, {requires!r}

    def _metadata():
        lines = ["Metadata-Version: 2.1", "Name: " + NAME, "Version: " + VERSION]
        lines += ["Requires-Dist: " + r for r in REQUIRES]
        return ("\\n".join(lines) + "\\n").encode()

    def get_requires_for_build_wheel(config_settings=None):
        return []

    def get_requires_for_build_sdist(config_settings=None):
        return []

    def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
        dist_info = PACKAGE + "-" + VERSION + ".dist-info"
        os.makedirs(os.path.join(metadata_directory, dist_info))
        with open(os.path.join(metadata_directory, dist_info, "METADATA"), "wb") as f:
            f.write(_metadata())
        return dist_info

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        dist_info = PACKAGE + "-" + VERSION + ".dist-info"
        files = {{}}
        with open(os.path.join(PACKAGE, "__init__.py"), "rb") as f:
            files[PACKAGE + "/__init__.py"] = f.read()
        files[dist_info + "/METADATA"] = _metadata()
        files[dist_info + "/WHEEL"] = (
            b"Wheel-Version: 1.0\\nGenerator: in-tree\\n"
            b"Root-Is-Purelib: true\\nTag: py3-none-any\\n"
        )
        record = []
        for path, content in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
            record.append(path + ",sha256=" + digest.decode() + "," + str(len(content)))
        record.append(dist_info + "/RECORD,,")
        files[dist_info + "/RECORD"] = ("\\n".join(record) + "\\n").encode()
        filename = PACKAGE + "-" + VERSION + "-py3-none-any.whl"
        with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
            for path, content in files.items():
                archive.writestr(path, content)
        return filename
    """
)


def sdist(name: str, version: str, requires: list[str] | None = None) -> UpstreamFile:
    """A source distribution that builds itself with no build requirements."""
    package = _escaped(name)
    root = f"{package}-{version}"
    pyproject = textwrap.dedent(
        f"""
        [build-system]
        requires = []
        build-backend = "backend"
        backend-path = ["."]

        [project]
        name = "{name}"
        version = "{version}"
        dependencies = {list(requires or [])!r}
        """
    ).replace("'", '"')
    members = {
        f"{root}/PKG-INFO": metadata(name, version, requires),
        f"{root}/pyproject.toml": pyproject.encode(),
        f"{root}/backend.py": _BACKEND.format(
            name=name, version=version, package=package, requires=list(requires or [])
        ).encode(),
        f"{root}/{package}/__init__.py": f'VERSION = "{version}"\n'.encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, content in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mtime = 1577836800
            archive.addfile(info, io.BytesIO(content))
    return UpstreamFile(f"{root}.tar.gz", buffer.getvalue())
