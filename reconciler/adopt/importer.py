"""`reconciler import`: read hand-built masters, write a spec directory describing them, prove it exact.

Owns the order of the work: read every host (adopt.discover, at most MAX_READING at once, each within its byte
budget), describe them (adopt.describe; its warnings go to stderr at once), write the files into a fresh
directory beside the destination (adopt.emit; a file holding a secret 0600), then the guarantee: the directory
validates and `plan` on it finds nothing to change on any host. Only then is it renamed into place, and never
over anything: the destination must still be missing (or the empty directory it was at the start), and the
rename itself does not replace what appears at the last moment (renameat2 RENAME_NOREPLACE). Otherwise the
directory is removed (kept with `force`, for a person to finish). Called by `cli`.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.adopt.describe import Adoption, HostInfo, describe
from reconciler.adopt.discover import FoundHost, discover
from reconciler.adopt.emit import spec_files
from reconciler.errors import HostError, SpecError, SpecIssue
from reconciler.spec.desired import Target
from reconciler.spec.isolate import load_desired
from reconciler.transport.session import Session

MAX_READING = 8  # hosts read at once: each may hold up to its byte budget (adopt.discover.MAX_HOST_BYTES) meanwhile


@dataclass
class ImportResult:
    written: Path | None  # where the specs are (None: nothing written)
    adoption: Adoption
    failed_hosts: dict[str, str] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # `validate`'s errors on the written directory
    pending: dict[str, list[str]] = field(default_factory=dict)  # host -> what `plan` would still change
    refused: str = ""  # why nothing was put at the destination although it was ready (it appeared meanwhile)

    @property
    def exact(self) -> bool:
        return not (self.failed_hosts or self.invalid or self.pending or self.adoption.problems)


def target_of(info: HostInfo) -> Target:
    spec = info.spec
    return Target(
        name=info.name,
        address=info.address,
        port=int(spec.get("port", 22)),
        user=str(spec.get("user", "root")),
        identity_file=spec.get("identityFile"),
        known_hosts=spec.get("knownHosts") or os.path.expanduser("~/.ssh/known_hosts"),
        unsafe_skip_host_key_verification=bool(spec.get("unsafeSkipHostKeyVerification", False)),
        become=spec.get("become"),
        ssh_config=spec.get("sshConfig"),
        implicit=tuple(
            f for f, key in (("port", "port"), ("user", "user"), ("known_hosts", "knownHosts")) if key not in spec
        ),
    )


async def _read_all(
    session: Session, hosts: list[HostInfo], units: tuple[str, ...]
) -> tuple[dict[str, FoundHost], dict[str, str]]:
    gate = asyncio.Semaphore(MAX_READING)

    async def one(info: HostInfo) -> FoundHost | str:
        async with gate:
            try:
                return await discover(await session.connection(target_of(info)), info.name, units)
            except HostError as exc:
                session.forget(info.name)
                return str(exc)

    results = await asyncio.gather(*(one(h) for h in hosts))
    found = {h.name: r for h, r in zip(hosts, results, strict=True) if isinstance(r, FoundHost)}
    failed = {h.name: r for h, r in zip(hosts, results, strict=True) if isinstance(r, str)}
    return found, failed


async def _pending(spec_dir: Path, session: Session) -> tuple[list[str], dict[str, list[str]]]:
    """`validate`'s errors, else what `plan` would change on each host."""
    from reconciler.engine.converge import plan_all

    try:
        desired = load_desired(spec_dir)
    except SpecError as exc:
        return [str(i) for i in exc.issues], {}
    result = await plan_all(desired, session)
    pending: dict[str, list[str]] = {}
    for host, outcome in result.outcomes.items():
        if outcome.status == "failed":
            pending[host] = [outcome.summary()]
        elif outcome.plan is not None and outcome.plan.actions:
            pending[host] = [a.headline() for a in outcome.plan.actions]
    return [], pending


def _stderr(warning: str) -> None:
    print(f"warning: {warning}", file=sys.stderr)


