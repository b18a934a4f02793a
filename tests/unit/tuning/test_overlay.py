"""tuning.overlay: the state file round trip, and the values it carries rendered into etcd.conf unless the operator's
spec value is higher."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec.isolate import load_desired
from reconciler.tuning import overlay as store

SPECS = Path(__file__).resolve().parents[3] / "specs"


def test_overlay_round_trip_and_operator_spec_value_wins(tmp_path: Path) -> None:
    assert store.load(tmp_path) is None
    store.save(tmp_path, store.Overlay(400, 4000, 5.0, "why", "cause"))
    overlay = store.load(tmp_path)
    assert overlay is not None and overlay.as_env() == {"ETCD_HEARTBEAT_INTERVAL": 400, "ETCD_ELECTION_TIMEOUT": 4000}
    desired = load_desired(SPECS, overlay=overlay.as_env())
    conf = desired.hosts["master-2"].files["/etc/etcd/etcd.conf"].content.decode()
    assert "ETCD_HEARTBEAT_INTERVAL=400\n" in conf and "ETCD_ELECTION_TIMEOUT=4000\n" in conf
    assert desired.tuning is not None and desired.tuning.spec_values["ETCD_HEARTBEAT_INTERVAL"] == 100
    low = load_desired(SPECS, overlay={"ETCD_HEARTBEAT_INTERVAL": 50, "ETCD_ELECTION_TIMEOUT": 500})
    assert b"ETCD_HEARTBEAT_INTERVAL=100\n" in low.hosts["master-1"].files["/etc/etcd/etcd.conf"].content
    (tmp_path / store.FILENAME).write_text("{broken")
    with pytest.raises(ValueError, match="unreadable tuning overlay"):
        store.load(tmp_path)
    assert store.clear(tmp_path) and not store.clear(tmp_path)
