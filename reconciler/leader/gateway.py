"""etcd's v3 JSON gateway, the part leader election needs: leases, and one key held under a lease.

Owns the calls and their JSON (base64 keys and values, 64-bit numbers as strings, fields left out when zero
or false). Endpoints are tried in turn; the last one that answered first. `EtcdApi` is the calls, whatever
carries them: `leader.from_here` with httpx from this machine (the daemon), `leader.on_host` through curl on a
member (the CLI, which so never imports httpx). Called by `leader.elector` and `leader.restart_lock`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from reconciler.errors import HostError


class EtcdUnavailable(Exception):
    """No endpoint answered (or all answered with an error): no quorum, or no network to any member."""


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


def _holder(kv: dict[str, Any]) -> Holder:
    return Holder(
        base64.b64decode(kv.get("value", "")).decode(errors="replace"),
        int(kv["create_revision"]),
        int(kv.get("lease", 0)),
    )


class EtcdApi:
    """The calls leader election and the restart lock make. The endpoints are tried in turn, the last one that
    answered first; a subclass owns how one endpoint is asked (`_ask`: the answer's bytes, or EtcdUnavailable or
    HostError saying why not). An answer that is not a JSON object counts as no answer."""

    endpoints: list[str]
    _good = 0  # the endpoint that answered last

    async def _ask(self, n: int, path: str, body: dict[str, Any]) -> bytes:
        raise NotImplementedError

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for i in range(len(self.endpoints)):
            n = (self._good + i) % len(self.endpoints)
            try:
                data = json.loads(await self._ask(n, path, body))
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
        try:
            lease = Lease(int(data["ID"]), int(data["TTL"]))
        except (KeyError, TypeError, ValueError):
            raise EtcdUnavailable(
                f"a lease grant answer without ID and TTL: {str(data.get('error', ''))[:200]}"
            ) from None
        if lease.id <= 0 or lease.ttl <= 0:
            raise EtcdUnavailable("a lease grant answer with no lease")
        return lease

    async def keepalive(self, lease: int) -> int:
        """The lease's TTL after the renewal; 0 when it had expired (it cannot be renewed any more)."""
        data = await self._post("/v3/lease/keepalive", {"ID": str(lease)})
        try:
            return int((data.get("result") or {}).get("TTL", 0))
        except (AttributeError, TypeError, ValueError):
            raise EtcdUnavailable("a keepalive answer of an unknown shape") from None

    async def time_to_live(self, lease: int) -> int:
        """Whole seconds until `lease` expires (etcd rounds down; -1 once it has)."""
        data = await self._post("/v3/lease/timetolive", {"ID": str(lease)})
        try:
            return int(data.get("TTL", -1))
        except (TypeError, ValueError):
            raise EtcdUnavailable("a time-to-live answer of an unknown shape") from None

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
        try:
            if data.get("succeeded"):
                return Holder(value, int(data["header"]["revision"]), lease)
            kvs = data["responses"][0]["response_range"].get("kvs", [])
            return _holder(kvs[0]) if kvs else Holder("", 0, 0)  # none: it went away since the compare
        except (KeyError, IndexError, TypeError, ValueError):
            raise EtcdUnavailable(
                f"a transaction answer of an unknown shape: {str(data.get('error', ''))[:200]}"
            ) from None

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
        return bool(data.get("succeeded"))

    async def prefixed(self, prefix: str) -> dict[str, str]:
        """Every key under `prefix` with its value."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        data = await self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        try:
            return {
                base64.b64decode(kv["key"]).decode(errors="replace"): base64.b64decode(kv.get("value", "")).decode(
                    errors="replace"
                )
                for kv in data.get("kvs", [])
            }
        except (KeyError, TypeError, ValueError):
            raise EtcdUnavailable("a range answer of an unknown shape") from None

    async def holder(self, key: str) -> Holder | None:
        data = await self._post("/v3/kv/range", {"key": _b64(key)})
        try:
            kvs = data.get("kvs", [])
            return _holder(kvs[0]) if kvs else None
        except (KeyError, IndexError, TypeError, ValueError):
            raise EtcdUnavailable("a range answer of an unknown shape") from None
