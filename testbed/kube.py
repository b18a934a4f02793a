"""Which Kubernetes binaries a testbed host runs: the stand-ins (the default) or the real ones.

Owns /usr/local/bin/{kube-apiserver,kube-controller-manager,kube-scheduler} (and kubectl with the real ones) in a
host's root: `install(root, kind)` before boot (Testbed(kube=...), `python -m testbed up --kube real`,
RECONCILER_TESTBED_KUBE=real for a whole run) or on a running host (its root is the overlay this machine sees);
`kind_of(root)` says which are there. "standins": testbed/standins/kube_standin.py under each name, a copy.
"real": v1.20.2 as scripts/build-kube leaves it under /var/cache/reconciler/kube/v1.20.2/bin (or
$RECONCILER_CACHE's), linked: the overlay's lower layer is this machine's `/`, so a host sees the cache at the
same path and three hosts cost no copy of 290 MB.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

KINDS = ("standins", "real")
VERSION = "v1.20.2"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
STANDIN_SOURCE = Path(__file__).parent / "standins" / "kube_standin.py"
BIN_DIR = Path("usr/local/bin")


def real_bin() -> Path:
    return Path(os.environ.get("RECONCILER_CACHE", "/var/cache/reconciler")) / "kube" / VERSION / "bin"


def default_kind() -> str:
    kind = os.environ.get("RECONCILER_TESTBED_KUBE", "standins")
    if kind not in KINDS:
        raise ValueError(f"RECONCILER_TESTBED_KUBE={kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def install(root: Path, kind: str) -> None:
    """Put `kind`'s binaries at /usr/local/bin in `root`, replacing whichever were there."""
    if kind not in KINDS:
        raise ValueError(f"kube binaries {kind!r}: expected one of {', '.join(KINDS)}")
    source = real_bin()
    names = (*COMPONENTS, "kubectl")
    if kind == "real":
        missing = [n for n in names if not (source / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: run `bash scripts/build-kube` first")
    bin_dir = root / BIN_DIR
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = bin_dir / name
        if target.is_symlink() or target.exists():
            target.unlink()
        if kind == "real":
            target.symlink_to(source / name)
        elif name in COMPONENTS:
            shutil.copyfile(STANDIN_SOURCE, target)
            target.chmod(0o755)


def kind_of(root: Path) -> str:
    return "real" if (root / BIN_DIR / "kube-apiserver").is_symlink() else "standins"
