"""The spec load, in a forked child process under a memory limit and a CPU budget: no input can cost more.

The bounds in `spec.limits` (file sizes, YAML values, template steps and sizes) give located errors for what
they catch. This is what holds when one of them misses: a value built inside one call that no estimate saw,
a parser or a template stuck in one step, a product of legal sizes. The child runs with RLIMIT_AS at what it
inherited plus MAX_LOAD_MEMORY_BYTES (a MemoryError where the value is built) and a CPU-time alarm (SIGPROF:
LoadExpired where it fires): MAX_READ_SECONDS to read the files, then `limits.load_budget` for the hosts read
to render and check. Handlers on the way locate either at the document, field and host. The answer (the
DesiredState or the SpecError, and what the load changed in the SpecCache) is streamed back pickled through a
pipe, or, when it is the answer the parent's SpecCache holds from the last load, only a word saying so. A child still running WALL_FACTOR x its CPU budget plus GRACE_SECONDS of wall time (stuck inside one C
call, or starved), or dead without an answer, is killed and reported as a spec error naming the limit.

The child is only the thread that forked; it touches nothing but the spec files and the pipe, and leaves by
os._exit (no atexit, no flush of the parent's buffers). Callers that must not block (the daemon) run
`load_desired` in a thread."""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import pickle
import resource
import select
import signal
import struct
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from reconciler.errors import SpecError, SpecIssue
from reconciler.spec.limits import MAX_HOSTS, MAX_READ_SECONDS, LoadExpired, load_budget

if TYPE_CHECKING:  # the child imports the loader itself: a CLI imports SSH meanwhile (`begin_load`)
    from reconciler.spec.cache import SpecCache
    from reconciler.spec.desired import DesiredState

# The budgets are CPU time: a loaded machine slows a load down without making it costlier, and a legitimate
# spec must not fail because the machine is busy. Wall time only backs them up, generously.
WALL_FACTOR = 3.0
GRACE_SECONDS = 5.0  # past that, for the child to report where it was (freeing what it built before the
# handler that locates the error runs can take seconds on a busy machine)
MAX_ANSWER_BYTES = 256 * 1024 * 1024  # the pickled answer the parent reads at most (renderings are 64 MiB at most)
_BUDGET = struct.Struct("!cd")  # b"B", seconds from the start: the wall-clock deadline now in force
_BUDGET_TAG = b"B"
_LONGEST = WALL_FACTOR * (MAX_READ_SECONDS + load_budget(MAX_HOSTS)[0])  # the wall time a load may be given
_ANSWER = b"A"  # then the digest of (kind, value) pickled, then the answer, pickled, to the end of the pipe
_SAME = b"S"  # the answer's (kind, value) is the one the parent holds (SpecCache.answer_digest): nothing follows
_DIGEST_BYTES = 32


def load_desired(
    directory: Path,
    overlay: Mapping[str, int] | None = None,
    cache: SpecCache | None = None,
    abort: threading.Event | None = None,
) -> DesiredState:
    """Spec directory (plus the etcd tuner's overlay, if any) -> DesiredState for every host, or SpecError.

    The daemon passes the same `cache` to every load, so a reload renders only what changed; the child's
    updates to it are copied back. Setting `abort` (the daemon stopping) kills the child: SpecError.
    The loader is imported here, once: every child inherits it (a child importing it could also block on a
    module lock another of the daemon's threads held when it forked).
    """
    import reconciler.spec.load
    import reconciler.spec.render  # noqa: F401

    return begin_load(directory, overlay, cache).result(abort)


class PendingLoad:
    """A load under way in its child: `result()` waits for it. Started early, it overlaps with the caller's own
    work (the CLI imports SSH and the engine while the child imports the loader and reads the specs)."""

    def __init__(self, directory: Path, cache: SpecCache | None, pid: int, fd: int, began: float):
        self.directory, self._cache, self._pid, self._fd, self._began = directory, cache, pid, fd, began

    def result(self, abort: threading.Event | None = None) -> DesiredState:
        try:
            answer = _collect(
                self._fd, self._pid, self._began, abort, self._cache is not None and self._cache.answer is not None
            )
        finally:
            os.close(self._fd)
        if isinstance(answer, str):
            raise SpecError([_issue(self.directory, answer)])
        if answer is _SAME_ANSWER:  # only ever sent when the cache holds an answer (the child saw its digest)
            assert self._cache is not None and self._cache.answer is not None
            kind, value = self._cache.answer
        else:
            digest, kind, value, state = answer
            if self._cache is not None:
                if state is not None:
                    _apply_delta(self._cache, state)
                self._cache.answer, self._cache.answer_digest = (kind, value), digest
        if kind == "error":
            raise SpecError(value)
        return value  # type: ignore[no-any-return]


