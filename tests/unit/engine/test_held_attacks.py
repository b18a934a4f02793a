"""engine.held, attacked (issue 26, items 1 and 10): a held path brings no action at all on its host, pass after
pass, whatever drifts, dies or changes beside it; the held memory carried to another replica and back (merge), a
hostile value under /reconciler/held, held.json in a symlinked or unwritable state dir, the fingerprint. In-process
hosts (reconciler.transport.fake).

Each test confirms something that held under attack. The attacks on the rest of issue 26's fixes are beside the modules they
exercise: test_rollback_attacks.py, test_break_glass_attacks.py, test_guard_attacks.py (engine), test_diff_enable.py
(plan), test_leadership_attacks.py, test_restart_lock_attacks.py, test_on_host_attacks.py (leader)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.engine.converge import reconcile_host
from reconciler.engine.held import Held, fingerprint
from reconciler.engine.rollouts import Rollouts
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.simhosts import converged_fleet, restarts
from tests.support.specs import copy_specs, replace_once

APISERVER = "kube-apiserver.service"
CM = "kube-controller-manager.service"
ETCD = "etcd.service"
SHARED = "/etc/kubernetes/config"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return copy_specs(tmp_path / "specs", ha=False)  # the HA front is not under attack here


def breaking(specs: Path, value: str) -> None:
    kube = specs / "kubernetes.yaml"
    kube.write_text(re.sub(r'KUBE_LOG_LEVEL="--v=\d+"', f'KUBE_LOG_LEVEL="--v={value}"', kube.read_text()))


def apiserver_fails_on(*values: str) -> Callable[[SimHost], bool]:
    return lambda host: any(f"--v={v}".encode() in host.files[SHARED].content for v in values)


async def rolled_back_on_master_1(specs: Path, rollouts: Rollouts) -> tuple[dict[str, SimHost], Session]:
    """A fleet converged, then /etc/kubernetes/config edited so that only kube-apiserver fails on master-1: rolled
    back and held there."""
    hosts = await converged_fleet(specs)
    session = Session(fake_connector(hosts))
    breaking(specs, "7")
    hosts["master-1"].fails[APISERVER] = apiserver_fails_on("7")
    rolled = await reconcile_host(
        load_desired(specs), "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True
    )
    assert rolled.status == "rolled-back", rolled.error
    return hosts, session


# ---------------------------------------------------------------------------------------------------------------
# Item 1: a held path brings no action at all on its host


async def test_a_held_file_that_a_rollout_unit_reads_restarts_that_unit_on_no_later_pass(specs: Path) -> None:
    replace_once(specs / "etcd.yaml", "  restartOn: [etcd-conf]\n", "  restartOn: [etcd-conf, kube-config]\n")
    rollouts = Rollouts()
    hosts, session = await rolled_back_on_master_1(specs, rollouts)
    changed, host = load_desired(specs), hosts["master-1"]
    before = restarts(host, ETCD)
    for _ in range(3):
        again = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01)
        assert again.status == "rolled-back" and "held" in again.error, again.error
    assert restarts(host, ETCD) == before, "an etcd member was restarted for a held file, pass after pass"


async def test_drift_on_another_file_of_the_failed_unit_does_not_unhold_the_bad_config(specs: Path) -> None:
    rollouts = Rollouts()
    hosts, session = await rolled_back_on_master_1(specs, rollouts)
    host, changed = hosts["master-1"], load_desired(specs)
    tries = 0
    bad = apiserver_fails_on("7")

    def counting(h: SimHost) -> bool:
        nonlocal tries
        tries += bad(h)
        return bad(h)

    host.fails[APISERVER] = counting
    host.hand_edit("/etc/kubernetes/apiserver", b"# someone's edit\n")  # drift; the specs did not change
    await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01)
    assert tries == 0, "the held config was tried again although the specs did not change"


async def test_a_rolled_back_unit_that_dies_later_is_started_again_on_its_previous_config(specs: Path) -> None:
    rollouts = Rollouts()
    hosts, session = await rolled_back_on_master_1(specs, rollouts)
    host, changed = hosts["master-1"], load_desired(specs)
    host.units[APISERVER].active = False  # OOM-killed a day later; its config on disk is the previous one
    for _ in range(3):
        await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01)
    assert b"--v=0" in host.files[SHARED].content  # held: the previous config stays
    assert host.units[APISERVER].active, "kube-apiserver left down by the held-back filter"


async def test_a_reader_of_a_held_file_still_restarts_for_its_own_new_config(specs: Path) -> None:
    rollouts = Rollouts()
    hosts, session = await rolled_back_on_master_1(specs, rollouts)
    host = hosts["master-1"]
    replace_once(specs / "kubernetes.yaml", '--leader-elect=true"', '--leader-elect=true --v=3"')
    changed = load_desired(specs)
    before = restarts(host, CM)
    for _ in range(2):
        await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True)
    assert b"--v=3" in host.files["/etc/kubernetes/controller-manager"].content
    assert restarts(host, CM) == before + 1, "kube-controller-manager never restarted onto its own new config"


async def test_a_held_unit_file_is_not_re_enabled_nor_reloaded_and_nothing_else_acts(specs: Path) -> None:
    """Holds: the unit file of the failed unit, held, with the unit disabled meanwhile: only the enable (by its
    old [Install], which says nothing new) may run; nothing is written, reloaded or restarted."""
    hosts = await converged_fleet(specs)
    host, session, rollouts = hosts["master-1"], Session(fake_connector(hosts)), Rollouts()
    unit_file = "/usr/lib/systemd/system/kube-apiserver.service"
    replace_once(specs / "kubernetes.yaml", "    Type=notify\n", "    Type=notify\n    Environment=BROKEN=1\n")
    host.fails[APISERVER] = lambda h: b"BROKEN=1" in h.files[unit_file].content
    changed = load_desired(specs)
    rolled = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True)
    assert rolled.status == "rolled-back", rolled.error
    changes, restarted = host.changes, list(host.restarted)
    for _ in range(3):
        again = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01)
        assert again.applied == (), again.applied
    assert host.changes == changes and host.restarted == restarted


# ---------------------------------------------------------------------------------------------------------------
# Item 10 (second half): held memory carried to the next leader


async def test_a_failover_back_to_a_replica_with_an_older_entry_does_not_try_the_newer_bad_config(specs: Path) -> None:
    b = Rollouts(Held())  # replica B leads first
    hosts, session = await rolled_back_on_master_1(specs, b)
    host = hosts["master-1"]
    a = Rollouts(Held())  # failover to A: it takes B's memory in (leadership._carry_held)
    a.held.merge(b.held.to_json(), "/reconciler/held")
    breaking(specs, "8")  # the operator's next try is bad too
    host.fails[APISERVER] = apiserver_fails_on("7", "8")
    newer = load_desired(specs)
    rolled = await reconcile_host(newer, "master-1", session, a, wait=0.2, interval=0.01, changed=True)
    assert rolled.status == "rolled-back", rolled.error
    b.held.merge(a.held.to_json(), "/reconciler/held")  # failover back to B, which kept its own state dir
    changes = host.changes
    again = await reconcile_host(newer, "master-1", session, b, wait=0.2, interval=0.01, changed=True)
    assert "held" in again.error and host.changes == changes, "the newer bad config was tried once more"


@pytest.mark.parametrize(
    "value",
    [
        '{"version": 1, "held": [{"host": "h", "unit": "u", "why": "w", "tried": [["a", "b", "c"]]}]}',
        '{"version": 1, "held": [{"host": "h", "unit": "u", "why": 3, "tried": []}]}',
        '{"version": 1, "stopped": [{"unit": "u", "why": "w", "config": [[1, 2, 3]]}]}',
        '{"version": 1, "held": [null]}',
        '{"version": 1, "held": {"a": 1}}',
        '{"version": true, "held": [], "stopped": []}',
        '{"version": 1, "held": [{"host": "h", "unit": "u", "why": "w", "tried": "ab"}]}',
        "[" * 100_000,
        '"' + "x" * 10 + '"',
        "\ud800",
        "1" * 5000,
        '{"version": 1, "held": [' + ",".join(['{"host":"h","unit":"u","why":"w","tried":[]}'] * 10001) + "]}",
    ],
)
def test_a_hostile_held_value_raises_only_what_leadership_catches(value: str) -> None:
    """Holds: whatever is under /reconciler/held, merge raises ValueError or RecursionError (logged), or takes a
    well-formed entry; never another exception that would abort the leader's round."""
    memory = Held()
    try:
        memory.merge(value, "/reconciler/held")
    except (ValueError, RecursionError):
        pass


