""" "Did you mean": the closest valid name to a wrong one, and the keys valid at a place.

``keys_at(model, loc)`` walks the config's pydantic models along an error's location (a
section, a list index, a mapping's key, a discriminated union's tag) and returns the keys the
mapping there accepts, so an unknown key is reported with its section and the closest valid
key. ``closest`` is ``difflib.get_close_matches`` with one answer, also used for instance
types and regions.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["closest", "did_you_mean", "keys_at"]


def closest(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate most like ``name`` (difflib's ratio >= ``cutoff``), or None."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    match = closest(name, candidates)
    return f"; did you mean {match!r}?" if match else ""


def keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys a mapping at ``loc`` inside ``model``'s input may hold (empty if unknown)."""
    found: list[str] = []
    for at in _walk(model, loc):
        if isinstance(at, type) and issubclass(at, BaseModel):
            found.extend(k for k in at.model_fields if k not in found)
    return found


def _walk(annotation: Any, loc: tuple[str | int, ...]) -> list[Any]:
    """The types that can stand at ``loc`` in a value of type ``annotation``."""
    if not loc:
        return _members(annotation)
    part, rest = loc[0], loc[1:]
    for arg in _members(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            if isinstance(part, str) and part in arg.model_fields:
                return _walk(arg.model_fields[part].annotation, rest)
            continue
        origin, params = get_origin(arg), get_args(arg)
        if origin in (tuple, list) and isinstance(part, int) and params:
            return _walk(params[0], rest)
        if origin is dict and isinstance(part, str) and len(params) == 2:
            return _walk(params[1], rest)
    tagged = [m for m in _members(annotation) if _tag_of(m) == part]
    return _walk(tagged[0], rest) if tagged else []


def _members(annotation: Any) -> list[Any]:
    """``annotation`` without Annotated and Optional, a union split into its members."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _tag_of(member: Any) -> object:
    """The ``kind`` a member of a discriminated union is chosen by (pydantic puts it in an
    error's location), or None."""
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return None
    kind = member.model_fields.get("kind")
    if kind is None or get_origin(kind.annotation) is not Literal:
        return None
    return get_args(kind.annotation)[0]
