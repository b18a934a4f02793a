"""In-process masters (reconciler.transport.fake) as the engine's and the leader's tests drive them: a fleet converged
on a spec dir, the restarts of a unit counted, and a master whose `curl` reaches an etcd (a real one on loopback, or
answers a test writes). Used by the held, rollback, break-glass, guard, enable and restart-lock attack tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reconciler.engine.converge import converge
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session


async def converged_fleet(specs: Path, hosts: dict[str, SimHost] | None = None) -> dict[str, SimHost]:
    """Every host of `specs` (new bare hosts, or `hosts`) converged on them in one pass: where a rollout starts."""
    desired = load_desired(specs)
    hosts = hosts if hosts is not None else {name: SimHost(name) for name in desired.hosts}
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}, [o.error for o in result.outcomes.values()]
    return hosts


def restarts(host: SimHost, unit: str) -> int:
    """How many times `unit` was restarted on `host`."""
    return sum(1 for _, u in host.restarted if u == unit)


class EtcdOverCurl(SimHost):
    """A master whose `curl` reaches an etcd cluster: `answer(host, url, body)` says what curl prints."""

    def __init__(self, name: str, answer: Callable[[SimHost, str, bytes], tuple[int, bytes, bytes]]):
        super().__init__(name)
        self.answer = answer

    def execute(self, argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        if argv[:1] == ["curl"]:
            self.commands += 1
            return self.answer(self, argv[-1], stdin)
        return super().execute(argv, stdin)
