"""`reconciler import`: read hand-built masters, write a spec directory describing them, prove it exact.

Owns the order of the work: read every host (adopt.discover), describe them (adopt.describe), write the files
into a fresh directory beside the destination (adopt.emit), then the guarantee: the directory validates and
`plan` on it finds nothing to change on any host. Only then is it renamed into place; otherwise it is removed
(kept with `force`, for a person to finish). Called by `cli`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.adopt.describe import Adoption, HostInfo, describe
from reconciler.adopt.discover import FoundHost, discover
from reconciler.adopt.emit import spec_files
from reconciler.errors import HostError, SpecError, SpecIssue
from reconciler.spec.desired import Target
from reconciler.spec.isolate import load_desired
from reconciler.transport.session import Session


@dataclass
class ImportResult:
    written: Path | None  # where the specs are (None: nothing written)
    adoption: Adoption
    failed_hosts: dict[str, str] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # `validate`'s errors on the written directory
    pending: dict[str, list[str]] = field(default_factory=dict)  # host -> what `plan` would still change

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
    )


async def _read_all(
    session: Session, hosts: list[HostInfo], units: tuple[str, ...]
) -> tuple[dict[str, FoundHost], dict[str, str]]:
    async def one(info: HostInfo) -> FoundHost | str:
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


async def run_import(
    hosts: list[HostInfo], dest: Path, session: Session, *, units: tuple[str, ...] = (), force: bool = False
) -> ImportResult:
    found, failed = await _read_all(session, hosts, units)
    if failed:
        return ImportResult(None, Adoption(), failed_hosts=failed)
    adoption = describe(hosts, found)
    files = spec_files(adoption, ", ".join(h.name for h in hosts))
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.import-", dir=dest.parent))
    try:
        secret = {name for name, docs in adoption.files.items() if any(d.spec.get("sensitive") for d in docs)}
        for name, text in files.items():  # a file holding a secret is for its owner's eyes only
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if name in secret else 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        invalid, pending = await _pending(staging, session)
        invalid = [i.replace(staging.name + "/", dest.name + "/") for i in invalid]
        result = ImportResult(None, adoption, invalid=invalid, pending=pending)
        if result.exact or force:
            staging.rename(dest)
            result.written = dest
        return result
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def hosts_from_inventory(path: Path) -> list[HostInfo]:
    """The Host documents of an inventory (a spec file or directory; other kinds are ignored), with their key
    and known_hosts paths made absolute: the imported directory may live elsewhere. Raises SpecError."""
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
    out = []
    for doc in docs:
        if doc.kind != "Host":
            continue
        spec = doc.spec.model_dump(by_alias=True, exclude_defaults=True)
        for key in ("identityFile", "knownHosts"):
            if key in spec:
                spec[key] = str((base / doc.file).parent.joinpath(os.path.expanduser(spec[key])).absolute())
        out.append(HostInfo(doc.metadata.name, str(spec["address"]), dict(doc.metadata.labels), spec))
    if not out:
        raise SpecError([SpecIssue(str(path), 0, "", "no Host document: nothing to import")])
    return out
