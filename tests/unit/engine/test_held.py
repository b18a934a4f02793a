"""engine.held: what was rolled back is remembered across a daemon's restart (its file) and carried to another
replica (to_json / merge); a damaged or hostile file is set aside, never trusted, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.engine.held import MAX_ENTRIES, Held

TRIED = frozenset({("/etc/kubernetes/config", "a" * 64)})
CONFIG = frozenset({("master-1", "/etc/etcd/etcd.conf", "b" * 64)})


def test_what_is_held_survives_a_restart_until_the_specs_change(tmp_path: Path) -> None:
    path = tmp_path / "state" / "held.json"
    held = Held(path)
    held.hold("master-1", "kube-apiserver.service", TRIED, "rolled back: bad flag")
    held.stop("etcd.service", CONFIG, "master-1 rolled back")
    assert path.stat().st_mode & 0o077 == 0  # may carry what a unit said: owner-only

    again = Held(path)  # the daemon restarted
    assert again.why("master-1", "kube-apiserver.service", TRIED) == "rolled back: bad flag"
    assert again.stopped("etcd.service", CONFIG) == "master-1 rolled back"

    assert again.why("master-1", "kube-apiserver.service", frozenset({("/etc/kubernetes/config", "c" * 64)})) is None
    assert Held(path).why("master-1", "kube-apiserver.service", TRIED) is None  # forgotten on disk too
    assert Held(path).stopped("etcd.service", CONFIG) == "master-1 rolled back"


def test_another_replicas_memory_is_merged_the_newer_entry_winning(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 200.0, 300.0, 400.0])
    monkeypatch.setattr("reconciler.engine.held.time.time", lambda: next(clock))
    mine, theirs = Held(), Held()
    mine.hold("master-1", "etcd.service", TRIED, "mine, older")  # at 100
    theirs.hold("master-1", "etcd.service", TRIED, "theirs, newer")  # at 200
    theirs.hold("master-2", "etcd.service", TRIED, "only theirs")  # at 300
    mine.hold("master-3", "etcd.service", TRIED, "mine, newest")  # at 400
    older = Held()
    older.merge(mine.to_json(), "test")
    mine.merge(theirs.to_json(), "etcd")
    assert mine.why("master-1", "etcd.service", TRIED) == "theirs, newer"
    assert mine.why("master-2", "etcd.service", TRIED) == "only theirs"
    theirs.merge(older.to_json(), "etcd")  # a failover back: the newer entry is not undone by the older copy
    assert theirs.why("master-1", "etcd.service", TRIED) == "theirs, newer"
    assert theirs.why("master-3", "etcd.service", TRIED) == "mine, newest"


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"[]",
        b'{"version": 2}',
        b'{"version": 1, "held": [{"host": 1, "unit": "u", "why": "w", "tried": []}]}',
        b'{"version": 1, "held": [{"host": "h", "unit": "u", "why": "w", "tried": [["p"]]}]}',
        b'{"version": 1, "held": [{"host": "h", "unit": "u", "why": "w", "tried": "pp"}]}',
        b'{"version": 1, "stopped": [{"unit": "u", "why": "w", "config": [["h", "p", 3]]}]}',
        b'{"version": 1, "held": {}}',
        json.dumps(
            {"version": 1, "held": [{"host": "h", "unit": "u", "why": "w", "tried": []}] * (MAX_ENTRIES + 1)}
        ).encode(),
        b" " * (9 << 20),
    ],
)
def test_a_damaged_or_hostile_file_is_set_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "held.json"
    path.write_bytes(content)
    held = Held(path)
    assert len(held) == 0
    assert not path.exists() and (tmp_path / "held.json.damaged").read_bytes() == content
    held.hold("h", "u", TRIED, "w")
    assert Held(path).why("h", "u", TRIED) == "w"


def test_entries_are_bounded() -> None:
    held = Held()
    for n in range(MAX_ENTRIES + 5):
        held.hold(f"h{n}", "u", TRIED, "w")
    assert len(held) == MAX_ENTRIES
