"""The observation parser (observe.facts), attacked: lines a host could print to fake a check, a file's facts or
its header, and errors that would quote the host (the hostile-host review of b861037 and c08d5ce; the attacks the
observe script itself meets are in test_observe_sh_attacks.py).

A plain test asserts the safe behaviour an attack failed to break (a broken one would be marked
xfail(strict=True): see observe/test_observe_sh_attacks.py). The letter in a test's name (A..J) matches the
review report."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from reconciler.errors import TransientHostError
from reconciler.observe.facts import ObservationError, observe_host, parse_observation
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredCheck
from reconciler.transport.base import CommandResult
from tests.support.hostile_files import CANARY, SECRET, desired

pytestmark = pytest.mark.host


def test_a_spoofed_duplicate_check_line_never_makes_a_failing_check_healthy() -> None:
    check = DesiredCheck("etcd", 2.0, url="https://127.0.0.1:2379/health")
    snap = parse_observation("h", "@@H etcd 7 000\n@@H etcd 0 200\n@@END\n", [check])
    assert not snap.healthy  # all() over every result line (but /status keeps the last one per name: see report)


def test_lines_after_a_units_block_never_make_a_failing_check_healthy() -> None:
    """What a systemctl value carrying a newline and '@@END' could append (no non-root channel found for it)."""
    check = DesiredCheck("etcd", 2.0, url="https://127.0.0.1:2379/health")
    text = (
        "@@H etcd 7 000\n@@U\nId=etcd.service\nFragmentPath=/x\n@@END\n@@H etcd 0 200\n"
        "@@F /etc/a\n644 root root 1.0 5\nd2FudAo=\n@@END\n"
    )
    snap = parse_observation("h", text, [check], paths=["/etc/b"])
    assert not snap.healthy and "/etc/a" not in snap.files


@pytest.mark.parametrize(
    "text",
    [
        "@@F /etc/a\n644 u g 1.0 5\n@@BIG\n@@END\n",  # BIG for a small file
        "@@F /etc/a\n644 u g 1.0 0\nd2FudAo=\n@@END\n",  # more content than its size
        "@@F /etc/a\n644 u g 1.0 5\nd2Fu\n@@END\n",  # less content than its size
        "@@F /etc/a\n@@OTHER file\n@@END\n",  # a type word that is not a regular file
    ],
)
def test_crafted_file_facts_never_look_like_the_declared_file(text: str) -> None:
    """(A header with size -1 does: see the report; only a host's root can print one.)"""
    snap = parse_observation("h", text, paths=["/etc/a"])
    assert [a.kind for a in plan_host(desired(["/etc/a"], b"want\n", 0o644), snap).actions] == [Kind.WRITE]


def test_an_error_after_the_stat_line_is_an_observation_error() -> None:
    """dd failing after the header was printed (an unreadable file): the host's pass fails, nothing is taken for a match."""
    with pytest.raises(ObservationError, match="cannot read /etc/a"):
        parse_observation("h", "@@F /etc/a\n644 u g 1.0 5\n@@ERR unreadable\n@@END\n", paths=["/etc/a"])


@pytest.mark.parametrize(
    "header",
    [
        "644 root wheel group 1.0 5",
        "644 root root 1.0",
        "0x1a4 root root 1.0 5",
        f"644 {CANARY} root nan 5",
        "644 root root 1.0 99999999999999999999999999",
    ],
)
def test_garbled_file_headers_are_an_observation_error_that_never_quotes_them(header: str) -> None:
    text = f"@@F /etc/a\n{header}\n{base64.b64encode(CANARY.encode()).decode()}\n@@END\n"
    try:
        snap = parse_observation("h", text, paths=["/etc/a"])
    except ObservationError as exc:
        assert CANARY not in str(exc) and header not in str(exc)
    else:  # parsed: then it must not be taken for a match of anything but exactly that content
        assert not plan_host(desired(["/etc/a"]), snap).empty


async def test_G_a_failed_observation_error_never_quotes_the_host() -> None:
    class Garbage:
        async def run(
            self, argv: Any, *, input: bytes | None = None, timeout: float | None = None, max_output: int = 0
        ) -> CommandResult:
            return CommandResult(
                tuple(argv), 0, b"@@F /etc/a\n@@LINK !!!\n@@END\n", f"\x1b]0;{CANARY}\x07{SECRET.decode()}".encode()
            )

        async def close(self) -> None:
            pass

    with pytest.raises(TransientHostError) as err:
        await observe_host(Garbage(), desired(["/etc/a"]), with_checks=False)
    assert "\x1b" not in str(err.value) and CANARY not in str(err.value)
