"""What the harness needs on a fresh machine: nginx and wrk (Debian), the peers (PyPI).

The peers each get their own venv under bench/work/venvs/, never the project's venv; they
are installed with the machine's ordinary pip configuration, at pinned versions so runs
stay comparable (bump the pins here).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bench.proc import run

# gunicorn 23.0.0, not proxpi's container pin (26.0.0): 26 and 27 stall uv (targets.py).
PEERS = {
    "proxpi": ["proxpi==1.3.1", "gunicorn==23.0.0"],
    "devpi": ["devpi-server==6.20.3"],
}
_NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/bin/nginx")


def _find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in _NGINX_CANDIDATES if os.access(path, os.X_OK)), None
    )


def ensure_tools() -> tuple[str, str]:
    """Paths of nginx and wrk, installing them with apt-get when missing."""
    nginx, wrk = _find_nginx(), shutil.which("wrk")
    if nginx and wrk:
        return nginx, wrk
    if os.geteuid() != 0:
        raise SystemExit("bench: nginx and wrk are needed: apt-get install nginx-light wrk")
    print("bench: installing nginx and wrk with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env, timeout=600)
    # Debian 12 has nginx-light; later releases fold it into nginx.
    if run(
        ["apt-get", "install", "-y", "-q", "nginx-light", "wrk"], env=env, check=False
    ).returncode:
        run(["apt-get", "install", "-y", "-q", "nginx", "wrk"], env=env, timeout=600)
    nginx, wrk = _find_nginx(), shutil.which("wrk")
    if not (nginx and wrk):
        raise SystemExit("bench: apt-get did not provide nginx and wrk")
    return nginx, wrk


def ensure_peer(venvs: Path, name: str) -> Path:
    """The venv of peer `name`, created and filled on first use; returns its bin/."""
    venv = venvs / name
    marker = venv / ".bench-requirements"
    wanted = "\n".join(PEERS[name])
    if marker.is_file() and marker.read_text() == wanted:
        return venv / "bin"
    print(f"bench: installing {' '.join(PEERS[name])} into {venv}", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    run([str(venv / "bin" / "pip"), "install", "-q", *PEERS[name]], timeout=900)
    marker.write_text(wanted)
    return venv / "bin"
