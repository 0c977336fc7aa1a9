"""The option declarations read back (msgspec.inspect): name, description, unit, example.

example_config.py renders options from here; convert.py and explain.py walk the Config's
type tree with the helpers below.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import msgspec
from msgspec import inspect as types

from mypypi2.config.options import Config
from mypypi2.config.values import Unit


class Option(NamedTuple):
    """One option of a Struct: what `config.example.toml` says of it."""

    attribute: str
    name: str  # as written in a config file
    description: str
    unit: Unit | None
    example: object  # Meta(examples=[...]): shown for an option unset by default


@functools.cache
def options(struct: type[msgspec.Struct]) -> tuple[Option, ...]:
    info = types.type_info(struct)
    assert isinstance(info, types.StructType)
    return tuple(
        Option(
            f.name,
            f.encode_name,
            description_of(f.type, f"{struct.__name__}.{f.name}"),
            unit_of(f.type),
            _schema(f.type).get("examples", [None])[0],
        )
        for f in info.fields
    )


def _schema(type_: types.Type) -> dict[str, Any]:
    return (type_.extra_json_schema if isinstance(type_, types.Metadata) else None) or {}


def description_of(type_: types.Type, where: str) -> str:
    description = _schema(type_).get("description")
    if not description:
        raise TypeError(f"{where} has no Meta(description=...)")
    return str(description)


@functools.cache
def config_type() -> types.StructType:
    info = types.type_info(Config)
    assert isinstance(info, types.StructType)
    return info


def bare_type(type_: types.Type) -> types.Type:
    return type_.type if isinstance(type_, types.Metadata) else type_


def union_members(type_: types.Type) -> tuple[types.Type, ...]:
    """The alternatives of a union (each with its own metadata), else `type_` alone."""
    bare = bare_type(type_)
    return bare.types if isinstance(bare, types.UnionType) else (type_,)


def unit_of(type_: types.Type) -> Unit | None:
    for member in (type_, *union_members(type_)):
        if isinstance(member, types.Metadata) and member.extra and "unit" in member.extra:
            unit: Unit = member.extra["unit"]
            return unit
    return None


def literal_choices(type_: types.Type) -> tuple[object, ...]:
    return tuple(
        value
        for member in union_members(type_)
        if isinstance(bare := bare_type(member), types.LiteralType)
        for value in bare.values
    )