async def run_import(
    hosts: list[HostInfo],
    dest: Path,
    session: Session,
    *,
    units: tuple[str, ...] = (),
    force: bool = False,
    warn: Callable[[str], None] = _stderr,
) -> ImportResult:
    given_empty = _empty_directory(dest)  # the CLI takes an empty directory as OUT: replaced if still empty
    if not given_empty and (dest.exists() or dest.is_symlink()):
        return ImportResult(None, Adoption(), refused=f"{dest} exists: import writes a new directory, never into one")
    found, failed = await _read_all(session, hosts, units)
    if failed:
        return ImportResult(None, Adoption(), failed_hosts=failed)
    adoption = describe(hosts, found)
    for warning in adoption.warnings:
        warn(warning)
    files = spec_files(adoption, ", ".join(h.name for h in hosts))
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.import-", dir=dest.parent))
    try:
        secret = adoption.private | {
            n for n, docs in adoption.files.items() if any(d.spec.get("sensitive") for d in docs)
        }
        for name, text in files.items():  # a file holding a secret is for its owner's eyes only
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if name in secret else 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        invalid, pending = await _pending(staging, session)
        invalid = [i.replace(staging.name + "/", dest.name + "/") for i in invalid]
        result = ImportResult(None, adoption, invalid=invalid, pending=pending)
        if result.exact or force:
            result.refused = _put_in_place(staging, dest, given_empty)
            if not result.refused:
                result.written = dest
        return result
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _empty_directory(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def _put_in_place(staging: Path, dest: Path, given_empty: bool) -> str:
    """Rename the finished directory to `dest` if nothing is there (or still the empty directory given at the
    start); "" when done, else why not. Never replaces or writes into what appeared meanwhile."""
    refused = f"{dest} appeared while import ran, or got content: import writes only a directory of its own there"
    if given_empty:
        try:
            os.rmdir(dest)  # only while it is still an empty directory (not a link, no content)
        except FileNotFoundError:
            pass
        except OSError:
            return refused
    try:
        _rename_noreplace(staging, dest)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            return refused
        raise
    return ""


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` in one step that fails (EEXIST) when anything is at `dst`: renameat2 with
    RENAME_NOREPLACE (Linux 3.15+, glibc 2.28+); where the kernel or file system lacks it, _mkdir_then_move."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        _mkdir_then_move(src, dst)
        return
    if rename(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):  # not on this kernel, or not on this file system
        _mkdir_then_move(src, dst)
        return
    raise OSError(err, os.strerror(err), str(dst))


def _mkdir_then_move(src: Path, dst: Path) -> None:
    """`dst` made here and now (mkdir fails on anything there, a link included), then `src`'s files moved into it:
    never into a directory someone else made."""
    os.mkdir(dst, 0o700)
    for name in os.listdir(src):
        os.rename(src / name, dst / name)
    os.rmdir(src)


def hosts_from_inventory(path: Path) -> list[HostInfo]:
    """The Host documents of an inventory (a spec file or directory; other kinds but HostGroup are ignored), with
    what their HostGroups give them and their key and known_hosts paths made absolute: the imported directory may
    live elsewhere. Raises SpecError."""
    from reconciler.spec.load import load_documents, parse_documents, read_spec_file

    if path.is_dir():
        docs, base = load_documents(path), path.parent
    else:
        text, problem = read_spec_file(path, str(path))
        if text is None:
            raise SpecError([problem] if problem else [])
        docs, issues = parse_documents(text, str(path))
        if issues:
            raise SpecError(issues)
        base = Path()
    from reconciler.spec.hosts import with_groups

    groups = [d for d in docs if d.kind == "HostGroup"]
    problems: list[SpecIssue] = []
    hosts = with_groups([d for d in docs if d.kind == "Host"], groups, base / "specs", problems)  # paths from base
    if problems:
        raise SpecError(problems)
    out = []
    for doc in hosts:
        spec = doc.spec.model_dump(by_alias=True, exclude_defaults=True)
        for key in ("identityFile", "knownHosts", "sshConfig"):
            if key in spec and spec[key] != "none":
                spec[key] = str((base / doc.file).parent.joinpath(os.path.expanduser(spec[key])).absolute())
        out.append(HostInfo(doc.metadata.name, str(spec["address"]), dict(doc.metadata.labels), spec))
    if not out:
        raise SpecError([SpecIssue(str(path), 0, "", "no Host document: nothing to import")])
    return out
