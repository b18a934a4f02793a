"""The wheel as an operator gets it: built from this tree (and from its sdist, what pip builds from a source
distribution), it holds the `reconciler` package only (no testbed, tests or bench), the observe script, the
example specs and the daemon's unit; installed into a clean virtualenv outside the repository with the constraints
CI uses, `reconciler --version`, `init` and `validate` work from elsewhere, and the unit `init` prints runs that
installed executable.

The build is offline (the development virtualenv's setuptools, no build isolation); the install takes the
dependencies from the package index (pip's cache first), pinned by constraints.txt.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.specs import BUNDLED, REPO

pytestmark = pytest.mark.slow

CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_CONSTRAINT")}


def run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def source_tree(dest: Path) -> Path:
    """The files a clone of this tree would have (tracked, and new ones not ignored), copied to `dest`."""
    names = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file() and not (REPO / name).is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def build(source: Path | str, out: Path, cwd: Path) -> Path:
    """A wheel of `source` (a tree or an sdist), offline, with this virtualenv's setuptools."""
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "-q")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, source, cwd=cwd)
    (wheel,) = out.glob("reconciler-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel built from the tree, and the one built from the tree's sdist."""
    work = tmp_path_factory.mktemp("wheel")
    src = source_tree(work / "src")
    from_tree = build(src, work / "from-tree", cwd=work)
    shutil.rmtree(src / "build", ignore_errors=True)
    sdist_dir = work / "sdist"
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(sdist_dir)!r}))"
    name = run(sys.executable, "-c", code, cwd=src).stdout.split()[-1]
    from_sdist = build(sdist_dir / name, work / "from-sdist", cwd=work)
    return from_tree, from_sdist


@pytest.fixture(scope="module")
def installed(wheels: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv outside the repository with the wheel installed (constraints.txt's versions); its bin/."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    elsewhere = venv.parent
    run(sys.executable, "-m", "venv", venv, cwd=elsewhere)
    pip = (venv / "bin/python", "-m", "pip", "--disable-pip-version-check", "-q")
    run(*pip, "install", "-c", REPO / "constraints.txt", wheels[0], cwd=elsewhere)
    run(*pip, "check", cwd=elsewhere)
    return venv / "bin"


def test_the_wheel_holds_the_package_the_observe_script_the_examples_and_nothing_of_the_test_rig(
    wheels: tuple[Path, Path],
) -> None:
    for wheel in wheels:
        names = zipfile.ZipFile(wheel).namelist()
        tops = {n.split("/")[0] for n in names}
        assert tops == {"reconciler", "reconciler-0.1.0.dist-info"}, f"{wheel.name}: {sorted(tops)}"
        assert not [n for n in names if n.startswith(("testbed/", "tests/", "bench/")) or "/testbed/" in n]
        assert {
            "reconciler/observe/observe.sh",
            "reconciler/observe/programs.sh",
            "reconciler/backup/etcd_snapshot.sh",
            "reconciler/init.py",
        } <= set(names)
        assert "reconciler/examples/reconciler.service" in names
        assert "reconciler-0.1.0.dist-info/licenses/LICENSE" in names
        shipped = {n.removeprefix("reconciler/examples/specs/") for n in names if "/examples/specs/" in n}
        bundled = {str(p.relative_to(BUNDLED)) for p in BUNDLED.rglob("*.y*ml")}
        assert shipped == bundled and "ha/haproxy.yaml" in shipped
        with zipfile.ZipFile(wheel) as z:
            for name in bundled:  # a copy of the tree's specs/, byte for byte: one source
                assert z.read(f"reconciler/examples/specs/{name}") == (BUNDLED / name).read_bytes()
            unit = z.read("reconciler/examples/reconciler.service")
            assert unit == (REPO / "deploy/systemd/reconciler.service").read_bytes()
            signer = z.getinfo("reconciler/examples/signers/cfssl-sign")  # executable, as in the tree
            assert (
                z.read(signer) == (REPO / "deploy/signers/cfssl-sign").read_bytes()
                and signer.external_attr >> 16 & 0o111
            )
    assert sorted(zipfile.ZipFile(wheels[0]).namelist()) == sorted(zipfile.ZipFile(wheels[1]).namelist())


def test_the_metadata_names_the_license_and_bounds_every_dependency(wheels: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(wheels[0]) as z:
        meta = email.parser.Parser().parsestr(z.read("reconciler-0.1.0.dist-info/METADATA").decode())
    assert meta["License-Expression"] == "Apache-2.0" and meta["License-File"] == "LICENSE"
    assert meta["Requires-Python"] == ">=3.11"
    assert "Operating System :: POSIX :: Linux" in meta.get_all("Classifier")
    runtime = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    names = {r.split(">")[0].split("<")[0].strip().lower() for r in runtime}
    assert names == {
        "pydantic",
        "asyncssh",
        "cryptography",
        "structlog",
        "tenacity",
        "pyyaml",
        "jinja2",
        "prometheus-client",
        "watchfiles",
        "httpx",
    }
    assert all(">=" in r and "<" in r.replace("<=", "") for r in runtime), runtime  # a lower and an upper bound
    assert meta["Description-Content-Type"] == "text/markdown" and "## Install" in meta.get_payload()


def test_the_installed_reconciler_works_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    reconciler = installed / "reconciler"
    assert run(reconciler, "--version", cwd=tmp_path).stdout.strip() == "reconciler 0.1.0"
    where = run(installed / "python", "-c", "import reconciler; print(reconciler.__file__)", cwd=tmp_path).stdout
    assert Path(where.strip()).is_relative_to(installed.parent) and not Path(where.strip()).is_relative_to(REPO)
    no_testbed = subprocess.run(
        [installed / "python", "-c", "import testbed"], cwd=tmp_path, env=CLEAN_ENV, capture_output=True, text=True
    )
    assert no_testbed.returncode == 1 and "No module named 'testbed'" in no_testbed.stderr

    specs = tmp_path / "etc/specs"
    init = run(reconciler, "init", specs, cwd=tmp_path)
    written = {str(p.relative_to(specs)): p.read_bytes() for p in specs.rglob("*") if p.is_file()}
    assert written == {str(p.relative_to(BUNDLED)): p.read_bytes() for p in BUNDLED.rglob("*.y*ml")}
    exec_start = next(line for line in init.stdout.splitlines() if line.startswith("ExecStart="))
    assert exec_start.split()[0] == f"ExecStart={reconciler.resolve()}"  # the installed executable
    assert f"--specs {specs} " in exec_start and "/opt/reconciler" not in init.stdout

    validated = run(reconciler, "validate", specs, cwd=tmp_path)
    assert validated.stdout.strip() == f"{specs}: valid (3 host(s))"
    refused = subprocess.run(
        [reconciler, "init", specs], cwd=tmp_path, env=CLEAN_ENV, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "is not an empty directory" in refused.stderr
