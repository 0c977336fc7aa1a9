"""A resolver that answers from a table, for tests of the host policy (no DNS query leaves)."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from mypypi2.upstream import hosts


class FakeResolver(AbstractResolver):
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        name = host.lower().rstrip(".")  # as DNS compares names
        if name not in self.table:
            raise OSError(f"no such host {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in self.table[name]
        ]

    async def close(self) -> None:
        pass


def install(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> FakeResolver:
    """Make every policy and session built from now on resolve names from `table`."""
    resolver = FakeResolver(table)
    monkeypatch.setattr(hosts, "system_resolver", lambda: resolver)
    return resolver
