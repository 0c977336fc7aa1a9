"""The host policy (SSRF guard) on its own: address classes, file-hosts, what a name may
resolve to. Names resolve from a table: no DNS query and no connection leaves the test."""

from __future__ import annotations

import socket

import pytest

from mypypi2.config import FileHost, RepositoryConfig
from mypypi2.upstream.hosts import AddressClass, HostPolicy, HostRefused, classify
from tests.fake_dns import FakeResolver

# Never connected to: the resolver answers from a table and nothing opens a socket.
PUBLIC = "1.2.3.4"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00:ec2::254", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("224.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
        ("240.0.0.1", "reserved"),
        ("172.32.0.1", "public"),
        (PUBLIC, "public"),
        ("2606:4700::1111", "public"),
    ],
)
def test_classify(address: str, expected: AddressClass) -> None:
    assert classify(address) == expected


def policy(
    upstream: str = "upstream.example",
    file_hosts: list[str] | None = None,
    table: dict[str, list[str]] | None = None,
) -> HostPolicy:
    names = {"upstream.example": [PUBLIC], **(table or {})}
    repository = RepositoryConfig(
        name="pypi", upstream=f"https://{upstream}/simple/", file_hosts=file_hosts or []
    )
    return HostPolicy.for_repository(repository, FakeResolver(names))


async def resolve(policy: HostPolicy, host: str) -> list[str]:
    return [r["host"] for r in await policy.resolve(host, 443, socket.AF_UNSPEC)]


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.8", "169.254.169.254", "0.0.0.0", "::1", "fd12::1"]
)
async def test_a_public_upstream_may_not_send_us_to_an_inner_address(address: str) -> None:
    guard = policy(table={"files.example": [address]})

    with pytest.raises(HostRefused) as refused:
        await resolve(guard, "files.example")

    assert refused.value.reason.startswith("refused: host files.example resolves only to ")
    assert address in refused.value.reason


async def test_only_the_allowed_addresses_of_a_name_are_connected_to() -> None:
    guard = policy(table={"files.example": ["127.0.0.1", PUBLIC, "10.0.0.1"]})

    assert await resolve(guard, "files.example") == [PUBLIC]


async def test_an_upstream_on_loopback_may_link_to_loopback_but_not_to_private() -> None:
    guard = policy(
        upstream="127.0.0.1:8080",
        table={"files.example": ["127.0.0.5"], "db.example": ["10.0.0.5"]},
    )

    assert await resolve(guard, "files.example") == ["127.0.0.5"]
    await guard.check_address("127.0.0.9", "127.0.0.9")
    with pytest.raises(HostRefused):
        await resolve(guard, "db.example")
    with pytest.raises(HostRefused, match=r"169\.254\.169\.254 is a link-local address"):
        await guard.check_address("169.254.169.254", "169.254.169.254")


async def test_an_upstream_named_on_a_private_network_may_link_to_that_network() -> None:
    guard = policy(upstream="pypi.corp", table={"pypi.corp": ["10.0.0.2"], "f.corp": ["10.9.9.9"]})

    assert await resolve(guard, "f.corp") == ["10.9.9.9"]
    with pytest.raises(HostRefused, match=r"127\.0\.0\.1 is a loopback address"):
        await guard.check_address("127.0.0.1", "127.0.0.1")


async def test_the_upstream_itself_is_connected_to_wherever_it_is() -> None:
    guard = policy(table={"upstream.example": ["127.0.0.1"]})

    assert await resolve(guard, "UPSTREAM.example.") == ["127.0.0.1"]


async def test_an_upstream_that_does_not_resolve_allows_only_public_addresses() -> None:
    guard = policy(upstream="gone.example", table={"files.example": ["127.0.0.1", PUBLIC]})

    assert await resolve(guard, "files.example") == [PUBLIC]


async def test_a_listed_file_host_is_trusted_at_any_address() -> None:
    guard = policy(file_hosts=["*.corp.example"], table={"files.corp.example": ["10.1.1.1"]})

    assert await resolve(guard, "files.corp.example") == ["10.1.1.1"]
    await guard.check_address("files.corp.example", "10.1.1.1")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("upstream.example", True),  # the upstream's own host is always allowed
        ("files.example", True),
        ("FILES.example.", True),
        ("a.cdn.example", True),
        ("cdn.example", False),  # "*." names the subdomains only
        ("evilcdn.example", False),
        ("files.example.evil", False),
        ("127.0.0.1", False),
    ],
)
def test_file_hosts_names_the_only_other_hosts(host: str, allowed: bool) -> None:
    guard = policy(file_hosts=["files.example", "*.cdn.example"])

    if allowed:
        guard.check_host(host)
    else:
        with pytest.raises(HostRefused, match=f"host {host} is not in file-hosts"):
            guard.check_host(host)


async def test_star_allows_every_host_at_every_address() -> None:
    guard = policy(file_hosts=["*"], table={"anything.example": ["127.0.0.1"]})

    guard.check_host("anything.example")
    assert await resolve(guard, "anything.example") == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("files.example", FileHost("files.example", subdomains=False)),
        ("*.CDN.Example.", FileHost("cdn.example", subdomains=True)),
        ("*", FileHost("", subdomains=True)),
    ],
)
def test_a_file_hosts_entry_is_read_by_config(entry: str, parsed: FileHost) -> None:
    # What config/options.py validates at load is what the policy matches with: one reading.
    assert FileHost.parse(entry) == parsed
    assert policy(file_hosts=[entry]).is_listed("a.cdn.example") == (entry != "files.example")
