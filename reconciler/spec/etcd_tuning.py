"""The EtcdTuning document resolved: which unit and env file, the policy, and the timings in force; and the
EtcdBackup document (the daemon's snapshot schedule), checked.

Checks the document against the Unit and File it names; the effective values are the spec's raised by the
etcd tuner's overlay, never lowered. Called by `spec.render`; read by the tuner (`DesiredState.tuning`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY, MIN_ELECTION_FACTOR
from reconciler.errors import SpecIssue
from reconciler.spec.desired import DesiredBackup, DesiredTuning, TuningPolicy
from reconciler.spec.model import Document, EtcdBackupSpec, EtcdTuningSpec, unit_name

# A number as etcd and our rewrite both print it (no leading zero: "0100" would be rewritten as "100").
_TIMING_LINE = re.compile(rf'^({HEARTBEAT_KEY}|{ELECTION_KEY})=("?)([1-9][0-9]{{0,8}})\2([ \t]*)$', re.MULTILINE)


def content_timings(content: str) -> dict[str, int]:
    """The two timings of an env File given as `content`: each as exactly one literal `KEY=<ms>` line (quoted
    or not); a key written any other way, or twice, is not one the tuner can raise in place."""
    found: dict[str, list[int]] = {}
    for m in _TIMING_LINE.finditer(content):
        found.setdefault(m.group(1), []).append(int(m.group(3)))
    other = {k for k in (HEARTBEAT_KEY, ELECTION_KEY) if content.count(k) != len(found.get(k, []))}
    return {k: v[0] for k, v in found.items() if len(v) == 1 and k not in other}


def with_timings(content: str, values: Mapping[str, int]) -> str:
    """`content` with the timings' lines holding `values` (quoting and everything else kept)."""
    return _TIMING_LINE.sub(
        lambda m: f"{m.group(1)}={m.group(2)}{values.get(m.group(1), m.group(3))}{m.group(2)}{m.group(4)}", content
    )


def resolve_tuning(
    by_kind: dict[str, dict[str, Document]], overlay: Mapping[str, int], issues: list[SpecIssue]
) -> DesiredTuning | None:
    docs = list(by_kind["EtcdTuning"].values())
    for extra in docs[1:]:
        issues.append(
            SpecIssue(
                extra.file, extra.line, "kind", f"only one EtcdTuning document is allowed (first at {docs[0].where()})"
            )
        )
    if not docs or not docs[0].spec.enabled:
        return None
    doc = docs[0]
    ts: EtcdTuningSpec = doc.spec
    unit, file = by_kind["Unit"].get(ts.unit), by_kind["File"].get(ts.file)
    if unit is None or unit.spec.rollout is None:
        issues.append(
            SpecIssue(
                doc.file,
                doc.line_of("spec", "unit"),
                "spec.unit",
                f"no Unit named {ts.unit!r} with a rollout (members restart one at a time)",
            )
        )
    if file is None:
        issues.append(SpecIssue(doc.file, doc.line_of("spec", "file"), "spec.file", f"no env File named {ts.file!r}"))
        return None
    spec_values: dict[str, int] = {}
    timings = content_timings(file.spec.content or "") if file.spec.env is None else {}
    for key in (HEARTBEAT_KEY, ELECTION_KEY):
        value = file.spec.env.get(key) if file.spec.env is not None else timings.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            where = ("spec", "env", key) if file.spec.env is not None else ("spec", "content")
            issues.append(
                SpecIssue(
                    file.file,
                    file.line_of(*where),
                    ".".join(where),
                    f"EtcdTuning {doc.metadata.name!r} needs {key} here as a plain number of ms"
                    + ("" if file.spec.env is not None else f" (one line {key}=<ms> of the content)"),
                )
            )
        else:
            spec_values[key] = value
    if len(spec_values) < 2 or unit is None:
        return None
    if spec_values[ELECTION_KEY] < MIN_ELECTION_FACTOR * spec_values[HEARTBEAT_KEY]:
        issues.append(
            SpecIssue(
                file.file,
                file.line_of("spec", "env", ELECTION_KEY),
                f"spec.env.{ELECTION_KEY}",
                "etcd refuses an election timeout below 5 x the heartbeat interval",
            )
        )
    effective = {k: max(v, int(overlay.get(k, 0))) for k, v in spec_values.items()}
    policy = TuningPolicy(
        warnings=ts.warnings,
        window_seconds=ts.window_seconds,
        margin=ts.margin,
        round_to_ms=ts.round_to_ms,
        election_multiplier=ts.election_multiplier,
        max_heartbeat_ms=ts.max_heartbeat_ms,
        max_election_ms=ts.max_election_ms,
        cooldown_seconds=ts.cooldown_seconds,
        restart_grace_seconds=ts.restart_grace_seconds,
    )
    return DesiredTuning(
        unit_name(ts.unit),
        ts.file,
        file.spec.path,
        policy,
        spec_values,
        dict(overlay),
        effective,
        f"EtcdTuning/{doc.metadata.name}",
    )


def resolve_backup(by_kind: dict[str, dict[str, Document]], issues: list[SpecIssue]) -> DesiredBackup | None:
    """The EtcdBackup document (one at most), as the daemon's snapshot schedule reads it."""
    docs = list(by_kind["EtcdBackup"].values())
    for extra in docs[1:]:
        issues.append(
            SpecIssue(
                extra.file, extra.line, "kind", f"only one EtcdBackup document is allowed (first at {docs[0].where()})"
            )
        )
    if not docs:
        return None
    spec: EtcdBackupSpec = docs[0].spec
    hours = spec.max_age_hours
    if hours is not None and hours * 3600 < spec.interval_seconds:
        issues.append(
            SpecIssue(
                docs[0].file,
                docs[0].line_of("spec", "maxAgeHours"),
                "spec.maxAgeHours",
                f"{hours:g} h is shorter than intervalSeconds ({spec.interval_seconds:g} s): only the newest snapshot would ever be kept",
            )
        )
    return DesiredBackup(
        spec.interval_seconds,
        spec.keep,
        None if hours is None else hours * 3600,
        spec.directory,
        docs[0].where(),
        tuple(spec.encryption.age_recipients),
    )
