"""Three replicas of the daemon, one per master as the shipped unit, with `--leader-election` on the cluster's own
etcd: exactly one leads and the others say who; the leader and a hand-run `apply` take turns on one restart lock
(never two etcd members down); a replica with stale specs that wins applies nothing; a leader cut off from etcd
stops acting before the next leader acts (the kernel's monotonic clock, shared by the hosts); when the leader's
host dies, another replica takes over and converges an edit the dead leader never saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.leader.restart_lock import RestartLock
from reconciler.spec.isolate import load_desired
from reconciler.transport.session import Session, ssh_connector
from testbed import Testbed, TestHost
from tests.support.cli import reconciler
from tests.support.daemon import wait_for
from tests.support.specs import BUNDLED as SPECS
from tests.support.specs import REPO
from tests.support.unit_file import UNIT, install_unit, uninstall_unit

pytestmark = pytest.mark.testbed


def status(host: TestHost) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{host.address}:9479/status", timeout=3) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except (OSError, ValueError):
        return None


def metrics(host: TestHost) -> str:
    with urllib.request.urlopen(f"http://{host.address}:9479/metrics", timeout=3) as resp:
        return str(resp.read().decode())


def leaders(hosts: list[TestHost]) -> list[str]:
    return [h.name for h in hosts if (s := status(h)) is not None and s["leader"].get("this_replica_leads")]


def one_leader(hosts: list[TestHost]) -> str:
    def one() -> str:
        found = leaders(hosts)
        return found[0] if len(found) == 1 else ""

    return str(wait_for("exactly one replica leading", one, timeout=120))


@pytest.fixture(scope="module")
def replicas(converged: Testbed) -> Iterator[Testbed]:
    for h in converged.hosts:
        install_unit(h, converged, f"--listen 0.0.0.0:9479 --resync 3 --leader-election --name {h.name}")
    for h in converged.hosts:
        h.ssh(f"systemctl start {UNIT}")
    try:
        yield converged
    finally:
        for h in converged.hosts:
            if not h.is_running:
                h.start()
            uninstall_unit(h)
        result = reconciler("apply", str(SPECS))
        assert result.code == 0, result.out + result.err


def test_one_replica_leads_and_the_others_say_which(replicas: Testbed) -> None:
    leader = one_leader(replicas.hosts)
    for h in replicas.hosts:
        doc = wait_for(
            f"{h.name} to see the leader", lambda h=h: (s := status(h)) and s["leader"]["leader"] == leader and s
        )
        assert doc["leader"]["this_replica_leads"] == (h.name == leader)
        line = f'reconciler_leader{{replica="{h.name}"}} {1.0 if h.name == leader else 0.0}'
        wait_for(f"{h.name}'s metric", lambda h=h, line=line: line in metrics(h), timeout=30)
    time.sleep(4)  # a few renewals later: still the same one, and only one
    assert leaders(replicas.hosts) == [leader]


STOPPING, STARTED = "de5b426a63be47a7b6ac3eaac82e2f6f", "39f53479d3a045ac8e11786248231fbf"  # systemd's message ids


def down_spans(hosts: list[TestHost], unit: str, since: float) -> list[tuple[str, float, float]]:
    """When `unit` was down on each host after `since`: from systemd's "Stopping" to its next "Started", in each
    host's journal on the kernel's monotonic clock (one clock for every host of the testbed, and for this test)."""
    spans = []
    for h in hosts:
        began = None
        for line in h.ssh(f"journalctl -o json --no-pager UNIT={unit}").stdout.splitlines():
            entry = json.loads(line)
            at = int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
            if at < since:
                continue
            if entry.get("MESSAGE_ID") == STOPPING:
                began = at
            elif entry.get("MESSAGE_ID") == STARTED and began is not None:
                spans.append((h.name, began, at))
                began = None
        if began is not None:
            spans.append((h.name, began, float("inf")))
    return spans


def events(host: TestHost, event: str) -> list[dict[str, Any]]:
    """The replica's JSON log lines of `event` from its journal, each with "_at": when the journal took it, on the
    kernel's monotonic clock."""
    out = []
    for line in host.ssh(f"journalctl -o json --output-fields=MESSAGE --no-pager -u {UNIT}").stdout.splitlines():
        try:
            entry = json.loads(line)
            doc = json.loads(entry["MESSAGE"])
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            doc["_at"] = int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
            out.append(doc)
    return out


def edit_specs(hosts: list[TestHost], name: str, old: str, new: str) -> None:
    for h in hosts:
        spec = h.root / "etc/reconciler/specs" / name
        text = spec.read_text()
        assert old in text
        spec.write_text(text.replace(old, new))


@contextlib.contextmanager
def holding_restart_lock(spec_dir: Path, unit: str) -> Iterator[None]:
    """This test as a third actor holding `unit`'s cluster-wide restart lock (through curl on the members)."""
    taken, release = threading.Event(), threading.Event()

    async def hold() -> None:
        session = Session(ssh_connector())
        try:
            api = EtcdOnHosts(session, etcd_members(load_desired(spec_dir)))
            async with RestartLock(api, "the test").turn(unit, "no host", wait=30):
                taken.set()
                await asyncio.to_thread(release.wait)
        finally:
            await session.close()

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    try:
        assert taken.wait(30), "the test could not take the restart lock"
        yield
    finally:
        release.set()
        thread.join(30)


