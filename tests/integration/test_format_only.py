"""`same_environment` and `same_unit` against a real systemd (Debian 12's, on a testbed host): what a service
gets from each EnvironmentFile= text, and what `systemctl show` reports of each unit text.

The pure cases are in tests/unit/components/test_systemd_environment.py; here systemd itself decides them.
"""

from __future__ import annotations

import base64

import pytest

from reconciler.components.systemd import environment_of, same_unit
from testbed import Testbed
from tests.support.formats import ENV_CASES, UNIT_TEXT

pytestmark = pytest.mark.testbed

# what systemd puts in every service's environment itself
_OWN = {"INVOCATION_ID", "SYSTEMD_EXEC_PID", "JOURNAL_STREAM", "MANAGERPID", "LANG", "PATH"}


def _put(testbed: Testbed, path: str, content: bytes) -> None:
    testbed.hosts[0].ssh(f"echo {base64.b64encode(content).decode()} | base64 -d > {path}")


def service_environment(testbed: Testbed, content: bytes) -> dict[str, str]:
    """The environment of a transient service reading `content` as its EnvironmentFile=, less systemd's own."""
    _put(testbed, "/tmp/format-only.env", content)
    out = (
        testbed.hosts[0]
        .ssh("systemd-run --quiet --wait --pipe -p EnvironmentFile=/tmp/format-only.env /usr/bin/env -0 | base64 -w0")
        .stdout
    )
    pairs = [item.split("=", 1) for item in base64.b64decode(out).decode().split("\0") if item]
    return {k: v for k, v in pairs if k not in _OWN}


@pytest.mark.parametrize("text", [text for text, _ in ENV_CASES] + ["# note \\\nA=1\n", "A=1\n# x \\\nB=2\n"])
def test_environment_of_is_what_systemd_gives_the_service(testbed: Testbed, text: str) -> None:
    # Debian 12 runs systemd 252: a comment ending in a backslash swallows the next line there
    assert service_environment(testbed, text.encode()) == environment_of(text, comment_continues=True)


VARIANTS = [
    b"# managed\n" + UNIT_TEXT.replace(b"\n\n", b"\n\n\n") + b"; trailing comment\n",
    UNIT_TEXT.replace(b"Restart=on-failure", b"Restart = on-failure   "),
    UNIT_TEXT.replace(b"Restart=on-failure\n", b"") + b"\n\nRestart=on-failure\n",
    UNIT_TEXT.replace(b"Restart=on-failure", b"Restart=always"),
    UNIT_TEXT.replace(b"Description=Kubernetes Scheduler", b"Description=Kubernetes  Scheduler"),
]
PROPERTIES = "Description,ExecStart,EnvironmentFiles,Restart"


def test_same_unit_means_systemctl_show_reports_the_same(testbed: Testbed) -> None:
    host = testbed.hosts[0]
    names = [f"t-format-{i}.service" for i in range(len(VARIANTS) + 1)]
    try:
        for name, text in zip(names, [UNIT_TEXT, *VARIANTS]):
            _put(testbed, f"/etc/systemd/system/{name}", text)
        host.ssh("systemctl daemon-reload")
        shown = host.ssh(f"systemctl show -p {PROPERTIES} -- {' '.join(names)}").stdout.strip().split("\n\n")
        assert len(shown) == len(names)
        for text, props in zip(VARIANTS, shown[1:]):
            if same_unit(UNIT_TEXT, text):
                assert props == shown[0], text
            else:
                assert props != shown[0], text  # these variants all differ for systemd too
    finally:
        host.ssh(f"rm -f {' '.join('/etc/systemd/system/' + n for n in names)}; systemctl daemon-reload", check=False)
