"""msgspec's validation errors told in the options' own terms (rule and description)."""

from __future__ import annotations

import json
import re

import msgspec
from msgspec import inspect as types

from mypypi2.config.schema import bare_type, config_type, description_of, union_members, unit_of
from mypypi2.config.values import FORMS, format_size


def _rule(type_: types.Type) -> str:
    """What a value of `type_` must be ("between 1 and 65535"); "" when its type says it all."""
    members = union_members(type_)
    if len(members) > 1:
        return " or ".join(rule for rule in map(_rule, members) if rule)
    bare = bare_type(type_)
    if isinstance(bare, types.LiteralType):
        shown = ", ".join(json.dumps(v) for v in bare.values)
        return shown if len(bare.values) == 1 else f"one of {shown}"
    if not isinstance(bare, (types.IntType, types.FloatType)):
        return ""

    def show(bound: float) -> str:
        return format_size(int(bound)) if bound and unit_of(type_) == "size" else str(bound)

    if bare.ge is not None and bare.le is not None:
        return f"between {show(bare.ge)} and {show(bare.le)}"
    bounds = ((">=", bare.ge), (">", bare.gt), ("<=", bare.le), ("<", bare.lt))
    return " and ".join(f"{op} {show(v)}" for op, v in bounds if v is not None)


def _field_at(path: str) -> types.Field | None:
    """The option at `path` ("repositories[0].ttl"), None for a section or list entry."""
    type_: types.Type = config_type()
    field = None
    for part in re.findall(r"\[\d+\]|[^.\[]+", path):
        bare = bare_type(type_)
        if part.startswith("[") and isinstance(bare, types.VarTupleType):
            type_, field = bare.item_type, None
        elif isinstance(bare, types.StructType):
            field = next((f for f in bare.fields if f.encode_name == part), None)
            if field is None:
                return None
            type_ = field.type
        else:
            return None
    return field


_AT = re.compile(r"(?P<reason>.*) - at `\$\.?(?P<path>[^`]*)`")


def explained(error: msgspec.ValidationError) -> str:
    """msgspec's message with the option first ("server.port must be between 1 and 65535
    (TCP port to listen on)"): the rule and description come from the option's Meta."""
    match = _AT.fullmatch(str(error))
    if match is None:
        return str(error)
    reason, path = match["reason"], match["path"]
    field = _field_at(path)
    if field is None:
        return f"{path}: {reason}" if path else reason
    rule, unit = _rule(field.type), unit_of(field.type)
    given = reason.removeprefix("Invalid enum value ")
    if rule and (given != reason or (reason.startswith("Expected `") and ", got " not in reason)):
        summary = description_of(field.type, path).split(". ")[0].removesuffix(".")
        return (
            f"{path} must be {rule}"
            + (f", not {given}" if given != reason else "")
            + f" ({summary})"
        )
    if unit is not None and ", got " in reason:
        return f"{path}: expected a {unit} ({FORMS[unit]}), got {reason.split(', got ', 1)[1]}"
    return f"{path}: {reason}"
