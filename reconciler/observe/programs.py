"""Before a component is started or restarted: does the binary the host would run accept every flag it is given?

Owns asking the host (programs.sh beside this module): the checksum of each binary a planned start or restart
runs (one command), and, once per checksum, what that binary says of its flags (its `--help`, and a probe for each
flag its help does not list: deprecated and hidden flags are accepted, removed ones refused). What a binary said is
kept in this process by checksum (`BOOKS`): a fleet running one build asks one host, once; a binary's checksum by
its stamp on each host (`SEEN`: device, inode, size, mtime, ctime), so it is read again only once changed. Which flags a service
is given is `components.systemd`'s reading of the desired unit and env files; which of them are refused,
`components.flags`'. The refusals leave located in the specs (`spec.origins`), as the engine's plan-time errors.
etcd's binary is asked even when its unit gives it no flag: its `--version` is what `components.etcd_versions`
checks against the cluster's (`engine.startable`).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import structlog

from reconciler.components.flags import CHECKED, FlagBook, checkable, flag_words, listed, refused
from reconciler.components.systemd import Service, Setting, service
from reconciler.errors import TransientHostError
from reconciler.observe.facts import shipped_script
from reconciler.spec.desired import DesiredHost
from reconciler.spec.origins import locate
from reconciler.terminal import printable
from reconciler.transport.base import Connection

log = structlog.get_logger(__name__)

SCRIPT = shipped_script("programs.sh")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/-]{1,4095}")  # a binary's path as it may travel on one line
_SUM = re.compile(r"[0-9a-f]{64}")
MAX_BOOKS = 64
MAX_FLAGS = 500  # flags of one service asked about at most (bounded work for any spec)
BOOKS: OrderedDict[str, FlagBook] = OrderedDict()  # checksum -> what that binary said, least recently used first
MAX_SEEN = 16384
# (host, binary path) -> (its stamp, its checksum) as last seen: a binary whose stamp is unchanged is not read again
SEEN: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()


@dataclass(frozen=True)
class Refusal:
    unit: str
    program: str  # the binary's path on the host
    message: str  # what is wrong and where it was written


def started(host: DesiredHost, names: set[str]) -> dict[str, Service]:
    """Of the units `names`, the services whose program is a checked component, by unit name, as their desired
    unit and env files define them."""
    texts = {p: f.content.decode("utf-8", errors="replace") for p, f in host.files.items()}
    out: dict[str, Service] = {}
    for unit in host.units:
        if unit.name in names and unit.path in texts:
            svc = service(unit.path, texts)
            if svc.program in CHECKED and _SAFE_PATH.fullmatch(svc.argv[0].value):
                out[unit.name] = svc
    return out


@dataclass(frozen=True)
class Answer:
    refused: list[Refusal]
    versions: dict[str, tuple[str, str]]  # unit -> (its binary's path, the first line its --version printed)


async def refusals(conn: Connection, host: DesiredHost, starting: set[str]) -> Answer:
    """Every flag the units `starting` (a plan's starts and restarts) would give a component that its binary on the
    host does not accept, and every such binary that is not there (none asked when no unit is a component); and
    what etcd's binary says its version is (etcd's help is asked even when it is given no flag: its version is
    what `components.etcd_versions` checks)."""
    services = started(host, starting)
    if not services:
        return Answer([], {})
    paths = sorted({svc.argv[0].value for svc in services.values()})
    known = [SEEN.get((host.name, p), ("-", ""))[0] for p in paths]
    args = [w for pair in zip(paths, known) for w in pair]
    result = await conn.run(["bash", "-c", SCRIPT, "reconciler-programs", "sum", *args], timeout=120)
    if not result.ok:
        raise TransientHostError(f"{host.name}: checking the components' binaries: {result.describe()}")
    sums = _sums(result.stdout.decode("utf-8", errors="replace"), paths, host.name)
    out: list[Refusal] = []
    versions: dict[str, tuple[str, str]] = {}
    for unit, svc in sorted(services.items()):
        path = svc.argv[0].value
        digest = sums.get(path)
        if digest is None:
            out.append(Refusal(unit, path, f"{unit} would run {path}, which is not an executable file on {host.name}"))
            continue
        words = dict(list(flag_words(svc).items())[:MAX_FLAGS])
        names, malformed = checkable(set(words))
        if not words and svc.program != "etcd":
            continue  # no flag to check, no version to know: its help is not asked
        book = await _book(conn, host.name, path, digest, names)
        if svc.program == "etcd":
            versions[unit] = (path, book.version)
        if not book.lists_flags:
            continue
        for name in sorted(malformed | {n for n in names if not book.accepts(n)}):
            out.append(Refusal(unit, path, _refused(host, unit, path, book, words[name])))
    return Answer(out, versions)


async def _book(conn: Connection, host: str, path: str, digest: str, names: set[str]) -> FlagBook:
    """What the binary with this checksum says of `names`, asking the host only what no host has answered yet (its
    help once, then a probe per flag the help does not list; none when its help lists no flags: not a binary
    whose flags can be checked, such as a stand-in or a wrapper script)."""
    async with _asking(digest):  # hosts planned at the same moment wait for the first one's answer
        book = BOOKS.get(digest)
        if book is None:
            book = FlagBook()
            _learn(book, await _ask(conn, host, path, digest, ["+help"]))
            if not book.lists_flags:
                log.info("flags not checked: its --help lists none", host=host, program=path, sha256=digest[:12])
        BOOKS[digest] = book
    BOOKS.move_to_end(digest)
    while len(BOOKS) > MAX_BOOKS:
        BOOKS.popitem(last=False)
    if not book.lists_flags:
        return book
    ask = sorted(book.unknown_to(names))
    if ask:
        _learn(book, await _ask(conn, host, path, digest, ask))
    return book


_LOCKS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = WeakKeyDictionary()


def _asking(digest: str) -> asyncio.Lock:
    locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    if len(locks) > MAX_BOOKS and not any(lock.locked() for lock in locks.values()):
        locks.clear()
    return locks.setdefault(digest, asyncio.Lock())


async def _ask(conn: Connection, host: str, path: str, digest: str, args: list[str]) -> str:
    argv = ["bash", "-c", SCRIPT, "reconciler-programs", "ask", path, digest, *args]
    result = await conn.run(argv, timeout=30 + 12 * len(args))
    text = result.stdout.decode("utf-8", errors="replace")
    if not result.ok or "@@CHANGED" in text.splitlines() or not text.rstrip().endswith("@@END"):
        raise TransientHostError(f"{host}: asking {path} about its flags: {result.describe()}")
    return text


def _sums(text: str, paths: list[str], host: str) -> dict[str, str | None]:
    """Each path's checksum (None: not an executable file), from the host's answer and what it said before."""
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        words = line.split(" ", 3)
        if len(words) != 4 or words[0] != "@@P" or words[3] not in paths:
            continue
        stamp, digest, path = words[1:]
        if digest == "same" and (host, path) in SEEN:
            digest = SEEN[(host, path)][1]
        if _SUM.fullmatch(digest):
            out[path] = digest
            SEEN[(host, path)] = (stamp, digest)
            SEEN.move_to_end((host, path))
        else:
            out[path] = None
            SEEN.pop((host, path), None)
    while len(SEEN) > MAX_SEEN:
        SEEN.popitem(last=False)
    return out


def _learn(book: FlagBook, text: str) -> None:
    """Fill `book` from an `ask` answer: its version and help (when asked), each probe's verdict."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line in ("@@VERSION", "@@HELP", "@@END") or line.startswith("@@PROBE "):
            current = sections.setdefault(line, [])
        elif current is not None:
            current.append(line)
    if "@@HELP" in sections:
        book.version = printable(next((s for s in sections.get("@@VERSION", []) if s.strip()), "").strip())[:80]
        book.visible = listed("\n".join(sections.get("@@HELP", [])))
    for tag, lines in sections.items():
        if tag.startswith("@@PROBE "):
            book.probed[tag.removeprefix("@@PROBE ")] = not refused("\n".join(lines))


def _refused(host: DesiredHost, unit: str, path: str, book: FlagBook, word: Setting) -> str:
    file = host.files.get(word.path)
    where = locate(word, host.origins.get(file.source)) if file is not None else None
    said = f"{where[0]}:{where[1]} ({where[2]}), " if where else ""
    given = f"{word.key} in " if word.key else ""
    flag = word.name if file is None or not file.sensitive else "a flag (its name withheld: the file is sensitive)"
    version = f" ({book.version})" if book.version else ""
    return (
        f"{flag[:120]} is not a flag {path}{version} on {host.name} accepts ({unit} would not start): "
        f"given by {said}{given}{word.path} line {word.line}"
    )
