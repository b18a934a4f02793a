"""etcd's JSON gateway reached through a member host: curl on the master, over the SSH connection we already have.

Owns carrying `EtcdApi` calls where the client certificate lives: the etcd members' rollout HealthCheck names
the URL and the TLS files as the master sees them, and they stay there (the key never leaves the host). Used for
the cluster-wide restart lock by `reconciler apply` on an operator's machine and by the daemon alike. Members
are tried in turn (the one being restarted does not answer); the last one that answered first. The request body
goes on stdin, the URL after `--`: no spec value is ever parsed by a shell or taken as an option. An exchange
ends within `deadline` (curl's --max-time, plus the connection and the command: kept by `EtcdApi._post`), and
the transport reads no more of curl's output than an answer of ANSWER_LIMIT bytes and its status line.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from reconciler.errors import HostError
from reconciler.leader.gateway import ANSWER_LIMIT, EtcdApi, EtcdUnavailable
from reconciler.observe.facts import CURL_SAFE, curl_tls
from reconciler.spec.desired import DesiredCheck, DesiredHost, DesiredState
from reconciler.transport.session import Session


def etcd_members(desired: DesiredState) -> list[tuple[DesiredHost, DesiredCheck]]:
    """The members of the etcd unit (`DesiredState.etcd_unit`) with the HealthCheck that reaches them (an http(s)
    URL: its scheme and address are etcd's client URL, its TLS files the client's); members without one are left out."""
    unit = desired.etcd_unit
    if unit is None:
        return []
    out = []
    for host in desired.hosts_with_unit(unit):
        member = next(u for u in host.units if u.name == unit)
        check = host.check(member.rollout_check) if member.rollout_check else None
        if check is not None and check.url:
            out.append((host, check))
    return out


def client_url(check: DesiredCheck) -> str:
    """etcd's client URL from a health check's URL (its scheme and address; any user:password dropped)."""
    url = urlsplit(check.url or "")
    host = url.hostname or ""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://[{host}]{port}" if ":" in host else f"{url.scheme}://{host}{port}"


@dataclass(frozen=True)
class MemberStatus:
    """What a member says of itself (POST /v3/maintenance/status)."""

    member_id: str  # "" when it did not say
    leader: str  # the member it knows as the leader ("" or "0": none)
    learner: bool
    db_size: int  # bytes of its database (0: not said)

    @property
    def leads(self) -> bool:
        return self.member_id not in ("", "0") and self.member_id == self.leader


def _member_id(value: object) -> str:
    """A member id as etcd's gateway gives it (a uint64 in a string; a number in some answers), "" otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return ""
    return str(value)[:20]


def _split(stdout: bytes) -> tuple[int, bytes]:
    """curl's answer body and the HTTP status that `-w` printed on the last line."""
    body, sep, code = stdout.rstrip(b"\n").rpartition(b"\n")
    return (int(code), body) if sep and code.isdigit() and len(code) == 3 else (0, b"")


class EtcdOnHosts(EtcdApi):
    def __init__(
        self,
        session: Session,
        members: list[tuple[DesiredHost, DesiredCheck]],
        *,
        timeout: float = 2.0,
        last: str | None = None,
    ):
        """`last`: the member to try only when the others do not answer (the one about to be restarted)."""
        if not members:
            raise ValueError("no etcd member")
        self.session, self.timeout = session, timeout
        self.deadline = timeout + 5  # the connection counts too: an unreachable member costs this, then the next
        self.members = sorted(members, key=lambda m: m[0].name == last)
        self.endpoints = [f"{h.name} ({client_url(c)})" for h, c in self.members]

    async def _ask(self, n: int, path: str, body: dict[str, Any]) -> bytes:
        exit_status, status, answer = await self.exchange(n, path, body)
        if exit_status != 0 or status != 200:
            raise EtcdUnavailable(f"HTTP {status}" if status else f"curl exit {exit_status}")
        return answer

    async def exchange(self, n: int, path: str, body: dict[str, Any] | None) -> tuple[int, int, bytes]:
        """One request to member `n` (a POST of `body`; a GET when None), as curl on it saw it: curl's exit status,
        the HTTP status (0: none), the body. Raises HostError when the member's host cannot be reached."""
        host, check = self.members[n]
        argv = ["curl", *CURL_SAFE, "--max-time", f"{self.timeout:g}", "-w", "\n%{http_code}"]
        if body is not None:
            argv += ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-"]
        argv += [*curl_tls(check.ca_file, check.cert_file, check.key_file), "--", client_url(check) + path]
        conn = await self.session.connection(host.target)
        sent = json.dumps(body).encode() if body is not None else b""
        result = await conn.run(argv, input=sent, timeout=self.timeout + 3, max_output=ANSWER_LIMIT + 8)
        status, answer = _split(result.stdout)
        return result.exit_status, status, answer

    async def member_status(self, n: int) -> MemberStatus | str:
        """What member `n` says of itself, or why it says nothing (its host not reached, its member silent)."""
        host = self.members[n][0]
        try:
            call = self.exchange(n, "/v3/maintenance/status", {})
            exit_status, status, body = await asyncio.wait_for(call, self.deadline)
            said = json.loads(body) if exit_status == 0 and status == 200 else None
        except (TimeoutError, HostError, ValueError, RecursionError) as exc:
            return f"{host.name}: not asked ({exc or type(exc).__name__})"
        if not isinstance(said, dict):
            return f"{host.name}: its member does not answer (curl exit {exit_status}, HTTP {status})"
        header = said.get("header")
        me, leader, size = header.get("member_id") if isinstance(header, dict) else "", said.get("leader"), said.get("dbSize")  # fmt: skip
        return MemberStatus(
            _member_id(me),
            _member_id(leader),
            said.get("isLearner") is True,
            int(size) if isinstance(size, str) and size.isdigit() and len(size) < 19 else 0,
        )

    async def leading_host(self) -> str | None:
        """The host whose member leads, as that member says (None: no member says it leads, or none answers)."""
        said = await asyncio.gather(*(self.member_status(n) for n in range(len(self.members))))
        return next((self.members[n][0].name for n, s in enumerate(said) if isinstance(s, MemberStatus) and s.leads), None)  # fmt: skip

    async def cluster_version(self) -> str | None:
        """The cluster's version as a member says it (GET /version: "etcdcluster", e.g. "3.4.0"), from the first
        member that answers; None when none does (no member running yet, no quorum) or it says none."""
        for n in range(len(self.members)):
            try:
                exit_status, status, answer = await asyncio.wait_for(self.exchange(n, "/version", None), self.deadline)
                said = json.loads(answer) if exit_status == 0 and status == 200 else None
            except (TimeoutError, HostError, ValueError, RecursionError):
                continue
            version = said.get("etcdcluster") if isinstance(said, dict) else None
            if isinstance(version, str) and version and version != "not_decided":
                return version[:20]
        return None
