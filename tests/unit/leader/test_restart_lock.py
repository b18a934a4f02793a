"""The cluster-wide restart lock against a real etcd (3.4 on loopback): two actors never hold a unit's lock at
once, a waiter gets it when the holder's turn ends and names the holder while it waits, a bounded wait ends
with the holder named, a turn whose lease cannot be renewed says so before the lease can expire, a dead
holder's lock frees with its lease, and etcd unreachable is a clear refusal pointing at --break-glass. The
turn's fence (`await held()`) confirms with etcd: a key deleted or taken behind its back is a no at the next ask,
etcd not answering is a no for that ask, and the local deadline is on CLOCK_BOOTTIME (a suspend counts).
Also the curl transport's parsing (`leader.on_host`) on answers a hostile host could give."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from reconciler.leader.from_here import EtcdGateway
from reconciler.leader.gateway import EtcdApi, EtcdUnavailable
from reconciler.leader.on_host import _split, client_url
from reconciler.leader.restart_lock import PREFIX, LockNotTaken, RestartLock, describe
from reconciler.spec.desired import DesiredCheck
from tests.support.etcd import Clock, etcdctl, two

pytestmark = pytest.mark.host


async def _ready(api: EtcdApi) -> None:
    deadline = time.monotonic() + 10
    while True:  # etcd elects itself a moment after it listens
        try:
            await api.holder("/ready")
            return
        except EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_two_actors_take_turns_and_the_waiter_names_the_holder(etcd: str) -> None:
    async with two(etcd) as (a, b):
        await _ready(a)
        first, second = RestartLock(a, "daemon on master-1", retry=0.2), RestartLock(b, "apply by ops", retry=0.2)
        spans: list[tuple[str, float, float]] = []

        async def turn(lock: RestartLock, host: str, hold: float) -> None:
            async with lock.turn("etcd.service", host, wait=30) as held:
                began = time.monotonic()
                assert await held()
                await asyncio.sleep(hold)
                assert await held()  # kept alive through the turn (longer than a renewal period)
                spans.append((host, began, time.monotonic()))

        one = asyncio.create_task(turn(first, "master-1", 1.0))
        await asyncio.sleep(0.2)
        holder = await b.holder(PREFIX + "etcd.service")
        assert (
            holder is not None and describe(holder.value) == "daemon on master-1 (restarting etcd.service on master-1)"
        )
        await asyncio.gather(one, turn(second, "master-3", 0.1))
        (h1, b1, e1), (h2, b2, e2) = spans
        assert (h1, h2) == ("master-1", "master-3") and e1 <= b2  # never both
        assert await a.holder(PREFIX + "etcd.service") is None  # given up at the end of the turn


async def test_a_bounded_wait_ends_naming_the_holder(etcd: str) -> None:
    async with two(etcd) as (a, b):
        await _ready(a)
        async with RestartLock(a, "daemon on master-1").turn("etcd.service", "master-1", wait=30):
            with pytest.raises(LockNotTaken) as caught:
                async with RestartLock(b, "apply by ops", retry=0.1).turn("etcd.service", "master-2", wait=0.5):
                    raise AssertionError("taken while held")
        assert "master-2: etcd.service not restarted" in str(caught.value)
        assert "held by daemon on master-1 (restarting etcd.service on master-1)" in str(caught.value)
        # another unit's lock is another key: not blocked by this one
        async with RestartLock(b, "apply by ops").turn("kube-apiserver.service", "master-2", wait=0.5) as held:
            assert await held()


async def test_a_turn_that_cannot_renew_says_so_before_its_lease_could_expire(etcd: str) -> None:
    clock = Clock()
    async with two(etcd) as (a, _):
        await _ready(a)
        lock = RestartLock(a, "daemon", ttl=6, retry=60, clock=clock)  # no renewal comes within the test
        async with lock.turn("etcd.service", "master-1", wait=5) as held:
            assert await held()
            clock.now += 3.9  # 2/3 of the granted 6 s is 4 s
            assert await held()
            clock.now += 0.2
            assert not await held()


async def test_a_dead_holders_lock_frees_with_its_lease(etcd: str) -> None:
    async with two(etcd) as (a, b):
        await _ready(a)
        lease = await a.grant(2)  # etcd 3.4 may grant more than asked: the minimum TTL
        assert (await a.campaign(PREFIX + "etcd.service", json.dumps({"actor": "gone"}), lease.id)).lease == lease.id
        began = time.monotonic()
        async with RestartLock(b, "apply by ops", retry=0.2).turn("etcd.service", "master-2", wait=60) as held:
            assert await held() and time.monotonic() - began >= 1.0


async def test_etcd_unreachable_is_a_refusal_that_points_at_break_glass() -> None:
    gateway = EtcdGateway(["http://127.0.0.1:9"], timeout=0.5)
    try:
        with pytest.raises(LockNotTaken) as caught:
            async with RestartLock(gateway, "apply").turn("etcd.service", "master-1", wait=1):
                raise AssertionError("taken without etcd")
    finally:
        await gateway.close()
    assert "etcd did not answer" in str(caught.value) and "--break-glass" in str(caught.value)


class Scripted(EtcdApi):
    """An etcd whose answers the test chooses: the grant and the put succeed; keepalives answer `ttl` until
    `failing` is set (then nothing answers but a revoke; with `failing` = "keepalive", only keepalives go
    unanswered); the key's holder is `kv` (the put's, once put)."""

    endpoints = ["x"]

    def __init__(self, grant: dict[str, Any] | None = None) -> None:
        self.calls: list[str] = []
        self.failing: bool | str = False
        self.ttl = "3"
        self.grant_answer = grant or {"ID": "7", "TTL": "3"}
        self.kv: list[dict[str, Any]] = []

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(path)
        if path == "/v3/lease/grant":
            return self.grant_answer
        if path == "/v3/kv/txn":  # the put succeeds: the key is ours
            put = body["success"][0]["requestPut"]
            self.kv = [{"key": put["key"], "value": put["value"], "create_revision": "5", "lease": put["lease"]}]
            return {"succeeded": True, "header": {"revision": "5"}}
        if (self.failing is True and path != "/v3/lease/revoke") or self.failing == path.rpartition("/")[2]:
            raise EtcdUnavailable("no quorum")
        if path == "/v3/lease/keepalive":
            return {"result": {"TTL": self.ttl}}
        if path == "/v3/kv/range":
            return {"kvs": self.kv}
        return {}


async def wait_lost(held: Any) -> None:
    deadline = time.monotonic() + 5
    while await held() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_renewals_that_fail_end_the_turns_fence_and_the_lease_is_given_up_anyway() -> None:
    api = Scripted()
    async with RestartLock(api, "daemon", retry=0.1).turn("etcd.service", "master-1", wait=1) as held:
        assert await held()
        api.failing = "keepalive"  # the key still shows as ours: the fence ends on its local deadline
        began = time.monotonic()
        await wait_lost(held)
        assert not await held() and time.monotonic() - began >= 1.5  # 2 s (2/3 of 3) without a renewal
    assert api.calls.count("/v3/lease/keepalive") >= 3 and api.calls[-1] == "/v3/lease/revoke"


async def test_a_lease_that_expired_or_a_key_deleted_or_taken_over_ends_the_fence_at_once() -> None:
    for spoil in ("ttl", "deleted", "taken"):
        api = Scripted()
        async with RestartLock(api, "daemon", retry=0.05).turn("etcd.service", "master-1", wait=1) as held:
            assert await held()
            if spoil == "ttl":
                api.ttl = "0"
            elif spoil == "deleted":  # e.g. someone "freed a stuck lock" by hand while the lease lives
                api.kv = []
            else:
                api.kv = [{"key": "", "value": "", "create_revision": "9", "lease": "8"}]
            began = time.monotonic()
            await wait_lost(held)
            assert not await held() and time.monotonic() - began < 1, spoil  # within a renewal, not the 2 s deadline


async def ask(held: Any) -> bool:
    """The turn's fence, as the engine asks it."""
    return bool(await held())


