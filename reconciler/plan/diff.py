"""plan_host: the pure difference between a host's desired state and its snapshot.

Owns the rules of what to touch: write a file only when content differs, fix mode/owner without
rewriting, one daemon-reload when a unit file changed (or systemd asks for one), enable/start what
should run, and restart a running unit once when its unit file or one of its files changed since it
last started (level-based: a crash between write and restart is caught on the next pass).
"""

from __future__ import annotations

import difflib
from dataclasses import replace

from reconciler.components.systemd import same_environment, same_unit, unit_directives
from reconciler.observe.snapshot import FileFact, HostSnapshot, UnitFact
from reconciler.plan.actions import Action, Kind, Plan
from reconciler.spec.desired import DesiredFile, DesiredHost, DesiredUnit
from reconciler.terminal import printable


def redacted(content: bytes) -> str:
    return f"<sensitive: {len(content)} bytes>"


def file_diff(path: str, old: FileFact | None, new: DesiredFile) -> str:
    """A unified diff from what the host has; only a regular file read whole has content to show (a symlink's
    target is never read, a file larger than the observation reads is shown by its size)."""
    if old is not None and old.regular and not old.complete:
        old_text = f"<{old.size} bytes, not read>"
        return f"--- {path}\n+++ {path}\n{old_text} -> {redacted(new.content) if new.sensitive else f'<{len(new.content)} bytes>'}"
    shown = old is not None and old.regular
    if new.sensitive:
        before = redacted(old.content) if old and shown else "<absent>"
        return f"--- {path}\n+++ {path}\n(content redacted) {before} -> {redacted(new.content)}"
    a = printable(old.content.decode(errors="replace")).splitlines(keepends=True) if old and shown else []
    b = printable(new.content.decode(errors="replace")).splitlines(keepends=True)
    lines = difflib.unified_diff(a, b, fromfile=path if a else "/dev/null", tofile=path, n=1)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines).rstrip(
        "\n"
    )


def _format_only(desired: DesiredHost, path: str, old: bytes, new: bytes) -> list[str]:
    """The units that read `path` when none of them would see the change from `old` to `new` (systemd reads the
    same unit, or the same environment from it as an EnvironmentFile=); [] when one would, or none reads it."""
    readers = [u for u in desired.units if path in u.restart_on]
    if any(path in u.reload_on for u in desired.units):  # a reload is due on any change: not "format only"
        return []
    for unit in readers:
        if path in unit.unit_files:
            if not same_unit(old, new):
                return []
            continue
        text = desired.files[unit.path].content.decode(errors="replace") if unit.path in desired.files else ""
        sources = {d.value.removeprefix("-") for d in unit_directives(text) if d.key == "EnvironmentFile"}
        if path not in sources or not same_environment(old, new):
            return []
    return [u.name for u in readers]


def _new_install(have: FileFact | None, want: DesiredFile) -> bool:
    """Whether writing `want` may change how the unit is enabled: the file is new (another file of that name, e.g.
    the distribution's in /usr/lib, decided until now), unread, or its [Install] section differs."""
    if have is None or not have.regular or not have.complete:
        return True

    def install(content: bytes) -> list[tuple[str, str]]:
        return [(d.key, d.value) for d in unit_directives(content.decode(errors="replace")) if d.section == "Install"]

    return install(have.content) != install(want.content)


def _directory_actions(desired: DesiredHost, observed: HostSnapshot) -> list[Action]:
    """Directories to create, or whose mode or owner to fix: parents before children."""
    actions: list[Action] = []
    for path, want in sorted(desired.directories.items()):
        have = observed.files.get(path)
        attrs = f"{want.mode:04o} {want.owner}:{want.group}"
        if have is None or not have.exists:
            actions.append(Action(Kind.DIRECTORY, path, f"create, {attrs} ({want.source})"))
        elif have.kind != "directory":
            actions.append(Action(Kind.DIRECTORY, path, f"{have.describe()}: want a directory ({want.source})"))
        elif (have.mode, have.owner, have.group) != (want.mode, want.owner, want.group):
            actions.append(Action(Kind.DIRECTORY, path, f"{have.mode:04o} {have.owner}:{have.group} -> {attrs}"))
    return actions


