"""spec.etcd_tuning on a `content` File: the two timings read from literal `KEY=<ms>` lines (`content_timings`) and
raised in place (`with_timings`) without touching anything else; what `reconciler import` relies on to write an
EtcdTuning document for an etcd.conf copied byte for byte."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY
from reconciler.spec.etcd_tuning import content_timings, with_timings

HB, EL = HEARTBEAT_KEY, ELECTION_KEY


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"{HB}=100\n{EL}=1000\n", {HB: 100, EL: 1000}),
        (f'{HB}="100"\n{EL}="1000"\n', {HB: 100, EL: 1000}),
        (f"{HB}=100  \n{EL}=1000\t\n", {HB: 100, EL: 1000}),
        (f"# x\n{HB}=100\n\n{EL}=1000", {HB: 100, EL: 1000}),
        (f"{HB}=100\n", {HB: 100}),
        (f"{HB}=100\n{HB}=200\n{EL}=1000\n", {EL: 1000}),  # twice: not tunable in place
        (f"#{HB}=50\n{HB}=100\n{EL}=1000\n", {EL: 1000}),  # also in a comment: not one literal line
        (f"MY_{HB}=5\n{HB}=100\n{EL}=1000\n", {EL: 1000}),  # inside another key's name
        (f"{HB}_OLD=5\n{HB}=100\n{EL}=1000\n", {EL: 1000}),
        (f"{HB}=100\r\n{EL}=1000\r\n", {}),  # CRLF: the lines are not literal `KEY=<ms>` lines
        (f" {HB}=100\n{EL}= 1000\n", {}),
        (f"{HB}='100'\n{EL}=\"1000\n", {}),
        (f"{HB}=100 # ms\n{EL}=1e3\n", {}),
        (f"export {HB}=100\n{EL}=-1\n", {}),
        (f"{HB}=1234567890\n{EL}=\n", {}),
        (f"{HB}=１００\n", {}),  # full-width digits are not [0-9]
        ("", {}),
    ],
)
def test_content_timings(content: str, expected: dict[str, int]) -> None:
    assert content_timings(content) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            f"# head {{ raw }}\n{HB}=100\n  spaced  \n{EL}=1000\ntail é\n",
            f"# head {{ raw }}\n{HB}=250\n  spaced  \n{EL}=2500\ntail é\n",
        ),
        (f'{HB}="100"\t\n{EL}="1000"', f'{HB}="250"\t\n{EL}="2500"'),
        (f"A=1\n{HB}=100\n{EL}=1000\n\n\n", f"A=1\n{HB}=250\n{EL}=2500\n\n\n"),
        (f"{HB}=100\r\n{EL}=1000\r\n", f"{HB}=100\r\n{EL}=1000\r\n"),  # not literal lines: untouched
        (f"#{HB}=100\nMY_{EL}=1000\n", f"#{HB}=100\nMY_{EL}=1000\n"),
        (f"{{% raw %}}{HB}=100\n{EL}=1000{{% endraw %}}", f"{{% raw %}}{HB}=100\n{EL}=1000{{% endraw %}}"),
    ],
)
def test_with_timings_changes_the_two_lines_and_nothing_else(content: str, expected: str) -> None:
    assert with_timings(content, {HB: 250, EL: 2500}) == expected
    assert with_timings(content, {}) == content


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([f"{HB}=100", f'{EL}="1000"', "# c", "", " ", "X=1", f"#{HB}=1", "\t", "é", "\r"]),
        max_size=8,
    ).map("\n".join),
    st.integers(1, 10**9 - 1),
    st.integers(1, 10**9 - 1),
)
def test_with_timings_only_touches_tunable_values(content: str, hb: int, el: int) -> None:
    out = with_timings(content, {HB: hb, EL: el})
    lines_in, lines_out = content.split("\n"), out.split("\n")
    assert len(lines_in) == len(lines_out)
    for a, b in zip(lines_in, lines_out, strict=True):
        if a != b:
            assert re.fullmatch(rf'({HB}|{EL})="?[0-9]+"?[ \t]*', a)
    found = content_timings(content)
    assert content_timings(out) == {k: {HB: hb, EL: el}[k] for k in found}


def test_with_timings_at_the_current_values_is_the_identity() -> None:
    content = f"{HB}=0100\n{EL}=01000\n"
    assert with_timings(content, content_timings(content)) == content
