"""The EtcdTuning document resolved: which unit and env file, the policy, and the timings in force.

Checks the document against the Unit and File it names; the effective values are the spec's raised by the
etcd tuner's overlay, never lowered. Called by `spec.render`; read by the tuner (`DesiredState.tuning`).
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY, MIN_ELECTION_FACTOR
from reconciler.errors import SpecIssue
from reconciler.spec.desired import DesiredTuning, TuningPolicy
from reconciler.spec.model import Document, EtcdTuningSpec, unit_name


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
    if file is None or file.spec.env is None:
        issues.append(SpecIssue(doc.file, doc.line_of("spec", "file"), "spec.file", f"no env File named {ts.file!r}"))
        return None
    spec_values: dict[str, int] = {}
    for key in (HEARTBEAT_KEY, ELECTION_KEY):
        value = file.spec.env.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            issues.append(
                SpecIssue(
                    file.file,
                    file.line_of("spec", "env", key),
                    f"spec.env.{key}",
                    f"EtcdTuning {doc.metadata.name!r} needs {key} here as a plain number of ms",
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