def _file_actions(desired: DesiredHost, observed: HostSnapshot) -> tuple[list[Action], set[str]]:
    """The writes and attribute fixes, and the paths whose writes change what a unit reads (a format-only write,
    which changes nothing a process sees, is not among them: it restarts nothing)."""
    actions: list[Action] = []
    written: set[str] = set()
    for path, want in sorted(desired.files.items()):
        have = observed.files.get(path)
        if have is None or not have.exists:
            actions.append(Action(Kind.WRITE, path, f"create ({want.source})", file_diff(path, None, want)))
            written.add(path)
        elif not have.regular:  # a symlink (never followed), a directory, a fifo...: replaced by the file
            actions.append(
                Action(
                    Kind.WRITE,
                    path,
                    f"{have.describe()}: replace with a regular file ({want.source})",
                    file_diff(path, have, want),
                )
            )
            written.add(path)
        elif not have.complete or have.content != want.content:
            readers = _format_only(desired, path, have.content, want.content) if have.complete else []
            if readers:
                why = f"format only, no restart: {', '.join(readers)} read(s) the same ({want.source})"
                actions.append(Action(Kind.WRITE, path, why, file_diff(path, have, want), keep_mtime=True))
                continue
            actions.append(Action(Kind.WRITE, path, f"content differs ({want.source})", file_diff(path, have, want)))
            written.add(path)
        elif (have.mode, have.owner, have.group) != (want.mode, want.owner, want.group):
            actions.append(
                Action(
                    Kind.ATTRS,
                    path,
                    f"{have.mode:04o} {have.owner}:{have.group} -> {want.mode:04o} {want.owner}:{want.group}",
                )
            )
    return actions, written


def _reload(unit: DesiredUnit, observed: HostSnapshot, written: set[str], fact: UnitFact | None) -> Action | None:
    """A reload when one of the unit's reloadOn files is written now, or changed since the unit's last reload
    from us (its stamp), or since it started when there is no stamp (level-based, like restarts)."""
    changed = [p for p in unit.reload_on if p in written]
    stamp = observed.files.get(unit.reload_stamp)
    since = max(fact.active_enter or 0.0 if fact else 0.0, stamp.mtime if stamp and stamp.regular else 0.0)
    if not changed and since:
        changed = [p for p in unit.reload_on if p in observed.files and _changed_since(observed.files[p], since)]
    if not changed:
        return None
    why = "changed since its last reload: " + ", ".join(changed)
    return Action(Kind.RELOAD, unit.name, why, rollout=unit.rollout_check is not None, because=tuple(changed))


def _changed_since(fact: FileFact, since: float) -> bool:
    """Pure: a regular file last modified after `since`, unless its inode's own change time (ctime, which no copy
    can set; known once the file is settled: FileFact.stamp) is before it. A file given a future mtime (cp -p,
    rsync -a from a clock ahead) is reloaded for once, not on every pass until the clock passes it."""
    if not fact.regular or fact.mtime <= since:
        return False
    ctime = fact.stamp.rsplit(":", 1)[-1] if fact.stamp else ""
    return not ctime or float(ctime) > since


def _staged(desired: DesiredHost, observed: HostSnapshot, written: set[str]) -> dict[str, list[str]]:
    """Rollout unit -> the written files that wait for its turn (written just before its guarded restart).

    A file waits only when every unit that reads it is a running rollout unit, so a member's config on
    disk keeps matching the process until that member's turn; shared files are written at once.
    """
    readers: dict[str, list[DesiredUnit]] = {}
    for unit in desired.units:
        for path in (*unit.restart_on, *unit.reload_on):
            readers.setdefault(path, []).append(unit)
    staged: dict[str, list[str]] = {}
    for path in sorted(written):
        units = readers.get(path, [])
        if units and all(
            u.rollout_check is not None
            and u.running
            and observed.units.get(u.name) is not None
            and observed.units[u.name].active
            for u in units
        ):
            staged.setdefault(units[0].name, []).append(path)
    return staged


