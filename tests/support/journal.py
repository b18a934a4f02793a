"""etcd's journal as the tuner reads it: the heartbeat warning as etcd 3.4 (text) and 3.5 (JSON) print it, and one
entry as `journalctl -o json` prints it. Used by the tests of the etcd log parser and of the journal follower."""

from __future__ import annotations

import json

V34 = "failed to send out heartbeat on time (exceeded the 100ms timeout for 401.80886ms, to e23bf6fd185b2dc5)"
V35 = json.dumps(
    {
        "level": "warn",
        "ts": "2026-11-27T03:00:00.000Z",
        "caller": "etcdserver/raft.go:369",
        "msg": "leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk",
        "to": "e23bf6fd185b2dc5",
        "heartbeat-interval": "100ms",
        "expected-duration": "200ms",
        "exceeded-duration": "401.80886ms",
    }
)


def entry(message: str, cursor: str, at: float = 1000.0, pid: str = "321", ident: str = "etcd") -> str:
    """One journal entry of `message` as `journalctl -o json` prints it (`ident`: etcd, or systemd about etcd)."""
    return json.dumps(
        {
            "__CURSOR": cursor,
            "__REALTIME_TIMESTAMP": str(int(at * 1e6)),
            "_PID": pid,
            "SYSLOG_IDENTIFIER": ident,
            "MESSAGE": message,
        }
    )