def begin_load(
    directory: Path, overlay: Mapping[str, int] | None = None, cache: SpecCache | None = None
) -> PendingLoad:
    """Fork the load's child and return at once; `load_desired` is this and its `result()`."""
    read, write = os.pipe()
    began = time.monotonic()
    try:
        pid = os.fork()
    except OSError as exc:  # out of processes or memory: nothing was started
        os.close(read)
        os.close(write)
        raise SpecError([_issue(directory, f"cannot start the load's process: {exc.strerror}")]) from None
    if pid == 0:  # the child
        status = 70
        try:
            _child(write, directory, overlay, cache, began)
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    return PendingLoad(directory, cache, pid, read, began)


# -- the child ---------------------------------------------------------------------------------------
def _child(fd: int, directory: Path, overlay: Mapping[str, int] | None, cache: SpecCache | None, began: float) -> None:
    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the parent's handlers are not ours
        signal.signal(sig, signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)  # an event loop's wakeup socket is shared with the parent
    except ValueError:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPROF})  # the forking thread may have blocked it
    # Only the pipe stays open: not the parent's listening socket, its SSH connections, nor another load's pipe
    # (whose reader would then wait for this child to end before it saw its own child's end).
    os.closerange(3, fd)
    os.closerange(fd + 1, 1 << 20)
    from reconciler.spec.load import load_documents  # here: a CLI's parent imports SSH meanwhile
    from reconciler.spec.render import build_desired

    inherited = _mapped_bytes()  # the loader's own code is not the load's memory

    def expire(signum: int, frame: FrameType | None) -> None:
        raise LoadExpired(message)

    signal.signal(signal.SIGPROF, expire)
    seconds, memory = MAX_READ_SECONDS, load_budget(0)[1]
    message = f"reading the spec files took more than {seconds:g} s of CPU (limit MAX_READ_SECONDS)"
    _limit(seconds, memory, inherited)
    state = None
    before = (dict(cache.parsed), dict(cache.rendered)) if cache is not None else ({}, {})
    try:
        docs = load_documents(directory, cache)
        hosts = len({d.metadata.name for d in docs if d.kind == "Host"})  # copies buy nothing
        seconds, memory = load_budget(min(hosts, MAX_HOSTS))
        message = f"rendering and checking took more than {seconds:.1f} s of CPU (limit MAX_LOAD_SECONDS)"
        os.write(fd, _BUDGET.pack(_BUDGET_TAG, time.monotonic() - began + WALL_FACTOR * seconds))
        _limit(seconds, memory, inherited)
        answer: tuple[str, Any] = ("ok", build_desired(docs, spec_dir=directory, overlay=overlay, cache=cache))
        state = _cache_delta(cache, *before)
    except SpecError as exc:
        answer = ("error", exc.issues)
        state = _cache_delta(cache, *before)
    except LoadExpired as exc:
        answer = ("error", [SpecIssue(*exc.at, str(exc)) if exc.at else _issue(directory, str(exc))])
    except MemoryError:
        answer = (
            "error",
            [_issue(directory, f"loading the specs needs more than {memory >> 20} MB (limit MAX_LOAD_MEMORY_BYTES)")],
        )
    except Exception as exc:  # a loader bug: reported, and the caller keeps what it had
        answer = ("error", [_issue(directory, f"internal error while loading: {type(exc).__name__}")])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    # The digest is of the answer pickled into a hash, not into memory; the same answer as the parent's last is
    # not sent (a reload that changed nothing costs the parent no unpickling of every host's desired state).
    digest = _Digest()
    pickle.dump(answer, digest, protocol=pickle.HIGHEST_PROTOCOL)
    with os.fdopen(fd, "wb", buffering=1 << 16, closefd=False) as out:  # streamed: no copy of it in memory
        if cache is not None and cache.answer_digest == digest.value():
            out.write(_SAME)
            return
        out.write(_ANSWER + digest.value())
        pickle.dump((*answer, state), out, protocol=pickle.HIGHEST_PROTOCOL)


class _Digest:
    """A file that only hashes what is written to it."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=_DIGEST_BYTES)

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return len(data)

    def value(self) -> bytes:
        return self._hash.digest()


def _cache_delta(cache: SpecCache | None, parsed: dict[str, Any], rendered: dict[Any, str]) -> dict[str, Any] | None:
    """The cache after the load, as far as the parent does not hold it already: an entry the child reused is
    the very object it inherited, sent as None ("keep yours"), so a reload of 1000 hosts does not copy every
    parsed document and rendering back (the daemon held both copies at the swap: +25 MB peak)."""
    if cache is None:
        return None
    return {
        "hosts_key": cache.hosts_key,
        "parsed": {k: None if parsed.get(k) is v else v for k, v in cache.parsed.items()},
        "rendered": {k: None if rendered.get(k) is v else v for k, v in cache.rendered.items()},
    }


def _apply_delta(cache: SpecCache, delta: dict[str, Any]) -> None:
    cache.hosts_key = delta["hosts_key"]
    cache.parsed = {k: cache.parsed[k] if v is None else v for k, v in delta["parsed"].items()}
    cache.rendered = {k: cache.rendered[k] if v is None else v for k, v in delta["rendered"].items()}


def _issue(directory: Path, message: str) -> SpecIssue:
    """An issue of the load as a whole, at the spec directory."""
    return SpecIssue(str(directory), 0, "", message)


def _limit(seconds: float, memory: int, inherited: int | None) -> None:
    """From now on: `seconds` of CPU (user + system), and `memory` bytes mapped beyond what the child inherited
    (None: unknown, no memory limit)."""
    signal.setitimer(signal.ITIMER_PROF, seconds)
    if inherited is None:
        return
    address_space = inherited + memory
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        address_space = min(address_space, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, hard))
    except OSError:  # a seccomp filter refusing it (the shipped unit allows prlimit64): the CPU budget still holds
        pass


def _mapped_bytes() -> int | None:
    """What the child maps when it starts (/proc/self/statm); None without /proc: then no memory limit."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL this child when the thread that forked it ends (the daemon killed): no orphan keeps working."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# -- the parent --------------------------------------------------------------------------------------
