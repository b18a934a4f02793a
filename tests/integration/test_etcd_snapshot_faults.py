"""A snapshot's faults on the testbed, made while the bytes stream (a database of ~6 MB: many pieces): the stream cut
on the member's host (its `cat` killed), the SSH connection lost (the session's sshd killed), the member restarted.
A copy cut short never counts: nothing of it is left, the next member gives a whole one, and etcd's own tool reads
it. A member restarted after its snapshot was saved still gives a whole one (what streams is the saved file)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.backup import store, take
from reconciler.spec.isolate import load_desired
from reconciler.transport.session import Session, ssh_connector
from testbed import Testbed
from tests.support.daemon import wait_for
from tests.support.specs import BUNDLED as SPECS
from tests.support.tuning import etcdctl, pad

pytestmark = pytest.mark.testbed

ETCDUTL = Path("/var/cache/reconciler/etcd/v3.5/bin/etcdutl")
STREAMING = "cat -- /var/tmp/reconciler-etcd-snapshot"


def streaming_cat() -> int:
    """The pid of the `cat` sending a snapshot (the hosts' processes are this machine's too)."""
    found = subprocess.run(["pgrep", "-f", "-o", STREAMING], capture_output=True, text=True).stdout.split()
    assert found, "no snapshot is streaming"
    return int(found[0])


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def padded(converged: Testbed) -> Iterator[Testbed]:
    pad(converged, "/snapshot-faults/", 60)
    yield converged
    assert etcdctl(converged, "del", "--prefix", "/snapshot-faults/").returncode == 0


def fault_on_first_piece(monkeypatch: pytest.MonkeyPatch, fault: Callable[[], None]) -> list[str]:
    """`fault` made once, when the first piece of the first member's snapshot arrives; the members asked, in order."""
    asked: list[str] = []
    made: list[bool] = []
    original_from = take._from

    async def recording_from(session, member, *rest):  # type: ignore[no-untyped-def]
        asked.append(member.host.name)
        return await original_from(session, member, *rest)

    class FaultyTrailer(take.Trailer):
        def feed(self, chunk: bytes) -> None:
            if not made:
                made.append(True)
                fault()
            super().feed(chunk)

    monkeypatch.setattr(take, "_from", recording_from)
    monkeypatch.setattr(take, "Trailer", FaultyTrailer)
    return asked


async def snapshot(where: Path) -> store.Kept:
    session = Session(ssh_connector())
    try:
        return await take.take(session, load_desired(SPECS), where)
    finally:
        await session.close()


def whole(kept: store.Kept) -> None:
    said = subprocess.run(
        [str(ETCDUTL), "snapshot", "status", "-w", "json", kept.path], capture_output=True, text=True, timeout=60
    )
    assert said.returncode == 0 and f'"revision":{kept.revision}' in said.stdout, said.stdout + said.stderr
    assert kept.size > 5_000_000
    left = [p.name for p in Path(kept.path).parent.iterdir() if p.name.startswith(".")]
    assert left == [], left  # nothing of the copy cut short


@pytest.mark.parametrize("cut", ["stream", "connection"])
async def test_a_copy_cut_short_never_counts_and_the_next_member_gives_one(
    padded: Testbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    def fault() -> None:
        cat = streaming_cat()
        os.kill(cat if cut == "stream" else parent(parent(cat)), signal.SIGKILL)  # cat, or its session's sshd

    asked = fault_on_first_piece(monkeypatch, fault)
    kept = await snapshot(tmp_path)
    assert len(asked) == 2 and kept.member == asked[1] != asked[0], asked  # the first cut short, the next whole
    assert store.listed(tmp_path) == [kept]
    whole(kept)


async def test_a_member_restarted_while_its_snapshot_streams_still_gives_a_whole_one(
    padded: Testbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = {h.name: h for h in padded.hosts}
    asked = fault_on_first_piece(monkeypatch, lambda: hosts[asked[0]].ssh("systemctl restart etcd"))
    kept = await snapshot(tmp_path)
    assert asked == [kept.member]
    whole(kept)
    restarted = hosts[kept.member]
    wait_for(
        "the restarted member to serve again",
        lambda: etcdctl(padded, "endpoint", "health", endpoints=[restarted]).returncode == 0,
    )