async def test_the_fence_confirms_with_etcd_a_key_deleted_behind_its_back_is_no_at_once(etcd: str) -> None:
    async with two(etcd) as (a, _):
        await _ready(a)
        lock = RestartLock(a, "daemon", retry=60)  # no renewal (and no look by the keeper) within the test
        async with lock.turn("etcd.service", "master-1", wait=5) as held:
            assert await held()
            etcdctl(etcd, "del", PREFIX + "etcd.service")  # "freeing a stuck lock" by hand, lease still alive
            assert not await held()  # the next ask, not the next renewal
            assert not await held()


async def test_the_fence_confirms_with_etcd_a_key_another_actor_took_is_no(etcd: str) -> None:
    async with two(etcd) as (a, b):
        await _ready(a)
        async with RestartLock(a, "daemon", retry=60).turn("etcd.service", "master-1", wait=5) as held:
            etcdctl(etcd, "del", PREFIX + "etcd.service")
            async with RestartLock(b, "apply by ops", retry=60).turn("etcd.service", "master-2", wait=5) as theirs:
                assert await theirs() and not await held()


async def test_etcd_not_answering_the_confirm_is_no_for_that_ask() -> None:
    api = Scripted()
    async with RestartLock(api, "daemon", retry=60).turn("etcd.service", "master-1", wait=1) as held:
        assert await held()
        api.failing = True
        assert not await held()  # at once, not after the 2 s deadline
        api.failing = False
        assert await held()  # nothing was lost meanwhile: it was only not confirmed


