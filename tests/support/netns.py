"""Hosts of their own on this machine: network namespaces on one bridge (root only).

Each namespace gets a veth into a bridge on the host side; the host side has the bridge's
address, the namespaces one each on the same /24, so every one reaches the host and every
other. What a test starts in a namespace sees a disk of its own at one directory (a tmpfs
mounted there, visible to that process alone), as on another machine. `remove` deletes
everything made, whatever state it is in; names carry our pid, so parallel runs never meet.
Services listening on loopback only are reached through a `Forward`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

_IP_TIMEOUT = 10.0


def unavailable() -> str | None:
    """Why namespaces cannot be made here (the reason to skip), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"mp2-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


class Namespaces:
    def __init__(self, count: int) -> None:
        tag = os.getpid() % 10000
        self.names = [f"mp2-{tag}-{index}" for index in range(count)]
        # Interface names have at most 15 characters.
        self._bridge = f"mp2br{tag}"
        self._veths = [f"mp2v{tag}h{index}" for index in range(count)]
        subnet = f"10.231.{tag % 250}"
        self.host_address = f"{subnet}.1"
        self.subnet = f"{subnet}.0/24"
        self.addresses = [f"{subnet}.{11 + index}" for index in range(count)]

    def create(self) -> None:
        try:
            self._ip("link", "add", self._bridge, "type", "bridge")
            self._ip("addr", "add", f"{self.host_address}/24", "dev", self._bridge)
            self._ip("link", "set", self._bridge, "up")
            for name, veth, address in zip(self.names, self._veths, self.addresses, strict=True):
                inside = f"{veth[:-2]}n{veth[-1]}"
                self._ip("netns", "add", name)
                self._ip("link", "add", veth, "type", "veth", "peer", "name", inside)
                self._ip("link", "set", inside, "netns", name)
                self._ip("link", "set", veth, "master", self._bridge, "up")
                self._ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
                self._ip("-n", name, "link", "set", inside, "up")
                self._ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def command(self, index: int, private_dir: str, *argv: str) -> list[str]:
        """`argv` run in namespace `index`, with a disk of its own at `private_dir`."""
        # `ip netns exec` gives the command a mount namespace of its own, slave to ours:
        # the tmpfs mounted there is seen by that command (and its children) only.
        script = 'mount -t tmpfs -o size=512m tmpfs "$1" && shift && exec "$@"'
        namespace = self.names[index]
        return ["ip", "netns", "exec", namespace, "sh", "-c", script, "sh", private_dir, *argv]

    def remove(self) -> None:
        # Deleting a namespace deletes the veth ends in it, and so their peers.
        for name in self.names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        for veth in self._veths:
            subprocess.run(["ip", "link", "delete", veth], capture_output=True)
        subprocess.run(["ip", "link", "delete", self._bridge], capture_output=True)

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=_IP_TIMEOUT)


class Forward:
    """TCP from an address the namespaces reach on to a service listening on loopback only
    (the test PostgreSQL), in the test's event loop."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self, host: str) -> int:
        """Listen on `host`; the port."""
        self._server = await asyncio.start_server(self._connected, host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in set(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, target_writer), (target_reader, writer)):
            pipe = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()