def test_held_json_through_a_symlinked_or_unwritable_state_dir(tmp_path: Path) -> None:
    """Holds: a state dir that is a symlink works (the file is replaced, not written through), a held.json that is a
    symlink is replaced by a regular owner-only file, and an unwritable dir keeps the memory in the process."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    (real / "held.json").symlink_to(target)
    memory = Held(tmp_path / "link" / "held.json")
    tried = frozenset({(SHARED, "ab" * 32)})
    memory.hold("h", "u", tried, "why")
    assert target.read_text() == "{}"  # never written through the link
    assert (real / "held.json").is_file() and not (real / "held.json").is_symlink()
    assert (real / "held.json").stat().st_mode & 0o077 == 0
    assert Held(real / "held.json").why("h", "u", tried) == "why"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        stuck = Held(locked / "sub" / "held.json")
        stuck.hold("h", "u", tried, "why")
        assert stuck.why("h", "u", tried) == "why"
    finally:
        locked.chmod(0o700)


def test_fingerprint_is_of_the_specs_content() -> None:
    """Holds (sanity of the attack above): the fingerprint is (path, sha256 of the specs' content)."""
    from reconciler.spec.desired import DesiredFile, DesiredHost, Target

    host = DesiredHost(Target("h", "a"), files={"/x": DesiredFile("/x", b"1", 0o644, "root", "root", False, "F/x")})
    assert fingerprint(host, ["/x", "/nope"]) == frozenset(
        {("/x", "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b")}
    )
    assert json.loads(Held().to_json())["version"] == 1


async def test_a_daemon_reload_systemd_asks_for_another_unit_is_not_dropped_with_a_held_unit_file(specs: Path) -> None:
    hosts = await converged_fleet(specs)
    host, session, rollouts = hosts["master-1"], Session(fake_connector(hosts)), Rollouts()
    unit_file = "/usr/lib/systemd/system/kube-apiserver.service"
    replace_once(specs / "kubernetes.yaml", "    Type=notify\n", "    Type=notify\n    Environment=BROKEN=1\n")
    host.fails[APISERVER] = lambda h: b"BROKEN=1" in h.files[unit_file].content
    changed = load_desired(specs)
    rolled = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True)
    assert rolled.status == "rolled-back", rolled.error
    host.units["kube-scheduler.service"].loaded_mtime = 1.0  # e.g. a drop-in an admin added: NeedDaemonReload=yes
    again = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01)
    assert again.plan is not None and any(a.kind.value == "daemon-reload" for a in again.plan.actions)  # planned ...
    assert any(a.kind.value == "daemon-reload" for a in again.applied), again.plan.actions  # ... and dropped
