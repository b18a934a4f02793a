"""The spec load in its child process (spec.isolate): bounded and answered whatever the child does.

The hostile corpus (tests/unit/spec/test_isolate_hostile.py) shows the limits on real inputs; here, the child misbehaving in the
ways inputs cannot make it: dying, ignoring its alarm, a loader bug; and the load run from a thread, as the
daemon runs it, with its event loop going on meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import SpecError
from reconciler.spec import isolate
from reconciler.spec import load as spec_load
from reconciler.spec.isolate import load_desired

HOST = """\
apiVersion: reconciler/v1
kind: Host
metadata: {name: m1}
spec: {address: 198.18.0.11}
"""
SLOW = """\
apiVersion: reconciler/v1
kind: File
metadata: {name: slow}
spec:
  path: /etc/slow
  content: "{{ ('x' * 2000000)|wordwrap(1) }}"
"""


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    d = tmp_path / "specs"
    d.mkdir()
    (d / "hosts.yaml").write_text(HOST)
    return d


def issues(d: Path) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_desired(d)
    return [str(i) for i in exc.value.issues]


async def test_a_load_from_a_thread_is_bounded_located_and_leaves_the_loop_free(specs: Path) -> None:
    (specs / "slow.yaml").write_text(SLOW)  # textwrap breaks the long word in quadratic time: hours
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(SpecError) as exc:
            await asyncio.to_thread(load_desired, specs)
    finally:
        ticker.cancel()
    assert [str(i) for i in exc.value.issues] == [
        "specs/slow.yaml:6: spec.content: rendering for host 'm1': rendering and checking took more than 1.0 s of CPU "
        "(limit MAX_LOAD_SECONDS)"
    ]
    assert ticks >= 5  # the loop ran all along (an in-loop load would leave it at 0)


def test_a_child_that_dies_is_an_error_not_a_hang(specs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def die(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(spec_load, "load_documents", die)  # the fork inherits it: the child dies while reading
    assert issues(specs) == [f"{specs}:0: loading the specs ended without an answer (its process died)"]


def test_an_answer_larger_than_allowed_is_refused(specs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolate, "MAX_ANSWER_BYTES", 256)  # the parent counts what it reads as it unpickles
    assert issues(specs) == [f"{specs}:0: the load's answer is larger than 0 MB (limit MAX_ANSWER_BYTES)"]


def test_a_child_that_dies_in_the_middle_of_its_answer_is_an_error(
    specs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, real_dump = isolate.pickle.dumps, isolate.pickle.dump

    def half(obj: Any, out: Any, protocol: int) -> None:  # half the answer, then the child is killed
        if isinstance(out, isolate._Digest):  # the answer's digest: computed in the child, never sent
            return real_dump(obj, out, protocol=protocol)
        data = real(obj, protocol=protocol)
        out.write(data[: len(data) // 2])
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(isolate.pickle, "dump", half)
    assert issues(specs) == [f"{specs}:0: loading the specs ended before its answer was complete (its process died)"]


def test_a_child_that_stops_in_the_middle_of_its_answer_is_killed_at_its_wall_clock(
    specs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, real_dump = isolate.pickle.dumps, isolate.pickle.dump

    def stalls(obj: Any, out: Any, protocol: int) -> None:
        if isinstance(out, isolate._Digest):
            return real_dump(obj, out, protocol=protocol)
        data = real(obj, protocol=protocol)
        out.write(data[: len(data) // 2])
        out.flush()
        time.sleep(60)

    monkeypatch.setattr(isolate.pickle, "dump", stalls)
    monkeypatch.setattr(isolate, "load_budget", lambda hosts: (0.2, 1 << 30))
    monkeypatch.setattr(isolate, "GRACE_SECONDS", 0.2)
    began = time.monotonic()
    (said,) = issues(specs)  # the deadline the budget message set: the reading's time plus 3 x 0.2 s, plus 0.2 s
    assert said.startswith(f"{specs}:0: loading the specs took longer than ") and said.endswith(
        " s of wall time (limits MAX_READ_SECONDS, MAX_LOAD_SECONDS)"
    )
    assert time.monotonic() - began < 30


def test_an_answer_of_another_shape_or_with_a_bytearray_is_refused(
    specs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a child that ran hostile code could send: the answer's shape is checked, and builtins that build big
    values from a few bytes (bytearray(n), a set of a range) are not among the classes an answer may name."""
    real = isolate.pickle.dump

    def other(obj: Any, out: Any, protocol: int) -> None:
        real(("ok",), out, protocol=protocol)

    monkeypatch.setattr(isolate.pickle, "dump", other)
    assert issues(specs) == [f"{specs}:0: loading the specs gave an answer of an unknown shape"]

    def big(obj: Any, out: Any, protocol: int) -> None:
        out.write(b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R.")  # bytearray(1 << 30), protocol 2

    monkeypatch.setattr(isolate.pickle, "dump", big)
    assert issues(specs) == [f"{specs}:0: loading the specs ended before its answer was complete (its process died)"]


def test_a_child_deaf_to_its_alarm_is_killed_at_its_wall_clock(specs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(*args: Any, **kwargs: Any) -> None:  # as if inside one long C call: the alarm cannot interrupt it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPROF})
        time.sleep(60)

    monkeypatch.setattr(spec_load, "load_documents", stuck)
    monkeypatch.setattr(isolate, "MAX_READ_SECONDS", 0.2)
    monkeypatch.setattr(isolate, "GRACE_SECONDS", 0.2)
    began = time.monotonic()
    assert issues(specs) == [
        f"{specs}:0: loading the specs took longer than 0.8 s of wall time (limits MAX_READ_SECONDS, MAX_LOAD_SECONDS)"
    ]
    assert time.monotonic() - began < 30  # killed, not waited for (the sleep is 60 s)


def test_a_loader_bug_in_the_child_is_reported_by_kind(specs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug, with /etc/shadow's content in its message")

    monkeypatch.setattr(spec_load, "load_documents", bug)
    assert issues(specs) == [f"{specs}:0: internal error while loading: RuntimeError"]


def test_memory_past_the_limit_is_a_located_error_and_the_next_load_works(specs: Path) -> None:
    (specs / "big.yaml").write_text(SLOW.replace("('x' * 2000000)|wordwrap(1)", "'{0:{1}}'.format(1, '999999999')"))
    assert issues(specs) == [
        "specs/big.yaml:6: spec.content: rendering for host 'm1': needs more memory than a "
        "spec load may use (limit MAX_LOAD_MEMORY_BYTES)"
    ]
    (specs / "big.yaml").unlink()
    assert load_desired(specs).hosts["m1"].files == {}


def test_the_largest_rendering_the_limits_allow_comes_back_whole(tmp_path: Path) -> None:
    """A 16 MiB file (MAX_RENDERED_BYTES) on the bundled specs' three hosts: ~50 MB of answer, streamed back (a
    pickle built in the child's memory first did not fit MAX_LOAD_MEMORY_BYTES: the load died)."""
    specs = tmp_path / "specs"
    shutil.copytree(Path(__file__).resolve().parents[3] / "specs", specs)
    line = "0123456789abcdef" * 4
    loops = "{% for i in range(3) %}{% for j in range(86037) %}" + line + "\\n{% endfor %}{% endfor %}"
    (specs / "big.yaml").write_text(SLOW.replace("{{ ('x' * 2000000)|wordwrap(1) }}", loops))
    state = load_desired(specs)
    assert [len(h.files["/etc/slow"].content) for h in state.hosts.values()] == [3 * 86037 * 65] * 3


def test_the_child_keeps_no_fd_of_its_parent_but_its_pipe(
    specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inherited fds kept a restarted daemon's port taken (EADDRINUSE) by an orphaned child, and one of another
    load's pipe made that load wait for this child to end (2 of 734 concurrent loads)."""
    seen = tmp_path / "fds"

    def report_fds(*args: Any, **kwargs: Any) -> None:
        seen.write_text(" ".join(sorted(os.listdir("/proc/self/fd"))))
        raise RuntimeError("done")

    monkeypatch.setattr(spec_load, "load_documents", report_fds)
    with socket.socket() as listening:  # as the daemon's HTTP port would be
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert issues(specs) == [f"{specs}:0: internal error while loading: RuntimeError"]
    fds = seen.read_text().split()
    assert len(fds) <= 5 and str(listening.fileno()) not in fds, fds  # 0-2, the pipe, listdir's own


def test_an_ignored_sigchld_does_not_break_loading(specs: Path) -> None:
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # inherited that way from a careless parent
    try:
        assert load_desired(specs).hosts["m1"].files == {}
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_a_fork_that_fails_is_a_spec_error_and_leaks_no_fd(specs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(isolate.os, "fork", no_fork)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert issues(specs) == [f"{specs}:0: cannot start the load's process: Resource temporarily unavailable"]
    assert len(os.listdir("/proc/self/fd")) == before


def test_an_aborted_load_ends_now(specs: Path) -> None:
    (specs / "slow.yaml").write_text(SLOW)
    abort = threading.Event()
    threading.Timer(0.1, abort.set).start()
    began = time.monotonic()
    with pytest.raises(SpecError) as exc:
        load_desired(specs, abort=abort)
    assert [str(i) for i in exc.value.issues] == [f"{specs}:0: loading the specs was stopped (shutting down)"]
    assert time.monotonic() - began < 0.9  # before the child's own budget of 1 s of CPU ends it


def test_issues_are_capped_in_number_and_length() -> None:
    from reconciler.errors import MAX_ISSUES, SpecIssue

    many = SpecError([SpecIssue("a.yaml", i, "f" * 1000, "m" * 100_000) for i in range(MAX_ISSUES + 500)])
    assert len(many.issues) == MAX_ISSUES + 1 and many.issues[-1].message == "... and 500 more issues"
    first = many.issues[0]
    assert len(first.message) < 2100 and first.message.endswith("(98000 more characters)") and len(first.field) < 400


def test_a_reload_keeps_what_the_daemon_already_holds(specs: Path) -> None:
    """The child sends back only what changed in the cache: an unchanged file's documents and an unchanged
    rendering stay the daemon's own objects (copies of all of them at every reload cost +25 MB at 1000 hosts)."""
    from reconciler.spec.cache import SpecCache

    (specs / "f.yaml").write_text(SLOW.replace("{{ ('x' * 2000000)|wordwrap(1) }}", "{{ hosts|length }}"))
    cache = SpecCache()
    load_desired(specs, cache=cache)
    parsed, rendered = dict(cache.parsed), dict(cache.rendered)
    assert parsed and rendered
    (specs / "other.yaml").write_text(SLOW.replace("slow", "other").replace("{{ ('x' * 2000000)|wordwrap(1) }}", "x"))
    load_desired(specs, cache=cache)
    assert all(cache.parsed[k] is v for k, v in parsed.items())  # the same objects, not copies
    assert all(cache.rendered[k] is v for k, v in rendered.items())
    assert "specs/other.yaml" in cache.parsed


def test_a_cli_leaves_the_loader_to_the_child(specs: Path) -> None:
    """`begin_load` forks before the loader (pydantic models, yaml, jinja2) is imported: the CLI imports SSH and
    the engine meanwhile, and never the loader itself."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; import reconciler.cli; from reconciler.spec.isolate import begin_load\n"
        f"pending = begin_load(Path({str(specs)!r}))\n"
        "assert not {'reconciler.spec.load', 'reconciler.spec.render', 'jinja2', 'yaml'} & set(sys.modules)\n"
        "print(len(pending.result().hosts))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 1


def test_a_reload_with_the_answer_the_parent_holds_is_not_sent_again(
    specs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.spec.cache import SpecCache

    unpickled = 0
    real_load = isolate._AnswerUnpickler.load

    def counted(self: Any) -> Any:
        nonlocal unpickled
        unpickled += 1
        return real_load(self)

    monkeypatch.setattr(isolate._AnswerUnpickler, "load", counted)
    cache = SpecCache()
    first = load_desired(specs, cache=cache)
    again = load_desired(specs, cache=cache)
    assert again is first and unpickled == 1  # the child said "the same", nothing was unpickled
    (specs / "hosts.yaml").write_text(HOST.replace("198.18.0.11", "198.18.0.12"))
    edited = load_desired(specs, cache=cache)
    assert edited is not first and edited.hosts["m1"].target.address == "198.18.0.12" and unpickled == 2
    (specs / "hosts.yaml").write_text(HOST)  # back to the first answer: not the one held, so sent whole
    assert load_desired(specs, cache=cache) == first and unpickled == 3
    # The same error twice: the second is the held one, raised again.
    (specs / "bad.yaml").write_text("kind: Nonsense\n")
    with pytest.raises(SpecError) as one:
        load_desired(specs, cache=cache)
    with pytest.raises(SpecError) as two:
        load_desired(specs, cache=cache)
    assert [str(i) for i in one.value.issues] == [str(i) for i in two.value.issues] and unpickled == 4
    # "The same" when the parent holds no answer (a child that lies, or a cache that lost it) is no answer.
    (specs / "bad.yaml").unlink()
    load_desired(specs, cache=cache)
    cache.answer = None
    with pytest.raises(SpecError, match="ended without an answer"):
        load_desired(specs, cache=cache)