_SAME_ANSWER = ("same",)  # what _collect returns for _SAME


def _collect(
    fd: int, pid: int, began: float, abort: threading.Event | None, same_allowed: bool = False
) -> tuple[Any, ...] | str:
    """The child's answer, or why there is none; kills the child at its wall-clock deadline, and reaps it.
    The answer is unpickled as it arrives, never held whole: a reload of a big fleet costs the new state, not also
    its pickled bytes."""
    pipe = _Pipe(fd, began, WALL_FACTOR * MAX_READ_SECONDS, abort)
    try:
        while (tag := pipe.read(1)) == _BUDGET_TAG:  # the load's budget, once the files are read
            said = _BUDGET.unpack(tag + pipe.read(_BUDGET.size - 1))[1]
            pipe.seconds = said if 0 <= said <= _LONGEST else _LONGEST  # nan, inf or negative: the most any load gets
        if tag == _SAME and same_allowed:
            return _SAME_ANSWER
        if tag != _ANSWER:
            return "loading the specs ended without an answer (its process died)"
        digest = pipe.read(_DIGEST_BYTES)
        answer = _AnswerUnpickler(io.BufferedReader(pipe, 1 << 16)).load()
        if not (isinstance(answer, tuple) and len(answer) == 3 and answer[0] in ("ok", "error")):
            return "loading the specs gave an answer of an unknown shape"
        return (digest, *answer)
    except _Stopped as stopped:
        return str(stopped)
    except Exception:  # cut short: the child died while sending it (out of memory, killed)
        return "loading the specs ended before its answer was complete (its process died)"
    finally:
        _reap(pid)


class _Stopped(Exception):
    """No answer in time, or too big: the reason."""


class _Pipe(io.RawIOBase):
    """The child's pipe as a file, every read under the wall-clock deadline, the abort event and MAX_ANSWER_BYTES."""

    def __init__(self, fd: int, began: float, seconds: float, abort: threading.Event | None):
        self._fd, self._began, self.seconds, self._abort, self._read = fd, began, seconds, abort, 0
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            left = self._began + self.seconds + GRACE_SECONDS - time.monotonic()
            if left <= 0:
                raise _Stopped(
                    f"loading the specs took longer than {self.seconds + GRACE_SECONDS:.1f} s of wall time "
                    "(limits MAX_READ_SECONDS, MAX_LOAD_SECONDS)"
                )
            if self._abort is not None and self._abort.is_set():
                raise _Stopped("loading the specs was stopped (shutting down)")
            if self._poller.poll(min(left, 0.2) * 1000):
                break
        chunk = os.read(self._fd, min(len(buffer), 1 << 20))
        self._read += len(chunk)
        if self._read > MAX_ANSWER_BYTES:
            raise _Stopped(f"the load's answer is larger than {MAX_ANSWER_BYTES >> 20} MB (limit MAX_ANSWER_BYTES)")
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def read(self, size: int = -1) -> bytes:  # exactly `size` bytes unless the pipe ends (the budget message)
        out = b""
        while len(out) < size and (chunk := super().read(size - len(out))):
            out += chunk
        return out


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)  # past its time, or already leaving after its answer
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # SIGCHLD ignored (inherited that way): the kernel reaped it
        pass


# (set, frozenset and bytearray have opcodes of their own in the protocol used: called, a few bytes could ask for
# gigabytes, e.g. bytearray(1 << 40))
_SAFE_BUILTINS = frozenset({"complex", "slice", "range", "object"})
_SAFE_ELSEWHERE = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("pathlib", "PosixPath"),
        ("collections", "OrderedDict"),
        ("pydantic_core._pydantic_core", "PydanticUndefinedType"),
    }
)


class _AnswerUnpickler(pickle.Unpickler):
    """The child runs templates: should one ever escape the sandbox, its answer must not run code here. Only
    classes of this package and plain values are rebuilt (a pickle can otherwise call any function)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module == "builtins" and name in _SAFE_BUILTINS) or (module, name) in _SAFE_ELSEWHERE:
            return super().find_class(module, name)
        if module.startswith("reconciler."):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"not part of a load's answer: {module}.{name}")
