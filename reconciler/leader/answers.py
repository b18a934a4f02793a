"""The shapes of etcd's JSON gateway answers, checked in one place.

Owns `EtcdUnavailable` (etcd did not answer usefully: no endpoint answered, or what came back is not an answer of
the shape asked for) and the small readers `leader.gateway` builds its answers from: each takes a field of a JSON
object and returns it typed, or raises EtcdUnavailable; none lets another exception through. What etcd's gateway
writes (protobuf's JSON mapping): 64-bit numbers as decimal strings, bytes as standard base64, a field left out
when it is zero, false or empty.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

_INT64 = re.compile(r"-?[0-9]{1,19}")


class EtcdUnavailable(Exception):
    """No endpoint answered (or all answered with an error, or with an answer of an unknown shape): no quorum, no
    network to any member, or something else at the address."""


def _bad(what: str, why: str) -> EtcdUnavailable:
    return EtcdUnavailable(f"{what}: an answer of an unknown shape ({why})")


def obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(what, f"{type(value).__name__} where an object was expected")
    return value


def sub(data: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """An object field; {} when left out."""
    value = data.get(key)
    return {} if value is None else obj(value, f"{what}: {key}")


def items(data: dict[str, Any], key: str, what: str) -> list[Any]:
    """A list field; [] when left out."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(what, f"{key} is a {type(value).__name__}, not a list")
    return value


def number(data: dict[str, Any], key: str, what: str, default: int | None = None) -> int:
    """A 64-bit integer field (a decimal string, or a JSON integer); `default` when left out, if there is one."""
    value = data.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, str) and _INT64.fullmatch(value):
        n = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        raise _bad(what, f"{key} is {'missing' if value is None else type(value).__name__}, not a number")
    if not -(2**63) <= n < 2**64:  # int64, or uint64 (etcd's revisions and leases are int64; IDs can be either)
        raise _bad(what, f"{key} is out of range")
    return n


def flag(data: dict[str, Any], key: str, what: str) -> bool:
    """A boolean field; False when left out."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise _bad(what, f"{key} is a {type(value).__name__}, not true or false")
    return value


def text(data: dict[str, Any], key: str, what: str) -> str:
    """A bytes field (base64) as text; "" when left out."""
    value = data.get(key, "")
    if not isinstance(value, str):
        raise _bad(what, f"{key} is a {type(value).__name__}, not base64")
    try:
        return base64.b64decode(value, validate=True).decode(errors="replace")
    except (binascii.Error, ValueError):
        raise _bad(what, f"{key} is not base64") from None


def error(data: dict[str, Any]) -> str:
    """What etcd said went wrong, if it said (bounded: whatever is at the address wrote it)."""
    value = data.get("error", data.get("message", ""))
    return value[:200] if isinstance(value, str) else ""