def test_the_leader_and_a_hand_run_apply_share_one_restart_lock(replicas: Testbed, spec_copy: Path) -> None:
    leader = replicas.host(one_leader(replicas.hosts))
    last = replicas.hosts[-1]
    since = time.monotonic()
    edit = ("    ETCD_ELECTION_TIMEOUT: 1000\n", "    ETCD_ELECTION_TIMEOUT: 1000\n    ETCD_MAX_SNAPSHOTS: 6\n")
    (spec_copy / "etcd.yaml").write_text((spec_copy / "etcd.yaml").read_text().replace(*edit))
    err = spec_copy.parent / "apply.err"
    with holding_restart_lock(spec_copy, "etcd.service"):
        edit_specs(replicas.hosts, "etcd.yaml", *edit)  # the leader starts its rollout of the change
        with err.open("w") as stderr:
            apply = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "apply", str(spec_copy), "--host", last.name],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=REPO,
            )
        try:  # both wait for the lock the test holds: neither restarts a member meanwhile
            wait_for(
                "the hand-run apply to wait for the lock",
                lambda: "the test (restarting etcd.service" in err.read_text(),
                60,
            )
            wait_for(
                "the leader to wait for the lock",
                lambda: any("the test" in e.get("held_by", "") for e in events(leader, "waiting for the restart lock")),
                60,
            )
            assert not down_spans(replicas.hosts, "etcd.service", since)
        except BaseException:
            apply.kill()
            raise
    out, _ = apply.communicate(timeout=300)
    assert apply.returncode == 0, out + err.read_text()
    wait_for(
        "the leader to roll the change out to every member, and each member up again",
        lambda: (
            all(b"ETCD_MAX_SNAPSHOTS=6" in (h.root / "etc/etcd/etcd.conf").read_bytes() for h in replicas.hosts)
            and len(spans := down_spans(replicas.hosts, "etcd.service", since)) >= len(replicas.hosts)
            and all(up < float("inf") for _, _, up in spans)
        ),
        timeout=300,
    )
    wait_for(
        "the leader to see every host converged",
        lambda: (s := status(leader)) and all(s["hosts"][h.name]["status"] == "converged" for h in replicas.hosts),
        timeout=120,
    )
    spans = sorted(down_spans(replicas.hosts, "etcd.service", since), key=lambda s: s[1])
    assert sorted(h for h, _, _ in spans) == sorted(h.name for h in replicas.hosts)  # each member restarted once
    for (a, _, a_up), (b, b_down, _) in zip(spans, spans[1:]):
        assert a_up <= b_down, f"{a} and {b} were down at once: {spans}"
    print(f"etcd members down one at a time: {[(h, round(u - d, 2)) for h, d, u in spans]}")


def test_a_replica_with_stale_specs_that_wins_never_applies_them(replicas: Testbed) -> None:
    leader = one_leader(replicas.hosts)
    stale = next(h for h in replicas.hosts if h.name != leader)
    others = [h for h in replicas.hosts if h is not stale]
    flags = ('"--leader-elect=true --address=127.0.0.1"', '"--leader-elect=true --address=127.0.0.1 --v=9"')
    edit_specs([stale], "kubernetes.yaml", *flags)  # only this replica's copy: the cluster agreed on the others
    wait_for(
        f"{stale.name} to report its specs differ",
        lambda: (s := status(stale)) and not s["leader"]["specs_agree"],
        timeout=30,
    )
    for h in others:  # the stale replica is left alone: it wins
        h.ssh(f"systemctl stop {UNIT}")
    try:
        doc = wait_for(
            f"{stale.name} to lead, refuse its specs and end a pass on every host",
            lambda: (
                (s := status(stale))
                and s["leader"]["this_replica_leads"]
                and s["leader"]["conflict"]
                and all(r["status"] == "pending" and "applies nothing" in r["error"] for r in s["hosts"].values())
                and s
            ),
            timeout=90,
        )
        assert "differ from the ones the cluster agreed on" in doc["leader"]["conflict"]
        assert f'reconciler_specs_agree{{replica="{stale.name}"}} 0.0' in metrics(stale)
        assert not any(b"--v=9" in (h.root / "etc/kubernetes/scheduler").read_bytes() for h in replicas.hosts)
    finally:
        edit_specs([stale], "kubernetes.yaml", flags[1], flags[0])
        for h in others:
            h.ssh(f"systemctl start {UNIT}")
    wait_for(f"{stale.name} to agree again", lambda: (s := status(stale)) and s["leader"]["specs_agree"], 30)


