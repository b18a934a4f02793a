"""A host is as untrusted as a spec: whatever reaches the observation parser (observe.facts) in place of the observe
script's output (garbage, truncations, its lines in any order), the answer is a snapshot of the paths asked for or a
ValueError: 13 crafted outputs, then hypothesis. (test_facts_attacks.py attacks the parser with lines crafted to
fool it; test_observe_sh_hostile.py runs the script itself.)
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.observe.facts import parse_observation
from reconciler.observe.snapshot import CertFact, FileFact, HostSnapshot

pytestmark = pytest.mark.host


GARBAGE = [
    "",
    "@@END",
    "@@F /etc/a\n@@END",
    "@@F /etc/a\nnot a header\n@@END",
    "@@F /etc/a\n644 root root x 5\n@@END",
    "@@F /etc/a\n644 root root 1.0 5\n!!!notbase64\n@@END",
    "@@F /etc/a\n@@LINK %%%\n@@END",
    "@@H\n@@END",
    "@@H c x y\n@@END",
    "@@U\nId=a\nMainPID=nope\n@@END",
    "@@U\nId=a\nActiveEnterTimestamp=yesterday\n@@END",
    "@@C /etc/c\nnotAfter=garbage\n@@END",
    "\x00\xff" * 100 + "\n@@END",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_observations_are_a_clear_error_or_a_snapshot(text: str) -> None:
    try:
        snap = parse_observation("h", text, paths=["/etc/a"])
    except ValueError as exc:
        assert "truncated" in str(exc) or "garbled" in str(exc) or "cannot" in str(exc) or str(exc)
    else:
        assert set(snap.files) <= {"/etc/a"}


KNOWN = HostSnapshot(
    "h",
    {"/etc/a": FileFact("/etc/a", True, content=b"abc", size=3, stamp="1:2:3:1.5:1.5")},
    certificates={"/etc/c": CertFact("/etc/c", True, 1.0, stamp="1:2:3:1.5:1.5")},
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "@@F /etc/a",
                "@@F /etc/b",
                "@@MISSING",
                "@@LINK L2V0Yy9zaGFkb3c=",
                "@@OTHER fifo",
                "@@BIG",
                "644 root root 1.5 3",
                "644 root root 1.5 3 1:2:3:1.5:1.5",
                "@@SAME",
                "@@NOW 1000.5",
                "YWJj",
                "@@H c 0 200",
                "@@C /etc/c",
                "same 1:2:3:1.5:1.5",
                "stamp 1:2:3:1.5:1.5",
                "-----BEGIN CERTIFICATE-----",
                "MIIB",
                "missing",
                "error unreadable",
                "@@U",
                "@@UEND",
                "Id=x.service",
                "MainPID=1",
                "@@ERR unreadable",
                "@@END",
                "",
            ]
        )
        | st.text(max_size=40),
        max_size=30,
    )
)
def test_any_observation_output_parses_or_is_a_value_error(lines: list[str]) -> None:
    try:
        snap = parse_observation("h", "\n".join(lines), paths=["/etc/a"], certificates=["/etc/c"], known=KNOWN)
    except ValueError:
        return
    assert set(snap.files) <= {"/etc/a"}
