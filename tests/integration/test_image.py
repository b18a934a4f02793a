"""The container image, built and run: Debian's podman, a Debian base image made here with debootstrap (no image
registry needed), the project installed from a wheelhouse in the build context; then `plan` against the
testbed from inside the container, as the image's own unprivileged user, with specs and SSH material mounted
read-only the way the Dockerfile's header says. (Named to run after test_converge, whose first test needs the
testbed still bare.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import Testbed

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]
BASE = "localhost/reconciler-base:bookworm"
IMAGE = "localhost/reconciler:test"
# crun refuses cgroup v1/hybrid machines (CI's); runc with cgroupfs runs anywhere podman does
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
SSH_DIR = Path("/run/reconciler-testbed/ssh")


def sh(*argv: str, timeout: float = 900, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc  # type: ignore[no-any-return]


def debian_mirror() -> str:
    """The Debian mirror this machine's own apt sources name for bookworm (deb822 `.sources` or one-line `.list`):
    the image's base comes from where this machine's packages come from, and no address is written here."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in (p for p in sources if p.is_file() and p.suffix in (".list", ".sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            if path.suffix == ".sources" and "bookworm" in fields.get("Suites", "").split():
                if "main" in fields.get("Components", "").split() and "security" not in fields.get("URIs", ""):
                    return fields["URIs"].split()[0]
            for line in stanza.splitlines():
                words = line.split()
                if path.suffix == ".list" and words[:1] == ["deb"] and "bookworm" in words and "main" in words:
                    return next(w for w in words[1:] if "://" in w)
    raise AssertionError("no Debian bookworm mirror in /etc/apt/sources*: the base image needs one")


def base_image(work: Path) -> None:
    """A minimal Debian bookworm with python3 and venv, from Debian's own packages (once per machine)."""
    if subprocess.run([*PODMAN, "image", "exists", BASE]).returncode == 0:
        return
    rootfs = work / "rootfs"
    sh(
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates",
        "bookworm",
        str(rootfs),
        debian_mirror(),
    )
    for cache in (rootfs / "var/cache/apt/archives", rootfs / "var/lib/apt/lists"):
        shutil.rmtree(cache, ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    sh(*PODMAN, "import", "-", BASE, stdin=tar.stdout)
    assert tar.wait() == 0
    shutil.rmtree(rootfs)


def build_image(work: Path) -> None:
    """The repository's Dockerfile over the tracked files, installing offline from wheels built here."""
    context = work / "context"
    for name in sh("git", "ls-files", cwd=REPO).stdout.splitlines():
        if (REPO / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, context / name)
    wheels = context / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    constraints = str(context / "constraints.txt")  # the versions the tests pass with, as the Dockerfile installs
    sh(*pip, "wheel", "-c", constraints, "-w", str(wheels), str(context))
    sh(*pip, "download", "-c", constraints, "-d", str(wheels), "setuptools")  # the build backend, offline too
    sh(
        *PODMAN,
        "build",
        "-q",
        "--isolation",
        "chroot",
        "--build-arg",
        f"BASE={BASE}",
        "--build-arg",
        "PIP_ARGS=--no-index --find-links wheels",
        "-t",
        IMAGE,
        str(context),
    )


def run_image(
    *args: str, mounts: tuple[str, ...] = (), entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    nofile = os.sysconf("SC_OPEN_MAX")
    argv = [
        *PODMAN,
        "run",
        "--rm",
        "--network",
        "host",
        "--ulimit",
        f"nofile={nofile}:{nofile}",
        "--ulimit",
        "nproc=4096:4096",
    ]  # podman's defaults are above what this machine lets it set
    for mount in mounts:
        argv += ["-v", mount]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return subprocess.run([*argv, IMAGE, *args], capture_output=True, text=True, timeout=300)


def test_the_image_plans_the_testbed_from_inside_as_its_own_user(converged: Testbed, tmp_path: Path) -> None:
    base_image(tmp_path)
    build_image(tmp_path)
    assert run_image("--version").stdout.strip() == "reconciler 0.1.0"
    uid = int(run_image("-u", entrypoint="id").stdout)
    assert uid != 0  # the image runs as `reconciler`, not root

    ssh = tmp_path / "ssh"  # the SSH material as an operator would mount it: the image user's, 0600
    ssh.mkdir()
    for name in ("id_ed25519", "known_hosts"):
        shutil.copy(SSH_DIR / name, ssh / name)
        os.chown(ssh / name, uid, uid)
        os.chmod(ssh / name, 0o600)
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "specs", specs)
    inventory = specs / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace(str(SSH_DIR), "/etc/reconciler/ssh"))

    plan = run_image(
        "plan", "/etc/reconciler/specs", mounts=(f"{specs}:/etc/reconciler/specs:ro", f"{ssh}:/etc/reconciler/ssh:ro")
    )
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]  # 0: nothing to change on any host
    for host in converged.hosts:
        assert re.search(rf"^{host.name}: no changes$", plan.stdout, re.M), plan.stdout
