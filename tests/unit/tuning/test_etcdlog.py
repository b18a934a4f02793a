"""tuning.etcdlog, pure: Go durations, the heartbeat warning in etcd 3.4's text and 3.5's JSON, journal entries
(cursor, warnings, restarts), garbage and truncated lines."""

from __future__ import annotations

import json
import random

import pytest

from reconciler.tuning.etcdlog import HeartbeatWarning, Restart, go_duration_ms, parse_entry, parse_message
from tests.support.journal import V34, V35, entry


@pytest.mark.parametrize(
    "text,ms",
    [
        ("100ms", 100),
        ("401.80886ms", 401.80886),
        ("1.5s", 1500),
        ("1m2.5s", 62500),
        ("250µs", 0.25),
        ("7ns", 7e-6),
        ("", None),
        ("ms", None),
        ("10 ms", None),
        ("1x", None),
    ],
)
def test_go_durations(text: str, ms: float | None) -> None:
    assert go_duration_ms(text) == (pytest.approx(ms) if ms is not None else None)


def test_both_log_formats_give_the_same_heartbeat_gap() -> None:
    for message in (V34, V35, "etcdserver: " + V34):
        warning = parse_message(message, 5.0)
        assert warning == HeartbeatWarning(5.0, 100.0, pytest.approx(601.80886)), message
        assert warning is not None and warning.late_ms == pytest.approx(401.80886)
    assert parse_message("server is likely overloaded", 5.0) is None
    assert parse_message("heartbeat = 100ms", 5.0) is None


def test_journal_entries_carry_cursor_warnings_and_restarts() -> None:
    assert parse_entry(entry(V34, "c1"), "etcd.service") == (
        "c1",
        HeartbeatWarning(1000.0, 100.0, pytest.approx(601.80886)),
    )
    assert parse_entry(entry("Stopping etcd.service - Etcd Server...", "c2", 7, "1", "systemd"), "etcd.service") == (
        "c2",
        Restart(7.0, "stopping"),
    )
    assert parse_entry(entry("Started etcd.service - Etcd Server.", "c3", 9, "1", "systemd"), "etcd.service") == (
        "c3",
        Restart(9.0, "started"),
    )
    binary = json.dumps({"__CURSOR": "c4", "__REALTIME_TIMESTAMP": "1", "MESSAGE": list(V34.encode())})
    assert isinstance(parse_entry(binary, "etcd.service")[1], HeartbeatWarning)


def test_random_and_truncated_lines_never_raise() -> None:
    rng = random.Random(7)
    samples = [entry(V34, "c"), entry(V35, "c"), V34, V35]
    for _ in range(3000):
        base = rng.choice(samples)
        cut = base[: rng.randrange(len(base) + 1)]
        noise = "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(20)))
        for line in (cut, noise, cut + noise, json.dumps(rng.choice([None, 1, [], {"MESSAGE": 5}, {"__CURSOR": 3}]))):
            parse_entry(line, "etcd.service")
            parse_message(line, 0.0)
