"""Durations and sizes written as strings in config data become numbers, where the
option's declared type has a unit, before msgspec builds the Structs."""

from __future__ import annotations

import json
from typing import Any

from msgspec import inspect as types

from mypypi2.config.schema import bare_type, literal_choices, union_members, unit_of
from mypypi2.config.values import Unit, parse_duration, parse_size


def with_unit(text: str, type_: types.Type, unit: Unit) -> object:
    """The number `text` means for an option of `type_` ("forever" stays, where allowed)."""
    choices = literal_choices(type_)
    if text in choices:
        return text
    if unit == "size":
        return parse_size(text)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        if not choices:
            raise
        raise ValueError(f"{exc}; or {', '.join(json.dumps(c) for c in choices)}") from None
    if any(isinstance(bare_type(m), types.IntType) for m in union_members(type_)):
        if not seconds.is_integer():
            raise ValueError(f"{text!r} is not a whole number of seconds")
        return int(seconds)
    return seconds


def numbers_for_units(value: Any, type_: types.Type, path: str) -> Any:
    """`value` (config data for `type_`) with durations and sizes written as strings turned
    into numbers; ValueError naming the option (`repositories[0].ttl`) for a bad one."""
    bare = bare_type(type_)
    if isinstance(bare, types.StructType) and isinstance(value, dict):
        for field in bare.fields:
            if field.encode_name in value:
                where = f"{path}.{field.encode_name}" if path else field.encode_name
                value[field.encode_name] = numbers_for_units(
                    value[field.encode_name], field.type, where
                )
    elif isinstance(bare, types.VarTupleType) and isinstance(value, list):
        return [numbers_for_units(v, bare.item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    elif isinstance(value, str) and (unit := unit_of(type_)) is not None:
        try:
            return with_unit(value, type_, unit)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return value