async def test_the_turn_is_timed_on_boottime_which_counts_a_suspend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop suspended mid-turn: CLOCK_MONOTONIC stood still, CLOCK_BOOTTIME (and etcd's lease) went on."""
    asleep = 0.0
    real = time.clock_gettime

    def clock_gettime(clock: int) -> float:
        return real(clock) + (asleep if clock == time.CLOCK_BOOTTIME else 0.0)

    monkeypatch.setattr(time, "clock_gettime", clock_gettime)
    api = Scripted()  # the lease's TTL is 3 s: the fence holds for 2 s after a renewal
    async with RestartLock(api, "apply", retry=60).turn("etcd.service", "master-1", wait=1) as held:
        assert await ask(held)
        asleep = 10.0  # resumed after 10 s: the lease may have long expired in etcd
        assert not await ask(held)


@pytest.mark.parametrize(
    "grant", [{"ID": "0", "TTL": "15"}, {"ID": "7", "TTL": "0"}, {"ID": "x", "TTL": "15"}, {"TTL": "15"}]
)
async def test_a_grant_without_a_live_lease_takes_no_lock(grant: dict[str, Any]) -> None:
    with pytest.raises(LockNotTaken, match="etcd did not answer"):
        async with RestartLock(Scripted(grant), "daemon").turn("etcd.service", "master-1", wait=1):
            raise AssertionError("taken on no lease")


@pytest.mark.parametrize(
    ("answer", "ttl"), [({"result": None}, 0), ({"result": []}, None), ({"result": {"TTL": "x"}}, None), ({}, 0)]
)
async def test_a_keepalive_answer_of_another_shape_fails_closed(answer: dict[str, Any], ttl: int | None) -> None:
    """No live TTL in it: the lease counts as expired (0), or etcd as unavailable; never an error of another type."""

    class Odd(EtcdApi):
        endpoints = ["x"]

        async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            return answer

    if ttl is None:
        with pytest.raises(EtcdUnavailable):
            await Odd().keepalive(7)
    else:
        assert await Odd().keepalive(7) == ttl


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('{"actor": "a", "host": "h", "unit": "u"}', "a (restarting u on h)"),
        ("x" * 10_000, repr("x" * 80)),  # another program's value: bounded
        ('{"actor": 1}', repr('{"actor": 1}')),
        (json.dumps({"actor": "a" * 1000 + "\x1b[2J\n", "host": "h", "unit": "u"}), "a" * 80 + " (restarting u on h)"),
        (json.dumps({"actor": "\x1b[31mred\n", "host": "h", "unit": "u"}), "\\x1b[31mred\\n (restarting u on h)"),
        ("[" * 100_000, repr("[" * 80)),
        ("[]", repr("[]")),
    ],
)
def test_a_holders_description_is_bounded(value: str, shown: str) -> None:
    assert describe(value) == shown


