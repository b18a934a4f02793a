"""leader.leadership: the daemon's election is built from its settings, and digests this replica's specs per load."""

from __future__ import annotations

from pathlib import Path

from reconciler.engine.held import Held
from reconciler.leader.leadership import Leadership
from reconciler.settings import DaemonSettings
from reconciler.spec.load import spec_digest
from reconciler.status.metrics import Metrics


def test_the_election_is_there_only_when_asked_for_with_the_settings_and_the_held_rollbacks(tmp_path: Path) -> None:
    held = Held()
    assert Leadership.of(DaemonSettings(state_dir=tmp_path), Metrics(), held) is None
    settings = DaemonSettings(
        state_dir=tmp_path, leader_election=True, name="r1", leader_ttl=20, renew_deadline=8, leader_retry=3
    )
    leadership = Leadership.of(settings, Metrics(), held)
    assert leadership is not None and leadership.held is held and leadership.name == "r1"
    assert (leadership.ttl, leadership.renew_deadline, leadership.retry, leadership.accept_specs) == (20, 8, 3, False)


async def test_a_good_load_sets_this_replica_s_digest_and_a_vanished_directory_none(specs: Path) -> None:
    leadership = Leadership("r1", Metrics(), ttl=5, renew_deadline=4, retry=2)
    await leadership.specs_loaded(specs)  # no elector yet: nothing to check with etcd
    assert leadership.digest == spec_digest(specs) and len(leadership.digest) == 64
    await leadership.specs_loaded(specs / "gone")
    assert leadership.digest == ""