def acts_in_turn(hosts: list[TestHost], since: float) -> list[tuple[str, float, float]]:
    """Every replica's actions after `since` in the order they began, each (replica, began, ended); asserts that
    no action of one replica overlaps an action of another (whoever led, however often leadership moved)."""
    acts = [(h.name, e["began"], e["ended"]) for h in hosts for e in events(h, "applied") if e["began"] > since]
    acts.sort(key=lambda a: a[1])
    for (who, _, ended), (next_who, began, _) in zip(acts, acts[1:]):
        assert who == next_who or ended < began, f"{who} acted until {ended}, {next_who} from {began}"
    return acts


def cut_off_the_leader(replicas: Testbed) -> tuple[str, str, float, list[tuple[str, float, float]]] | None:
    """Cut the leader's host off the network for 35 s while a drift needs repairing every half second: (the old
    leader, the next, the moment of the cut, every action since the drift began), or None when the old leader's
    journal says it stopped leading before the cut (a loaded testbed can miss a renewal deadline): then there was
    no handover by the cut to look at."""
    old = replicas.host(one_leader(replicas.hosts))
    others = [h for h in replicas.hosts if h is not old]
    since = time.monotonic()
    drift = "while :; do chmod 0640 /etc/kubernetes/token.csv; sleep 0.5; done"  # repaired by whoever leads
    for h in replicas.hosts:
        h.ssh(f"systemd-run --unit drift --collect sh -c '{drift}'")
    try:
        wait_for(
            f"{old.name} to repair the drift",
            lambda: [e for e in events(old, "applied") if e["began"] > since],
            timeout=30,
        )
        if leaders(replicas.hosts) != [old.name]:
            return None
        old.ssh("systemd-run --unit cut --collect sh -c 'ip link set host0 down; sleep 35; ip link set host0 up'")
        cut = time.monotonic()
        new = one_leader(others)
        wait_for(
            f"{new} to repair the drift",
            lambda: [e for e in events(replicas.host(new), "applied") if e["began"] > cut],
            timeout=60,
        )
        wait_for(f"{old.name} back on the network", lambda: status(old) is not None, timeout=90)
    finally:
        for h in replicas.hosts:
            if status(h) is not None:
                h.ssh("systemctl stop drift", check=False)
    acts = acts_in_turn(replicas.hosts, since)
    lost = [e["_at"] for e in events(old, "leadership lost") + events(old, "leader") if since < e["_at"] < cut]
    if lost:  # its renewals missed their deadline before the cut: not the handover this test is about
        print(f"{old.name} stopped leading on its own before the cut ({lost}); once more")
        wait_for(f"{old.name} to follow {new}", lambda: (s := status(old)) and s["leader"]["leader"] == new, 60)
        return None
    return old.name, new, cut, acts


def test_a_leader_cut_off_from_etcd_acts_no_more_before_the_next_leader_acts(replicas: Testbed) -> None:
    for _ in range(3):
        if (handover := cut_off_the_leader(replicas)) is not None:
            break
    else:
        pytest.fail("leadership moved on its own before each of three cuts: no handover by a cut to look at")
    old, new, cut, acts = handover
    last_old = max(ended for who, _, ended in acts if who == old)
    first_new = min(began for who, began, _ in acts if who == new)
    assert last_old < first_new, f"{old} acted until {last_old}, {new} from {first_new}"
    assert first_new > cut  # the next leader acted only once the old one was cut off
    assert last_old - cut < 10.5  # within the renew deadline of the cut (or the last action before it)
    print(
        f"cut at {cut:.2f}; {old}'s last action ended {last_old - cut:+.2f} s from it, {new}'s first began {first_new - cut:+.2f} s"
    )
    wait_for(f"{old} to follow {new}", lambda: (s := status(replicas.host(old))) and s["leader"]["leader"] == new, 60)


def test_when_the_leaders_host_dies_another_replica_leads_and_converges_a_pending_edit(replicas: Testbed) -> None:
    old = replicas.host(one_leader(replicas.hosts))
    others = [h for h in replicas.hosts if h is not old]
    old.stop()  # the whole host: its replica, its etcd member (two of three keep quorum)
    killed = time.monotonic()
    path = "/etc/kubernetes/scheduler"
    for h in others:  # an edit only the survivors' specs carry (the dead leader never saw it)
        spec = h.root / "etc/reconciler/specs/kubernetes.yaml"
        spec.write_text(
            spec.read_text().replace(
                '"--leader-elect=true --address=127.0.0.1"', '"--leader-elect=true --address=127.0.0.1 --v=2"'
            )
        )
    new = one_leader(others)
    took = time.monotonic() - killed
    assert new != old.name
    wait_for(
        "the new leader to converge the edit on the hosts that are up",
        lambda: all(b"--v=2" in (h.root / path.lstrip("/")).read_bytes() for h in others),
        timeout=120,
    )
    follower = next(h for h in others if h.name != new)
    doc = wait_for(  # the follower reads the agreed digest on its next renewal: agreement comes a moment later
        f"{follower.name} to see {new} lead with the specs it holds too",
        lambda: (s := status(follower)) and s["leader"]["leader"] == new and s["leader"]["specs_agree"] and s["leader"],
        timeout=30,
    )
    assert not doc["this_replica_leads"] and doc["transitions"] >= 1
    print(f"leader {old.name} killed; {new} led after {took:.1f} s")
