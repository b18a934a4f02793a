"""What `validate`, `plan`, `apply`, `check` and `import` print with `--json`: one JSON document on stdout.

Every document carries `apiVersion: reconciler/v1` (the schema's version: a field may be added within it, none is
removed or changes meaning), its `kind` (`ValidateResult`, `PlanResult`, `ApplyResult`, `CheckResult`,
`ImportResult`) and the command's `exitCode`. Per host: status, error, the actions planned, applied and still
remaining (kind, target, reason, and for plan the diff, sensitive files shown by size only as on a terminal),
units, checks and certificates as observed. docs/commands.md's "Machine-readable output" is the reference.
Progress and logs stay on stderr, so stdout is the document alone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from reconciler.errors import SpecError

if TYPE_CHECKING:
    from reconciler.adopt.importer import ImportResult
    from reconciler.outcome import HostOutcome, RunResult
    from reconciler.plan.actions import Action
    from reconciler.spec.desired import DesiredState

API_VERSION = "reconciler/v1"
KINDS = {"validate": "ValidateResult", "plan": "PlanResult", "apply": "ApplyResult", "check": "CheckResult"}


def _document(command: str, exit_code: int, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KINDS.get(command, "ImportResult"), "exitCode": exit_code, **fields}


def _action(action: Action, with_diff: bool) -> dict[str, Any]:
    said: dict[str, Any] = {"kind": action.kind.value, "target": action.target, "reason": action.reason}
    if action.rollout:
        said["rollout"] = True
    if with_diff and action.diff:
        said["diff"] = action.diff
    return said


def _host(outcome: HostOutcome, desired: DesiredState, command: str, now: float) -> dict[str, Any]:
    from reconciler.status.report import certificate_report

    said: dict[str, Any] = {"status": outcome.status, "error": outcome.error or None}
    if outcome.plan is not None and command in ("plan", "apply"):
        said["planned"] = [_action(a, command == "plan") for a in outcome.plan.actions]
    if command == "apply":
        said["applied"] = [_action(a, False) for a in outcome.applied]
        said["rolledBack"] = list(outcome.rollbacks)
    if outcome.remaining is not None and command in ("apply", "check"):
        said["remaining"] = [_action(a, False) for a in outcome.remaining.actions]
    snapshot = outcome.snapshot
    if snapshot is not None and command in ("apply", "check"):
        said["units"] = {
            u.name: {"active": u.active_state, "sub": u.sub_state, "enabled": u.unit_file_state or None}
            for u in snapshot.units.values()
        }
        said["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in snapshot.checks]
        said["certificates"] = certificate_report(desired.hosts[outcome.host], snapshot, now)
    said["seconds"] = {k: round(v, 3) for k, v in outcome.seconds.items()}
    return said


def run_document(
    command: str, result: RunResult, desired: DesiredState, exit_code: int, spec_dir: str, overlay: str
) -> dict[str, Any]:
    now = time.time()
    hosts = {name: _host(o, desired, command, now) for name, o in sorted(result.outcomes.items())}
    return _document(
        command,
        exit_code,
        specDir=spec_dir,
        overlay=overlay or None,
        errors=[],
        warnings=list(desired.warnings),
        hosts=hosts,
    )


def valid_document(command: str, desired: DesiredState, spec_dir: str) -> dict[str, Any]:
    hosts: dict[str, Any] = {n: {} for n in sorted(desired.hosts)}
    return _document(command, 0, specDir=spec_dir, errors=[], warnings=list(desired.warnings), hosts=hosts)


def spec_error_document(command: str, error: SpecError, spec_dir: str) -> dict[str, Any]:
    return _document(command, 1, specDir=spec_dir, errors=[str(i) for i in error.issues], warnings=[], hosts={})


def import_document(result: ImportResult, out: str, exit_code: int) -> dict[str, Any]:
    problems = [*result.adoption.problems, *(f"validate: {i}" for i in result.invalid)]
    problems += [f"plan on {h}: {a}" for h, actions in result.pending.items() for a in actions]
    return _document(
        "import",
        exit_code,
        out=out,
        written=result.written is not None,
        exact=result.exact,
        files={name: [f"{d.kind}/{d.name}" for d in docs] for name, docs in result.adoption.files.items()},
        notes=list(result.adoption.notes),
        problems=problems,
        failedHosts=dict(result.failed_hosts),
        refused=result.refused or None,
    )