def plan_host(desired: DesiredHost, observed: HostSnapshot) -> Plan:
    """Pure: what must happen on this host, in order. An empty plan means no drift.

    Restarts of rollout units (etcd) come last, each as a group marked `rollout`: its staged writes,
    a daemon-reload if its unit file is among them, then the restart.
    """
    file_actions, written = _file_actions(desired, observed)
    staged = _staged(desired, observed, written)
    staged_paths = {p for paths in staged.values() for p in paths}
    actions = _directory_actions(desired, observed) + [a for a in file_actions if a.target not in staged_paths]
    unit_paths = {p for u in desired.units for p in u.unit_files}
    reload_reasons = sorted((written - staged_paths) & unit_paths)
    stale = sorted(
        u.name for u in desired.units if observed.units.get(u.name) and observed.units[u.name].need_daemon_reload
    )
    if reload_reasons or stale:
        why = (
            "unit file changed: " + ", ".join(reload_reasons)
            if reload_reasons
            else "systemd reports changed unit files: " + ", ".join(stale)
        )
        actions.append(Action(Kind.DAEMON_RELOAD, "", why, because=() if stale else tuple(reload_reasons)))

    stops: list[Action] = []
    starts: list[Action] = []
    restarts: list[Action] = []
    rollouts: list[Action] = []
    for unit in desired.units:
        fact = observed.units.get(unit.name)
        enabled = fact.enabled if fact else False
        active = fact.active if fact else False
        reinstall = unit.path in written and _new_install(observed.files.get(unit.path), desired.files[unit.path])
        in_turn = unit.path in staged_paths  # its unit file waits for its turn: enabled there, after the write
        if unit.enabled and not in_turn and (not enabled or reinstall):
            # a unit file written now has a new [Install] section: what it was before says nothing about what
            # it will be (Debian's etcd.service, enabled with its etcd2.service alias, is `indirect` once ours
            # replaces it), so enable it after the daemon-reload: `systemctl enable` is idempotent
            state = fact.unit_file_state if fact and fact.unit_file_state else "not enabled"
            why = f"unit file rewritten (was {state}): enable by its new [Install]" if enabled else f"is {state}"
            actions.append(Action(Kind.ENABLE, unit.name, why, because=(unit.path,) if enabled else ()))
        elif not unit.enabled and fact and fact.unit_file_state == "enabled":
            actions.append(Action(Kind.DISABLE, unit.name, "is enabled"))
        if not unit.running:
            if active:
                stops.append(Action(Kind.STOP, unit.name, f"is {fact.active_state if fact else '?'}, want stopped"))
            continue
        if not active:
            state = fact.active_state if fact and fact.load_state != "not-found" else "not installed"
            starts.append(Action(Kind.START, unit.name, f"is {state}"))
            continue
        changed = [p for p in unit.restart_on if p in written]
        if not changed and fact is not None and fact.active_enter is not None:
            changed = [
                p
                for p in unit.restart_on
                if p in observed.files and observed.files[p].regular and observed.files[p].mtime > fact.active_enter
            ]
        if changed:
            restart = Action(
                Kind.RESTART,
                unit.name,
                "changed since it started: " + ", ".join(changed),
                rollout=unit.rollout_check is not None,
                because=tuple(changed),
            )
        else:
            reload = _reload(unit, observed, written, fact)
            if reload is None:
                continue
            restart = reload
        if not restart.rollout:
            restarts.append(restart)
            continue
        mine = staged.get(unit.name, [])
        group = [replace(a, rollout=True) for a in file_actions if a.target in mine]
        changed_units = [p for p in unit.unit_files if p in mine]
        if changed_units:
            why = "unit file changed: " + ", ".join(changed_units)
            group.append(Action(Kind.DAEMON_RELOAD, "", why, rollout=True, because=tuple(changed_units)))
            if unit.enabled and unit.path in mine and (reinstall or not enabled):  # enabled by its new unit file
                was = fact.unit_file_state if fact and fact.unit_file_state else "not enabled"
                why = f"unit file rewritten (was {was}): enable by its new [Install]" if enabled else f"is {was}"
                because = (unit.path,) if enabled else ()
                group.append(Action(Kind.ENABLE, unit.name, why, rollout=True, because=because))
        rollouts.extend([*group, restart])
    return Plan(desired.name, tuple(actions + stops + starts + restarts + rollouts))
