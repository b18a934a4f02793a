"""/status "tuning": what the etcd tuner follows, counted and decided, and each member's rollout of it.

Reads the Tuner's state (it keeps no document of its own) and the hosts' records. Called by the daemon's
/status handler.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from reconciler.status.report import HostRecord
from reconciler.tuning import overlay as store
from reconciler.tuning.tuner import Tuner


def tuning_document(tuner: Tuner, records: Mapping[str, HostRecord]) -> dict[str, Any]:
    tuning = tuner.desired.tuning if tuner.desired else None
    if tuning is None:
        return {"enabled": False}
    now = time.time()
    d = tuner.decision
    cooldown_left = 0.0
    if tuner.overlay:
        cooldown_left = max(0.0, tuning.policy.cooldown_seconds - (now - tuner.overlay.decided_at))
    members: dict[str, Any] = {}
    for name in sorted(h.name for h in tuner.desired.hosts_with_unit(tuning.unit)) if tuner.desired else []:
        follower = tuner.followers.get(name, (None, None))[0]
        record = records.get(name)
        blocked = record.error if record is not None and record.status != "converged" else ""
        members[name] = {
            "journal": {
                "following": bool(follower and follower.connected),
                "resumable": bool(follower and follower.cursor),
                "entries": follower.entries if follower else 0,
                "error": follower.error if follower else "",
            },
            "warnings_in_window": (d.counted.get(name, 0) if d else 0),
            "metrics": tuner.scraped.get(name, {}),
            "rollout": "applied" if record is not None and record.status == "converged" else (blocked or "pending"),
        }
    return {
        "enabled": True,
        "unit": tuning.unit,
        "file": tuning.path,
        "source": tuning.source,
        "policy": asdict(tuning.policy),
        "spec_values": tuning.spec_values,
        "effective": tuning.effective,
        "overlay": asdict(tuner.overlay) if tuner.overlay else None,
        "overlay_error": tuner.overlay_error or None,
        "state_file": str(store.path_in(tuner.state_dir)),
        "last_decision": (
            {
                "outcome": d.outcome,
                "reason": d.reason,
                "cause": d.cause or None,
                "ignored_near_restarts": d.ignored,
                "at": tuner.decided_at,
            }
            if d
            else None
        ),
        "evaluated_at": tuner.evaluated_at,
        "cooldown_left_seconds": round(cooldown_left, 1),
        "members": members,
    }
