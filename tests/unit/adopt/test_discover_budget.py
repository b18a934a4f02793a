"""adopt.discover's byte budget per host (issue 26, item 9): a host with more to read than MAX_HOST_BYTES is refused
without reading past it, one that ignores the budget it is told is cut off by the connection, what it sends counts
even when refused; the read script itself stops at the budget on a real shell."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from reconciler.adopt import discover as disc
from reconciler.errors import HostError
from reconciler.transport.base import MAX_OUTPUT, CommandResult, Connection
from reconciler.transport.fake import FakeConnection
from tests.support.masters import (
    found_hosts,
    heavy_master,
)


class Counting:
    """A connection that counts the bytes import took from the host: each answer, or all it asked for from a host
    that sent more (the transport stops reading there)."""

    def __init__(self, inner: Connection):
        self.inner = inner
        self.accepted = 0

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        try:
            result = await self.inner.run(argv, input=input, timeout=timeout, max_output=max_output)
        except HostError:
            self.accepted += max_output
            raise
        self.accepted += len(result.stdout)
        return result


def test_a_host_with_more_to_read_than_the_budget_is_refused_without_reading_past_it() -> None:
    host = heavy_master()
    conn = Counting(FakeConnection(host))
    with pytest.raises(HostError) as err:
        asyncio.run(disc.discover(conn, host.name))
    message = str(err.value)
    assert "16 MiB" in message and "budget" in message, message
    assert "xxxx" not in message
    # what import let the host send, over all its round trips: the budget in base64, and little besides
    assert conn.accepted <= disc.MAX_HOST_BYTES * 4 // 3 + 4 * 1024 * 1024, conn.accepted


def test_a_host_that_lies_about_the_budget_is_cut_off_at_it() -> None:
    """A host that ignores the budget it is given (a hostile shell) is stopped by the transport's cap."""
    host = heavy_master()
    host.ignore_budget = True
    conn = Counting(FakeConnection(host))
    with pytest.raises(HostError):
        asyncio.run(disc.discover(conn, host.name))
    assert conn.accepted <= disc.MAX_HOST_BYTES * 4 // 3 + 4 * 1024 * 1024, conn.accepted


def test_what_a_host_sends_counts_against_its_budget_even_when_refused() -> None:
    """A host whose stat says 1 byte and whose read sends 1 MiB: each file is refused ("changed while it was
    read"), and the bytes still count, so a later round is not given the whole budget again."""
    accepted = [0]

    class Liar:
        async def run(self, argv: Sequence[str], *, max_output: int = MAX_OUTPUT, **_: Any) -> CommandResult:
            body = base64.b64encode(b"x" * 1024 * 1024).decode()
            out = "".join(f"@@F {p} file 1 644 cm9vdA== cm9vdA==\n{body}\n" for p in argv[5:]).encode()
            accepted[0] += min(len(out), max_output)
            if len(out) > max_output:
                raise HostError("answered more than asked for")
            return CommandResult(tuple(argv), 0, out, b"")

    host = disc.FoundHost("liar")
    reader = disc._Reader(Liar(), host)  # type: ignore[arg-type]
    with pytest.raises(HostError):
        for i in range(10):  # rounds of 8 files: import has three, a hostile host would want more
            asyncio.run(reader.read([f"/etc/{i}/x{k}" for k in range(8)]))
    assert all(f.state == "changed while it was read" for f in host.files.values())
    assert accepted[0] <= disc.MAX_HOST_BYTES * 4 // 3 + 1024 * 1024, accepted[0]


def test_a_host_within_the_budget_imports_as_before(tmp_path: Path) -> None:
    host = heavy_master(files=10, size=256 * 1024)  # 2.5 MiB of env files
    found = found_hosts([host])["master-1"]
    assert not found.problems and all(found.files[f"/etc/big/{i}.env"].ok for i in range(10))


def read_locally(paths: list[str], budget: int) -> str:
    script = disc._READ_SCRIPT
    proc = subprocess.run(
        ["sh", "-c", script, "reconciler-import", str(budget), *paths], capture_output=True, check=True, timeout=60
    )
    return proc.stdout.decode()


def test_the_read_script_stops_at_the_budget_on_a_real_shell(tmp_path: Path) -> None:
    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([65 + i]) * 1000)
        paths.append(str(p))
    whole = read_locally(paths, 4000)
    assert "@@BUDGET" not in whole
    found = disc.parse_reads(whole, paths)
    assert all(found[p].ok and found[p].content == bytes([65 + i]) * 1000 for i, p in enumerate(paths))
    cut = read_locally(paths, 2500)
    assert cut.splitlines()[-1] == f"@@BUDGET {paths[2]}"  # two files read, the third would go over
    assert base64.b64encode(b"C" * 1000).decode() not in cut
    assert disc.parse_reads(cut, paths)[paths[3]].state == "budget"


def test_the_read_script_sends_no_more_of_a_file_than_its_size_said(tmp_path: Path) -> None:
    """A file that grows between its stat and its read is cut at the size stat gave (plus one byte: the growth is
    seen), so what the budget counted is what is sent."""
    p = tmp_path / "fifo"
    os.mkfifo(p)  # not a regular file: never read
    assert disc.parse_reads(read_locally([str(p)], 100), [str(p)])[str(p)].state == "notfile"
    answer = "@@F /x file 3 644 cm9vdA== cm9vdA==\n" + base64.b64encode(b"abcd").decode() + "\n"
    assert disc.parse_reads(answer, ["/x"])["/x"].state == "changed while it was read"
