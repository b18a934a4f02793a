"""etcd's v3 JSON gateway, the part leader election needs: leases, and one key held under a lease.

Owns the calls and their JSON (base64 keys and values, 64-bit numbers as strings, fields left out when zero
or false; every answer's shape checked with `leader.answers`), and what every exchange may cost: each request
to an endpoint ends within `deadline` seconds, whole (connecting, sending, reading every byte of the answer), and
an answer of more than ANSWER_LIMIT bytes is not read further. Endpoints are tried in turn; the last one that
answered first. `EtcdApi` is the calls, whatever carries them: `leader.from_here` with httpx from this machine
(the daemon), `leader.on_host` through curl on a member (the CLI, which so never imports httpx). Called by
`leader.elector` and `leader.restart_lock`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

from reconciler.errors import HostError
from reconciler.leader.answers import EtcdUnavailable, error, flag, items, number, obj, sub, text

__all__ = ["ANSWER_LIMIT", "EtcdApi", "EtcdUnavailable", "Holder", "Lease"]

ANSWER_LIMIT = 1 << 20  # bytes of one answer, at most: ours are a few keys of a few hundred bytes


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int  # seconds, as etcd granted it (at least ~1.5 x its election timeout, whatever was asked)


@dataclass(frozen=True)
class Holder:
    value: str  # who holds the key
    create_revision: int  # the fencing token: a new holding always has a higher one
    lease: int


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _holder(kv: object, what: str) -> Holder:
    kv = obj(kv, what)
    held = Holder(text(kv, "value", what), number(kv, "create_revision", what), number(kv, "lease", what, 0))
    if held.create_revision <= 0:
        raise EtcdUnavailable(f"{what}: a key with no create revision")
    return held


def _first(kvs: list[Any], what: str) -> Holder | None:
    return _holder(kvs[0], what) if kvs else None


class EtcdApi:
    """The calls leader election and the restart lock make. The endpoints are tried in turn, the last one that
    answered first; a subclass owns how one endpoint is asked (`_ask`: the answer's bytes, at most ANSWER_LIMIT
    of them read, or EtcdUnavailable or HostError saying why not) and sets `deadline`. An answer that is late,
    too large or not a JSON object counts as no answer."""

    endpoints: list[str]
    deadline = 5.0  # seconds one request to one endpoint may take, whole
    _good = 0  # the endpoint that answered last

    async def _ask(self, n: int, path: str, body: dict[str, Any]) -> bytes:
        raise NotImplementedError

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for i in range(len(self.endpoints)):
            n = (self._good + i) % len(self.endpoints)
            try:
                async with asyncio.timeout(self.deadline):
                    answer = await self._ask(n, path, body)
                if len(answer) > ANSWER_LIMIT:
                    raise EtcdUnavailable(f"an answer of more than {ANSWER_LIMIT} bytes")
                data = json.loads(answer)
            except TimeoutError:
                errors.append(f"{self.endpoints[n]}: no answer within {self.deadline:g}s")
                continue
            except (EtcdUnavailable, HostError) as exc:
                errors.append(f"{self.endpoints[n]}: {exc}")
                continue
            except (ValueError, RecursionError):  # garbage, or nesting deep enough to exhaust the parser
                data = None
            if not isinstance(data, dict):
                errors.append(f"{self.endpoints[n]}: an answer that is not a JSON object")
                continue
            self._good = n
            return data
        raise EtcdUnavailable("; ".join(errors))

    @property
    def answered(self) -> str:
        """The endpoint that answered last."""
        return self.endpoints[self._good]

    async def close(self) -> None:
        pass

    async def grant(self, ttl: int) -> Lease:
        data = await self._post("/v3/lease/grant", {"TTL": ttl})
        what = f"a lease grant {error(data)!r}" if error(data) else "a lease grant"
        lease = Lease(number(data, "ID", what), number(data, "TTL", what))
        if lease.id <= 0 or lease.ttl <= 0:
            raise EtcdUnavailable("a lease grant answer with no lease")
        return lease

    async def keepalive(self, lease: int) -> int:
        """The lease's TTL after the renewal; 0 when it had expired (it cannot be renewed any more)."""
        data = await self._post("/v3/lease/keepalive", {"ID": str(lease)})
        return max(0, number(sub(data, "result", "a keepalive"), "TTL", "a keepalive", 0))

    async def time_to_live(self, lease: int) -> int:
        """Whole seconds until `lease` expires (etcd rounds down; -1 once it has)."""
        data = await self._post("/v3/lease/timetolive", {"ID": str(lease)})
        return number(data, "TTL", "a time-to-live", -1)

    async def revoke(self, lease: int) -> None:
        await self._post("/v3/lease/revoke", {"ID": str(lease)})

    async def campaign(self, key: str, value: str, lease: int) -> Holder:
        """Put `key` = `value` under `lease` if nobody holds it; the holder either way (one transaction)."""
        k = _b64(key)
        data = await self._post(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "target": "CREATE", "create_revision": "0"}],
                "success": [{"requestPut": {"key": k, "value": _b64(value), "lease": str(lease)}}],
                "failure": [{"requestRange": {"key": k}}],
            },
        )
        what = f"a transaction {error(data)!r}" if error(data) else "a transaction"
        if flag(data, "succeeded", what):
            revision = number(sub(data, "header", what), "revision", what)
            if revision <= 0:
                raise EtcdUnavailable(f"{what}: a put with no revision")
            return Holder(value, revision, lease)
        responses = items(data, "responses", what)
        if not responses:
            raise EtcdUnavailable(f"{what}: neither put nor read")
        read = sub(obj(responses[0], what), "response_range", what)
        return _first(items(read, "kvs", what), what) or Holder("", 0, 0)  # none: gone since the compare

    async def put(self, key: str, value: str, lease: int = 0) -> None:
        """Put `key` = `value`, under `lease` (gone with it) or none (it outlives whoever wrote it)."""
        body = {"key": _b64(key), "value": _b64(value)}
        await self._post("/v3/kv/put", {**body, "lease": str(lease)} if lease else body)

    async def put_while(self, key: str, value: str, holder_key: str, create_revision: int) -> bool:
        """Put `key` = `value` only while `holder_key` is held under `create_revision` (a fenced write: a leader
        deposed meanwhile writes nothing); whether it was put."""
        data = await self._post(
            "/v3/kv/txn",
            {
                "compare": [{"key": _b64(holder_key), "target": "CREATE", "create_revision": str(create_revision)}],
                "success": [{"requestPut": {"key": _b64(key), "value": _b64(value)}}],
            },
        )
        return flag(data, "succeeded", "a fenced put")

    async def prefixed(self, prefix: str) -> dict[str, str]:
        """Every key under `prefix` with its value."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        data = await self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        out = {}
        for kv in items(data, "kvs", "a range"):
            kv = obj(kv, "a range")
            if "key" not in kv:
                raise EtcdUnavailable("a range: a key without its name")
            out[text(kv, "key", "a range")] = text(kv, "value", "a range")
        return out

    async def holder(self, key: str) -> Holder | None:
        data = await self._post("/v3/kv/range", {"key": _b64(key)})
        return _first(items(data, "kvs", "a range"), "a range")
