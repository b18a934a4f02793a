"""etcd's v3 JSON gateway asked from this machine: the daemon's elector.

Owns the HTTP client (httpx: async, keeps connections, client-certificate TLS; etcd 3.4's gateway works with it
and no maintained async gRPC client covers 3.4 with TLS). The calls themselves are `leader.gateway.EtcdApi`'s.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from reconciler.leader.gateway import EtcdApi, EtcdUnavailable


class EtcdGateway(EtcdApi):
    """Straight to the members from this machine (httpx, the TLS files read here): the daemon's elector."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout: float = 2.0,
    ):
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        verify: ssl.SSLContext | bool = True
        if any(e.startswith("https:") for e in self.endpoints):
            context = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                context.load_cert_chain(cert_file, key_file)
            verify = context
        self._client = httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=False)

    async def _ask(self, n: int, path: str, body: dict[str, Any]) -> bytes:
        try:
            resp = await self._client.post(self.endpoints[n] + path, json=body)
        except httpx.HTTPError as exc:
            raise EtcdUnavailable(type(exc).__name__) from None
        if resp.status_code != 200:
            raise EtcdUnavailable(f"HTTP {resp.status_code}")
        return resp.content

    async def close(self) -> None:
        await self._client.aclose()
