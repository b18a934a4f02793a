"""etcd's v3 JSON gateway asked from this machine: the daemon's elector.

Owns the HTTP client (httpx: async, keeps connections, client-certificate TLS; etcd 3.4's gateway works with it
and no maintained async gRPC client covers 3.4 with TLS) and reading an answer: streamed, not past ANSWER_LIMIT
bytes, never compressed (a byte count taken before inflating would bound nothing). httpx's timeout is per read
(an answer that drips a byte at a time never trips it): `timeout` is also the whole request's deadline, which
`EtcdApi._post` keeps. The calls themselves are `leader.gateway.EtcdApi`'s.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from reconciler.leader.gateway import ANSWER_LIMIT, EtcdApi, EtcdUnavailable


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
        self.deadline = timeout  # the whole request, answer read (httpx's own timeout is per step and per read)
        self._client = httpx.AsyncClient(
            verify=verify, timeout=timeout, trust_env=False, headers={"Accept-Encoding": "identity"}
        )

    async def _ask(self, n: int, path: str, body: dict[str, Any]) -> bytes:
        try:
            async with self._client.stream("POST", self.endpoints[n] + path, json=body) as resp:
                if resp.status_code != 200:
                    raise EtcdUnavailable(f"HTTP {resp.status_code}")
                return await _read(resp)
        except httpx.HTTPError as exc:
            raise EtcdUnavailable(type(exc).__name__) from None

    async def close(self) -> None:
        await self._client.aclose()


async def _read(resp: httpx.Response) -> bytes:
    """The answer's body as sent (no content decoding), refused once it is over ANSWER_LIMIT bytes."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise EtcdUnavailable(f"a {encoding[:20]!r}-encoded answer (asked for identity)")
    too_large = EtcdUnavailable(f"an answer of more than {ANSWER_LIMIT} bytes; not read further")
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > ANSWER_LIMIT:
        raise too_large
    chunks, size = [], 0
    async for chunk in resp.aiter_raw():
        size += len(chunk)
        if size > ANSWER_LIMIT:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
