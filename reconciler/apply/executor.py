"""Carrying out a plan on one host: the only place that builds commands which change a host.

Owns the atomic write (temp file in the same directory, owner and mode set, fsync, backup of the
replaced content, rename), and the systemctl verbs. Every value travels as an argv word or on stdin,
never inside script text. Called by the engine; returns what was done or raises HostError.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from reconciler import progress
from reconciler.errors import NotLeader, PermanentHostError
from reconciler.plan.actions import Action, Kind
from reconciler.spec.desired import DesiredHost
from reconciler.transport.base import CommandResult, Connection

log = structlog.get_logger(__name__)

BACKUP_DIR = "/var/backups/reconciler"
BACKUPS_KEPT = 5

# $1 path, $2 mode, $3 owner, $4 group, $5 backup dir, $6 stamp, $7 backups kept, $8 sha256 of the content,
# $9 "keep-mtime" to give the new file the replaced file's mtime (a format-only change: what the process reads
# is the same, so the file's meaning dates from then, and no restart is due for it); content on stdin. A cut connection ends stdin early: the checksum catches it and nothing is installed.
# No link is ever followed: the temp file gets a fresh random name and is created exclusively (dd conv=excl:
# O_CREAT|O_EXCL, which fails on any name planted there, a symlink included), owner-only until its mode is set;
# chown -h; only a regular file is backed up (cp -P); rename replaces whatever is at the path, a symlink
# itself rather than its target, and refuses a directory (mv -T).
# Backups of /etc/x/y go to <backup dir>/etc/x/y/<stamp>, the newest $7 kept.
WRITE_SCRIPT = r"""
set -eu
path=$1; dir=$(dirname -- "$path"); base=$(basename -- "$path")
(umask 022; mkdir -p -- "$dir")
if [ "$(realpath -m -- "$dir")" != "$dir" ]; then echo "$dir goes through a symlink; not written" >&2; exit 4; fi
if [ -d "$path" ] && [ ! -L "$path" ]; then echo "$path is a directory; reconciler does not replace directories" >&2; exit 4; fi
umask 077
tmp=$(mktemp -u -- "$dir/.$base.reconciler.XXXXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT PIPE TERM  # a cut session (SIGPIPE on stderr) still removes the temp file
dd of="$tmp" conv=excl oflag=nofollow bs=1M status=none
exec 3<"$tmp"  # from here on the file we created, through its descriptor: a name swapped meanwhile is not followed
if [ "$(stat -c %d:%i -- "$tmp")" != "$(stat -L -c %d:%i /proc/self/fd/3)" ]; then echo "$tmp was replaced" >&2; exit 4; fi
sum=$(sha256sum < /proc/self/fd/3); sum=${sum%% *}
if [ "$sum" != "$8" ]; then echo "content arrived incomplete (sha256 $sum, expected $8); nothing installed" >&2; exit 3; fi
chown -- "$3:$4" /proc/self/fd/3
chmod -- "$2" /proc/self/fd/3
if [ "${9:-}" = keep-mtime ] && [ -f "$path" ] && [ ! -L "$path" ]; then touch -m -r "$path" /proc/self/fd/3; fi
sync -- /proc/self/fd/3
if [ -f "$path" ] && [ ! -L "$path" ]; then
  bdir="$5$path"
  mkdir -p -m 0700 -- "$5"; mkdir -p -- "$bdir"
  cp -p -P -- "$path" "$bdir/$6"
  printf 'backup %s\n' "$bdir/$6"
  ls -1t -- "$bdir" | tail -n +$(($7 + 1)) | while IFS= read -r old; do rm -f -- "$bdir/$old"; done
fi
mv -f -T -- "$tmp" "$path"
trap - EXIT HUP INT PIPE TERM
sync -- "$dir"
"""

# A directory with its mode and owner ($1 path, $2 mode, $3 owner:group): created (parents with 0755) unless
# there, a symlink at the path replaced (never followed), anything else refused; mode and owner set through a
# descriptor of the directory itself, so a name swapped meanwhile is not followed. Created 0700: never more open
# than asked while its owner is set.
DIRECTORY_SCRIPT = r"""
set -eu
path=$1; parent=$(dirname -- "$path")
if [ "$(realpath -m -- "$parent")" != "$parent" ]; then echo "$parent goes through a symlink; not created" >&2; exit 4; fi
(umask 022; mkdir -p -- "$parent")
if [ -L "$path" ]; then rm -f -- "$path"; fi
if [ -e "$path" ] && [ ! -d "$path" ]; then echo "$path is not a directory; reconciler does not replace it" >&2; exit 4; fi
[ -d "$path" ] || mkdir -m 0700 -- "$path"
exec 3<"$path"
if [ ! -d /proc/self/fd/3 ] || [ "$(stat -c %d:%i -- "$path")" != "$(stat -L -c %d:%i /proc/self/fd/3)" ]; then
  echo "$path was replaced" >&2; exit 4
fi
chown -- "$3" /proc/self/fd/3
chmod -- "$2" /proc/self/fd/3
"""

# Mode and owner of a file whose content is right; never through a symlink (the plan rewrites those).
ATTRS_SCRIPT = (
    'd=$(dirname -- "$3"); if [ "$(realpath -m -- "$d")" != "$d" ] || [ -L "$3" ] || [ ! -f "$3" ]; then '
    'echo "$3 is not a regular file (or is reached through a symlink)" >&2; exit 4; fi; '
    'exec 3<"$3" && [ "$(stat -c %d:%i -- "$3")" = "$(stat -L -c %d:%i /proc/self/fd/3)" ] && '
    'chown -- "$1" /proc/self/fd/3 && chmod -- "$2" /proc/self/fd/3'
)


# $1 path, $2 the backup to put back ("-": the path held no regular file before: remove what we wrote).
# The same care as the write: a fresh exclusive temp file, mode and owner of the backup, rename.
RESTORE_SCRIPT = r"""
set -eu
umask 077
path=$1; dir=$(dirname -- "$path"); base=$(basename -- "$path")
if [ "$2" = - ]; then rm -f -- "$path"; sync -- "$dir"; exit 0; fi
if [ -L "$2" ] || [ ! -f "$2" ]; then echo "backup $2 is not there; $path not restored" >&2; exit 4; fi
tmp=$(mktemp -u -- "$dir/.$base.reconciler.XXXXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT PIPE TERM  # a cut session (SIGPIPE on stderr) still removes the temp file
dd if="$2" of="$tmp" iflag=nofollow oflag=nofollow conv=excl bs=1M status=none
chown -h --reference="$2" -- "$tmp"
chmod --reference="$2" -- "$tmp"
sync -- "$tmp"
mv -f -T -- "$tmp" "$path"
trap - EXIT HUP INT PIPE TERM
sync -- "$dir"
"""

RESTARTS = (Kind.START, Kind.RESTART, Kind.STOP, Kind.RELOAD)

# $1 the unit, $2 its reload stamp: reloaded, then the stamp touched (what the plan compares the files' mtimes with).
RELOAD_SCRIPT = 'systemctl reload -- "$1" && mkdir -p -m 0700 -- "${2%/*}" && touch -- "$2"'


@dataclass
class ApplyLog:
    host: str
    done: list[Action] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # "apply" (writes, enable, reload) and "restart"
    backups: dict[str, str | None] = field(default_factory=dict)  # path written -> its backup (None: nothing before)

    def timed(self, action: Action, seconds: float) -> None:
        phase = "restart" if action.kind in RESTARTS else "apply"
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def restarted(self) -> list[str]:
        return [a.target for a in self.done if a.kind is Kind.RESTART]


def _check(result: CommandResult, host: str, what: str) -> None:
    if not result.ok:
        raise PermanentHostError(f"{host}: {what} failed: {result.describe()}")


async def restore(conn: Connection, host: str, path: str, backup: str | None) -> None:
    """Put a file back as it was before a write: its backup, or no file when there was none."""
    result = await conn.run(["bash", "-c", RESTORE_SCRIPT, "reconciler-restore", path, backup or "-"], timeout=60)
    _check(result, host, f"restore {path}")
    log.warning("restored", host=host, path=path, backup=backup)


def action_argv(action: Action, desired: DesiredHost, stamp: str) -> tuple[list[str], bytes | None]:
    """Pure: the argv (and stdin) that carries out one action."""
    if action.kind is Kind.WRITE:
        f = desired.files[action.target]
        return (
            [
                "bash",
                "-c",
                WRITE_SCRIPT,
                "reconciler-write",
                f.path,
                f"{f.mode:04o}",
                f.owner,
                f.group,
                BACKUP_DIR,
                stamp,
                str(BACKUPS_KEPT),
                hashlib.sha256(f.content).hexdigest(),
                "keep-mtime" if action.keep_mtime else "-",
            ],
            f.content,
        )
    if action.kind is Kind.DIRECTORY:
        d = desired.directories[action.target]
        # "00755": GNU chmod keeps a directory's setgid bit on "0755"; a fifth digit sets the special bits exactly
        return (
            ["sh", "-c", DIRECTORY_SCRIPT, "reconciler-dir", d.path, f"0{d.mode:04o}", f"{d.owner}:{d.group}"],
            None,
        )
    if action.kind is Kind.ATTRS:
        f = desired.files[action.target]
        return (["sh", "-c", ATTRS_SCRIPT, "reconciler-attrs", f"{f.owner}:{f.group}", f"{f.mode:04o}", f.path], None)
    if action.kind is Kind.RELOAD:
        unit = next(u for u in desired.units if u.name == action.target)
        return (["sh", "-c", RELOAD_SCRIPT, "reconciler-reload", unit.name, unit.reload_stamp], None)
    if action.kind is Kind.DAEMON_RELOAD:
        return (["systemctl", "daemon-reload"], None)
    queued = ["--no-block"] if action.no_block else []
    return (["systemctl", action.kind.value, *queued, "--", action.target], None)


async def run_action(conn: Connection, desired: DesiredHost, action: Action) -> CommandResult:
    began = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() % 1_000_000_000:09d}"
    argv, stdin = action_argv(action, desired, stamp)
    timeout = 300.0 if action.kind in RESTARTS else 60.0
    result = await conn.run(argv, input=stdin, timeout=timeout)
    _check(result, desired.name, action.headline() if action.kind is not Kind.WRITE else f"write {action.target}")
    log.info(
        "applied",
        host=desired.name,
        action=action.kind.value,
        target=action.target,
        reason=action.reason,
        began=round(began, 3),  # the kernel's monotonic clock (shared by the hosts of one machine): who acted first
        ended=round(time.monotonic(), 3),
    )
    return result


Fence = Callable[[], Awaitable[bool]]  # whether host-changing actions may go on (leader election: still ours)


async def apply_actions(
    conn: Connection,
    desired: DesiredHost,
    actions: tuple[Action, ...],
    applied: ApplyLog,
    fence: Fence | None = None,
) -> None:
    """Run actions in order; stop at the first failure (raises), recording what was done. With a fence, each
    action first asks it, and none runs once it says no (a replica that no longer leads stops at once)."""
    for action in actions:
        if fence is not None and not await fence():
            raise NotLeader(
                f"{desired.name}: stopped before {action.headline()}: this actor no longer leads "
                "(or no longer holds the restart lock)"
            )
        began = time.monotonic()
        progress.report(desired.name, action.short())
        result = await run_action(conn, desired, action)
        if action.kind is Kind.WRITE:
            said = result.stdout.decode(errors="replace").strip()
            applied.backups[action.target] = said[len("backup ") :] if said.startswith("backup ") else None
        applied.timed(action, time.monotonic() - began)
        applied.done.append(action)
        progress.done(desired.name, action.short())