@pytest.mark.parametrize(
    ("stdout", "parsed"),
    [
        (b'{"a":1}\n200', (200, b'{"a":1}')),
        (b'{"a":1}\n200\n', (200, b'{"a":1}')),
        (b"\n503", (503, b"")),
        (b"200", (0, b"")),  # no body line: not an answer
        (b'{"a":1}\n20x', (0, b"")),
        (b"", (0, b"")),
    ],
)
def test_curls_answer_and_status_are_split_strictly(stdout: bytes, parsed: tuple[int, bytes]) -> None:
    assert _split(stdout) == parsed


@pytest.mark.parametrize(
    ("url", "client"),
    [
        ("https://198.18.0.11:2379/health", "https://198.18.0.11:2379"),
        ("https://root:secret@198.18.0.11:2379/health", "https://198.18.0.11:2379"),  # no password travels on
        ("http://[::1]:2379/health", "http://[::1]:2379"),
    ],
)
def test_the_client_url_is_the_checks_scheme_and_address(url: str, client: str) -> None:
    assert client_url(DesiredCheck("etcd", 5, url=url)) == client


class LosesACancel(Scripted):
    """A keepalive whose answer comes at the same moment as the keeper's cancellation, which it then loses (as
    Python 3.11's wait_for does): the keeper would go on renewing."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/v3/lease/keepalive":
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                self.lost += 1  # swallowed: the answer is returned as if no cancellation came
        return await super()._post(path, body)


async def test_a_turn_ends_even_when_its_keeper_loses_the_cancellation_and_the_lease_is_given_up() -> None:
    """Seen on the testbed: a renewal held etcd's restart lock for minutes, waiting at its turn's end for a keeper
    that had lost its cancellation and went on renewing the lease, until a signal came."""
    api = LosesACancel()
    lock = RestartLock(api, "certs renew", retry=0.05)

    async def turn() -> float:
        async with lock.turn("etcd.service", "master-1", wait=1):
            deadline = time.monotonic() + 5
            while "/v3/lease/keepalive" not in api.calls and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.06)  # the keeper in a keepalive now
            return time.monotonic()

    began = await asyncio.wait_for(turn(), 10)  # before: the turn's end never came
    assert api.lost == 1 and time.monotonic() - began < 1.0
    assert api.calls[-1] == "/v3/lease/revoke"
    renewals = api.calls.count("/v3/lease/keepalive")
    await asyncio.sleep(0.3)
    assert api.calls.count("/v3/lease/keepalive") == renewals  # the keeper stopped


async def test_a_cancellation_of_the_turn_while_it_ends_is_raised_not_swallowed() -> None:
    api = LosesACancel()

    async def turn() -> None:
        async with RestartLock(api, "certs renew", retry=0.05).turn("etcd.service", "master-1", wait=1):
            await asyncio.sleep(0.08)

    task = asyncio.ensure_future(turn())
    while "/v3/lease/keepalive" not in api.calls:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.04)  # ending: waiting for the keeper
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert api.calls[-1] == "/v3/lease/revoke"  # given up all the same
