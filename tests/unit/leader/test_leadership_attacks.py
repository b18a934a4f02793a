"""leader.leadership, attacked (issue 26, item 10): the held memory (engine.held) one leader publishes under
/reconciler/held reaches the next leader, through a real etcd on loopback; one too large for etcd to carry never
shuts every later leader's fence (the newest entries that fit are carried).

Each test confirms something that held under attack."""

from __future__ import annotations

from reconciler.engine.held import Held
from tests.support.etcd import two, wait_ready

APISERVER = "kube-apiserver.service"
SHARED = "/etc/kubernetes/config"


async def test_a_large_held_memory_published_by_one_leader_does_not_shut_every_later_leaders_fence(etcd: str) -> None:
    from reconciler.leader.elector import Elector
    from reconciler.leader.leadership import MAX_HELD_VALUE, Leadership
    from reconciler.status.metrics import Metrics

    memory = Held()
    for i in range(750):  # a fleet-wide bad kube-apiserver config, rolled back on 750 masters (~1 kB each)
        memory.hold(f"master-{i}", APISERVER, frozenset({(SHARED, "ab" * 32)}), "rolled back: " + "x" * 1000)
    assert len(memory.to_json()) > MAX_HELD_VALUE  # more than etcd can carry: the newest entries that fit go
    async with two(etcd) as (ga, gb):
        first = Leadership("r1", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=2)
        first.elector, first.digest, first.held = Elector(ga, "r1", ttl=5), "a" * 64, memory
        await wait_ready(first.elector)
        await first._agree(first.elector)
        assert await first.fenced()  # it published its memory
        await first.elector.resign()
        second = Leadership("r2", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=2)
        second.elector, second.digest, second.held = Elector(gb, "r2", ttl=5), "a" * 64, Held()
        await second.elector.step()
        assert second.elector.acting()
        errors = []
        for _ in range(3):  # what Leadership.run does each round
            try:
                await second._agree(second.elector)
            except Exception as exc:
                errors.append(str(exc)[-80:])
                second._checked = None
        assert await second.fenced(), f"the new leader's fence stays shut: {errors}"
        assert 300 < len(second.held) < 750 and second.held.why(
            "master-749", APISERVER, frozenset({(SHARED, "ab" * 32)})
        )  # the newest


async def test_a_held_memory_that_fits_the_answer_limit_reaches_the_next_leader(etcd: str) -> None:
    """Holds (control for the large-memory test above): ~350 kB of held entries are read whole by the next leader."""
    from reconciler.leader.elector import Elector
    from reconciler.leader.leadership import Leadership
    from reconciler.status.metrics import Metrics

    memory = Held()
    for i in range(300):
        memory.hold(f"master-{i}", APISERVER, frozenset({(SHARED, "ab" * 32)}), "rolled back: " + "x" * 1000)
    async with two(etcd) as (ga, gb):
        first = Leadership("r1", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=2)
        first.elector, first.digest, first.held = Elector(ga, "r1", ttl=5), "a" * 64, memory
        await wait_ready(first.elector)
        await first._agree(first.elector)
        await first.elector.resign()
        second = Leadership("r2", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=2)
        second.elector, second.digest, second.held = Elector(gb, "r2", ttl=5), "a" * 64, Held()
        await second.elector.step()
        await second._agree(second.elector)
        assert await second.fenced() and len(second.held) == 300
