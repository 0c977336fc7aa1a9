"""Which hosts and addresses a repository's client may connect to (the SSRF guard).

An upstream's pages name the URLs of its files, and it answers with redirects: a hostile or
compromised upstream could point us at an address inside our own network (loopback, the
cloud metadata service at 169.254.169.254, a private database) and, when its page carries
no hash, have us hand the answer to a client. So every URL on a host other than the
upstream's own (file and `.metadata` URLs, every redirect hop) must:

1. match `file-hosts`, when that is set (`"files.example"`, `"*.files.example"`, or `"*"`:
   config.FileHost reads and matches an entry);
2. unless `file-hosts` names it, connect only to public addresses, or to addresses of a
   class the upstream itself lives on: an upstream on loopback or on a private network may
   link to its neighbours, a public one may not.

Names are checked inside the session's connector, by `GuardedResolver`: the addresses it
returns are the ones connected to, so no second lookup can be raced by a DNS answer that
changes in between. IP literals never reach a resolver; the client checks them with
`HostPolicy.check_address` before sending anything.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult

from mypypi2.config import FileHost, RepositoryConfig
from mypypi2.urls import normalize_host

AddressClass = Literal["public", "loopback", "private", "link-local", "unspecified", "reserved"]

_NETWORKS: tuple[tuple[AddressClass, tuple[str, ...]], ...] = (
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("unspecified", ("0.0.0.0/8", "::/128")),
    # The cloud metadata services (169.254.169.254, fd00:ec2::254 is in fc00::/7) live here.
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    # RFC 1918, carrier-grade NAT (RFC 6598) and unique local IPv6 (RFC 4193).
    ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")),
)
_PUBLIC: frozenset[AddressClass] = frozenset({"public"})
_CLASSIFIED = tuple(
    (name, tuple(ipaddress.ip_network(n) for n in networks)) for name, networks in _NETWORKS
)


def classify(address: str) -> AddressClass:
    """The class of an IP address; "reserved" for anything else not globally routable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    for name, networks in _CLASSIFIED:
        if any(ip in network for network in networks):
            return name
    # Multicast, broadcast, documentation, benchmarking, 240/4, ...
    return "public" if ip.is_global and not ip.is_multicast else "reserved"


def is_ip_literal(host: str) -> bool:
    """Whether `host` is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class HostRefused(OSError):
    """A connection the policy forbids (an OSError, as aiohttp expects of a resolver)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HostPolicy:
    """The rules above for one repository; `inner` resolves the upstream's own host."""

    def __init__(
        self, upstream_host: str, file_hosts: Sequence[str], inner: AbstractResolver
    ) -> None:
        self._upstream_host = normalize_host(upstream_host)
        self._file_hosts = tuple(FileHost.parse(entry) for entry in file_hosts)
        self._inner = inner
        self._upstream_classes: frozenset[AddressClass] | None = (
            frozenset({classify(self._upstream_host)})
            if is_ip_literal(self._upstream_host)
            else None
        )

    @classmethod
    def for_repository(
        cls, repository: RepositoryConfig, inner: AbstractResolver | None = None
    ) -> HostPolicy:
        host = urlsplit(repository.upstream).hostname or ""
        return cls(host, repository.file_hosts, inner or system_resolver())

    def is_upstream(self, host: str) -> bool:
        return normalize_host(host) == self._upstream_host

    def is_listed(self, host: str) -> bool:
        """Named by `file-hosts`: trusted at whatever address it resolves to."""
        return any(pattern.matches(host) for pattern in self._file_hosts)

    def check_host(self, host: str) -> None:
        """Refuse a host `file-hosts` leaves out (addresses are checked separately)."""
        if self._file_hosts and not self.is_exempt(host):
            raise HostRefused(f"refused: host {host} is not in file-hosts")

    def is_exempt(self, host: str) -> bool:
        """Connected to at any address: the upstream's own host, or one listed."""
        return self.is_upstream(host) or self.is_listed(host)

    def learn_upstream(self, results: Sequence[ResolveResult]) -> None:
        if results:
            self._upstream_classes = frozenset(classify(r["host"]) for r in results)

    async def allowed_classes(self) -> frozenset[AddressClass]:
        if self._upstream_classes is None:
            try:
                found = await self._inner.resolve(self._upstream_host, 0, socket.AF_UNSPEC)
                self.learn_upstream(found)
            except OSError:
                return _PUBLIC  # asked again next time
        return _PUBLIC | (self._upstream_classes or frozenset())

    async def check_address(self, host: str, address: str) -> None:
        """Refuse connecting to `address` (of `host`) when its class is not allowed."""
        if self.is_exempt(host):
            return
        found = classify(address)
        if found not in await self.allowed_classes():
            raise HostRefused(f"refused: host {host} is a {found} address ({address})")

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily
    ) -> list[ResolveResult]:
        """The addresses of `host` we may connect to; HostRefused when none is left."""
        results = await self._inner.resolve(host, port, family)
        if self.is_upstream(host):
            self.learn_upstream(results)
            return results
        if self.is_listed(host):
            return results
        allowed = await self.allowed_classes()
        kept = [r for r in results if classify(r["host"]) in allowed]
        if not kept:
            found = sorted({f"{classify(r['host'])} {r['host']}" for r in results})
            raise HostRefused(f"refused: host {host} resolves only to {', '.join(found)}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class GuardedResolver(AbstractResolver):
    """The session's resolver: the system's, its answers filtered by the policy."""

    def __init__(self, policy: HostPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return await self._policy.resolve(host, port, family)

    async def close(self) -> None:
        await self._policy.close()


def system_resolver() -> AbstractResolver:
    """getaddrinfo in a thread: honours /etc/hosts and the system's resolver configuration."""
    return ThreadedResolver()
