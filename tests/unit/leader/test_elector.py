"""Leader election against a real etcd (3.4, Debian's, on loopback in a temporary directory): one leader, the
fencing token, a leader that stops renewing stops acting before its lease can expire elsewhere, and no leader
without etcd."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from reconciler.leader.elector import KEY, Elector
from reconciler.leader.from_here import EtcdGateway
from tests.support.etcd import Clock, etcdctl, free_port, two, wait_ready

pytestmark = pytest.mark.host


async def test_one_leader_and_its_fencing_token(etcd: str) -> None:
    async with two(etcd) as gateways:
        await _one_leader(gateways)


async def _one_leader(gateways: tuple[EtcdGateway, EtcdGateway]) -> None:
    a, b = Elector(gateways[0], "master-1", ttl=5), Elector(gateways[1], "master-2", ttl=5)
    await wait_ready(a)
    await b.step()
    assert a.acting() and a.state.ours and a.state.leader == "master-1" and a.state.token > 0
    assert not b.acting() and b.state.leader == "master-1" and not b.state.ours
    assert await a.fenced() and not await b.fenced()
    assert a.renew_deadline == pytest.approx(min(10.0, 5 * 2 / 3))  # sized from the TTL etcd granted
    await a.step()  # a renewal keeps it
    await b.step()
    assert a.acting() and not b.acting()


async def test_a_leader_that_cannot_renew_stops_acting_before_its_lease_can_expire(etcd: str) -> None:
    async with two(etcd) as gateways:
        await _stops_acting(gateways)


async def _stops_acting(gateways: tuple[EtcdGateway, EtcdGateway]) -> None:
    clock = Clock()
    a = Elector(gateways[0], "master-1", ttl=3, clock=clock)
    b = Elector(gateways[1], "master-2", ttl=3)
    await wait_ready(a)
    assert a.acting() and a.renew_deadline == pytest.approx(2.0)  # 2/3 of the 3 s lease
    clock.now += a.renew_deadline  # no renewal for the whole deadline: it stops acting by itself ...
    assert not a.acting() and not await a.fenced()
    await b.step()
    assert b.state.leader == "master-1" and not b.acting()  # ... while its lease still holds the key
    deadline = time.monotonic() + 10
    while not b.acting() and time.monotonic() < deadline:  # the lease expires: the other replica takes over
        time.sleep(0.2)
        await b.step()
    assert b.acting() and b.state.leader == "master-2" and b.state.transitions == 1
    await a.step()  # the old leader finds its lease gone and follows
    assert not a.acting() and a.state.leader == "master-2" and b.state.token > 0


async def test_fencing_refuses_a_leader_whose_key_was_taken_over(etcd: str) -> None:
    async with two(etcd) as gateways:
        await _fenced_out(gateways)


async def _fenced_out(gateways: tuple[EtcdGateway, EtcdGateway]) -> None:
    a, b = Elector(gateways[0], "master-1", ttl=5), Elector(gateways[1], "master-2", ttl=5)
    await wait_ready(a)
    await gateways[0].revoke(a._lease)  # its lease gone (as after a long pause): the key went with it
    await b.step()
    assert b.acting()
    assert a.acting()  # a has not looked yet: within its deadline it believes it leads ...
    assert not await a.fenced()  # ... but every action is fenced: the key is no longer ours
    await a.step()
    assert not a.acting() and a.state.leader == "master-2"


async def test_no_etcd_no_leader() -> None:
    gateway = EtcdGateway([f"http://127.0.0.1:{free_port()}"], timeout=0.5)
    e = Elector(gateway, "master-1")
    await e.step()
    assert not e.acting() and not await e.fenced()
    assert e.state.error.startswith("etcd unavailable") and e.state.leader == ""
    await gateway.close()


def test_the_key_is_the_documented_one() -> None:
    assert KEY == "/reconciler/leader"


async def test_a_new_leader_with_other_specs_applies_nothing_until_they_agree(etcd: str) -> None:
    from reconciler.leader.leadership import Leadership
    from reconciler.status.metrics import Metrics

    async with two(etcd) as (ga, gb):
        first = Leadership("master-1", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=3)
        first.elector, first.digest = Elector(ga, "master-1", ttl=5), "a" * 64
        await wait_ready(first.elector)
        await first._agree(first.elector)
        assert first.agreed is not None and first.agreed["digest"] == "a" * 64 and not first.conflict
        assert await first.fenced()
        first.digest = "c" * 64  # the operator changed the specs on every master: the leader publishes them
        await first._agree(first.elector)
        assert first.agreed["digest"] == "c" * 64 and not first.conflict

        stale = Leadership("master-2", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=3)
        stale.elector, stale.digest = Elector(gb, "master-2", ttl=5), "b" * 64  # an old copy of the specs
        await stale.elector.step()
        await stale._agree(stale.elector)
        assert not stale.elector.acting() and not stale.conflict  # a follower: it only reports the difference
        assert not stale.status()["specs_agree"]
        await first.elector.resign()  # the leader goes away: the stale replica wins the key ...
        await stale.elector.step()
        await stale._agree(stale.elector)
        assert stale.elector.acting() and "differ from the ones the cluster agreed on" in stale.conflict
        assert not await stale.fenced()  # ... and applies nothing
        assert stale.agreed is not None and stale.agreed["digest"] == "c" * 64  # nor published its own

        third = Leadership("master-3", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=3)
        third.elector, third.digest = Elector(EtcdGateway([etcd]), "master-3", ttl=5), "b" * 64
        await third.elector.step()
        await third._agree(third.elector)  # a second replica holds the same new specs: two of three agree
        await stale._agree(stale.elector)
        assert not stale.conflict and await stale.fenced() and stale.agreed["digest"] == "b" * 64
        await third.elector.gateway.close()


async def test_the_operators_override_makes_a_leaders_specs_the_agreed_ones(etcd: str) -> None:
    from reconciler.leader.leadership import SPECS_KEY, Leadership
    from reconciler.status.metrics import Metrics

    async with two(etcd) as (ga, _):
        await ga.put(SPECS_KEY, '{"digest": "' + "a" * 64 + '", "by": "master-9", "at": 0}')
        alone = Leadership("master-2", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=3)
        alone.elector, alone.digest = Elector(ga, "master-2", ttl=5), "b" * 64
        await wait_ready(alone.elector)
        await alone._agree(alone.elector)
        assert "differ from the ones the cluster agreed on" in alone.conflict and not await alone.fenced()
        alone.accept_specs = True  # `run --accept-specs`
        await alone._agree(alone.elector)
        assert not alone.conflict and await alone.fenced() and alone.agreed is not None
        assert alone.agreed["digest"] == "b" * 64 and alone.agreed["by"] == "master-2"


async def test_a_deposed_leader_cannot_publish_specs(etcd: str) -> None:
    async with two(etcd) as (ga, gb):
        a = Elector(ga, "master-1", ttl=5)
        await wait_ready(a)
        token = a.state.token
        assert await ga.put_while("/reconciler/specs", "mine", KEY, token)
        await a.resign()  # the key goes: a write fenced by its revision is refused now
        b = Elector(gb, "master-2", ttl=5)
        await b.step()
        assert b.state.ours and b.state.token != token
        assert not await ga.put_while("/reconciler/specs", "stale", KEY, token)
        held = await gb.holder("/reconciler/specs")
        assert held is not None and held.value == "mine"


async def test_a_follower_looks_again_as_soon_as_the_leaders_lease_can_be_gone(etcd: str) -> None:
    clock = Clock()
    async with two(etcd) as (ga, gb):
        a = Elector(ga, "master-1", ttl=6)
        await wait_ready(a)
        b = Elector(gb, "master-2", ttl=6, retry=2.0, clock=clock)
        await b.step()
        left = await gb.time_to_live((await gb.holder(KEY)).lease)  # type: ignore[union-attr]
        assert not b.state.ours and 3 <= left <= 6
        assert b.next_step() == 2.0  # the leader's lease has seconds to go: the usual retry
        expires = b._holder_expires
        assert expires is not None and expires - clock.now >= 3
        clock.now = expires - 1
        assert b.next_step() == pytest.approx(1.25)  # not a whole retry past the moment it can be gone
        clock.now += 5
        assert b.next_step() == 0.25  # past it: a look every 0.25 s until etcd has revoked it
        await a.step()
        assert a.next_step() == a.retry  # a leader renews every retry


async def test_a_leader_whose_key_was_deleted_steps_down_at_its_next_renewal(etcd: str) -> None:
    async with two(etcd) as (ga, gb):
        a, b = Elector(ga, "master-1", ttl=5), Elector(gb, "master-2", ttl=5)
        await wait_ready(a)
        token = a.state.token
        etcdctl(etcd, "del", KEY)  # an operator "frees" the key by hand; the leader's lease lives on
        await b.step()  # the other replica finds the key free and takes it
        assert b.acting() and b.state.ours and b.state.token > token
        await a.step()  # one renewal: the key is not its own any more
        assert not a.acting() and not a.state.ours and a.state.leader == "master-2" and a.state.token == 0
        assert not await a.fenced() and await b.fenced()
        await a.step()
        assert not a.acting() and b.acting()  # and stays a follower


async def test_a_leader_whose_key_was_deleted_and_left_free_takes_it_again_under_a_new_token(etcd: str) -> None:
    async with two(etcd) as (ga, _):
        a = Elector(ga, "master-1", ttl=5)
        await wait_ready(a)
        token = a.state.token
        etcdctl(etcd, "del", KEY)
        await a.step()  # the renewal sees the key gone: it steps down ...
        assert not a.acting() and a.state.token == 0 and "deleted" in a.state.error
        await a.step()  # ... and campaigns again as anyone would: a new holding, a new fencing token
        assert a.acting() and a.state.token > token and await a.fenced()


async def test_a_leader_whose_key_was_overwritten_steps_down(etcd: str) -> None:
    async with two(etcd) as (ga, _):
        a = Elector(ga, "master-1", ttl=5)
        await wait_ready(a)
        etcdctl(etcd, "put", KEY, "master-9")  # same key, same create revision, another value and no lease
        await a.step()
        assert not a.acting() and not a.state.ours and a.state.leader == "master-9"


async def test_what_a_leader_rolled_back_is_held_by_the_next_leader_before_it_acts(etcd: str, tmp_path: Path) -> None:
    """Issue 26: the memory of rollbacks lived in the leader's process; a new leader tried the same bad config
    once more. The leader publishes it (fenced on its key) and the next one merges it before its fence opens."""
    from reconciler.engine.held import Held
    from reconciler.leader.leadership import HELD_KEY, Leadership
    from reconciler.status.metrics import Metrics

    tried = frozenset({("/etc/etcd/etcd.conf", "a" * 64)})
    async with two(etcd) as (ga, gb):
        first = Leadership("master-1", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=3)
        first.elector, first.digest, first.held = Elector(ga, "master-1", ttl=5), "a" * 64, Held()
        await wait_ready(first.elector)
        await first._agree(first.elector)
        assert await first.fenced()
        first.held.hold("master-2", "etcd.service", tried, "rolled back: bad data dir")
        await first._agree(first.elector)  # a renewal round: the changed memory is published
        assert (await ga.holder(HELD_KEY)) is not None

        second = Leadership("master-2", Metrics(), ttl=5, renew_deadline=10, retry=2, replicas=3)
        second.elector, second.digest = Elector(gb, "master-2", ttl=5), "a" * 64
        second.held = Held(tmp_path / "held.json")  # its own state dir knows nothing of it
        await first.elector.resign()
        await wait_ready(second.elector)
        await second._agree(second.elector)
        assert await second.fenced()
        assert second.held.why("master-2", "etcd.service", tried) == "rolled back: bad data dir"
        assert Held(tmp_path / "held.json").why("master-2", "etcd.service", tried)  # and kept in its state dir

        etcdctl_put = subprocess.run(  # a value no leader wrote: the new leader's own memory stays, no traceback
            ["etcdctl", f"--endpoints={etcd}", "put", HELD_KEY, '{"version": 1, "held": "x"}'],
            capture_output=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
        assert etcdctl_put.returncode == 0, etcdctl_put.stderr
        second._held_taken = 0  # as at a new leadership
        await second._agree(second.elector)
        assert await second.fenced() and second.held.why("master-2", "etcd.service", tried)
