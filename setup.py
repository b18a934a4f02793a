"""The build's one step beyond pyproject.toml: the wheel carries the example specs, the daemon's systemd unit and
the external signers' wrappers.

specs/ (what the testbed, the tests and the README use), deploy/systemd/reconciler.service and deploy/signers/
stay their one source in the tree; building copies them into the package as reconciler/examples/specs/,
reconciler/examples/reconciler.service (where `reconciler init` reads them) and reconciler/examples/signers/. An editable install (a checkout)
has no copy: `reconciler init` reads them where they are.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TREE = Path(__file__).resolve().parent
SPECS = TREE / "specs"
UNIT = TREE / "deploy/systemd/reconciler.service"
SIGNERS = TREE / "deploy/signers"  # external signers' wrappers (a Certificate's renew.signCommand)


class BuildPyWithExamples(build_py):
    """build_py, then the examples copied into the built package (not for an editable install)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        examples = Path(self.build_lib, "reconciler", "examples")
        shutil.rmtree(examples, ignore_errors=True)
        for source in sorted(SPECS.rglob("*")):
            if source.is_file() and source.suffix in (".yaml", ".yml") and not source.is_symlink():
                target = examples / "specs" / source.relative_to(SPECS)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        shutil.copyfile(UNIT, examples / UNIT.name)
        (examples / "signers").mkdir()
        for signer in sorted(SIGNERS.iterdir()):
            shutil.copy(signer, examples / "signers" / signer.name)  # its mode too: executable


setup(cmdclass={"build_py": BuildPyWithExamples})
