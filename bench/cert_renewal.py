"""Certificate renewal on the testbed: kubernetes.pem (etcd's server and peer certificate, the apiserver's serving and
etcd client certificate) renewed on the three masters by `reconciler certs renew`, and by hand as an operator types
it (per master: a key and a CSR made there with openssl, the CSR copied here, signed with `openssl x509 -req` and the
names of the current certificate, the certificate copied back, the pair moved into place, etcd and the apiserver
restarted, etcd's health waited for), side by side: total time, time per host, the commands a person types, and the
writes a client putting keys through every etcd endpoint saw fail meanwhile.

    .venv/bin/python -m bench.cert_renewal [--rounds 3]   # root; boots the testbed

Medians and ratios go to stdout and bench/cert-renewal-last.json. Each round ends with the testbed's own pair put back
on every master, one at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import Testbed  # noqa: E402
from tests.support.certs import SSL, managed_specs, put_back  # noqa: E402
from tests.support.tuning import Writer, etcdctl  # noqa: E402

SPECS = REPO / "specs"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reconciler {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def healthy(bed: Testbed, host: object) -> None:
    deadline = time.monotonic() + 120
    while etcdctl(bed, "endpoint", "health", endpoints=[host]).returncode != 0:  # type: ignore[list-item]
        if time.monotonic() > deadline:
            raise SystemExit(f"{host}: etcd not healthy within 120 s")
        time.sleep(0.1)


def by_reconciler(bed: Testbed, specs: Path) -> tuple[float, int]:
    began = time.monotonic()
    cli("certs", "renew", str(specs))
    return time.monotonic() - began, 1


def by_hand(bed: Testbed, work: Path) -> tuple[float, int]:
    """Per master, the commands an operator types (each ssh/scp/openssl line counts one)."""
    pki, typed = bed.pki_dir, 0
    began = time.monotonic()
    for h in bed.hosts:
        h.ssh(f"cd {SSL} && openssl genrsa -out new-key.pem 2048 2>/dev/null && chmod 600 new-key.pem")
        h.ssh(f"cd {SSL} && openssl req -new -key new-key.pem -subj '/O=k8s/CN=kubernetes' -out new.csr")
        csr = work / f"{h.name}.csr"
        csr.write_bytes(h.ssh(f"cat {SSL}/new.csr").stdout.encode())  # scp master:new.csr .
        names = h.ssh(f"openssl x509 -noout -ext subjectAltName -in {SSL}/kubernetes.pem | tail -1").stdout.strip()
        ext = work / f"{h.name}.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={names.replace('IP Address:', 'IP:')}\n"
        )
        cert = work / f"{h.name}.pem"
        subprocess.run(
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.pem"), "-CAkey", str(pki / "ca-key.pem"),
             "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run([*h.ssh_args(), f"cat > {SSL}/new.pem"], input=cert.read_bytes(), check=True)  # scp
        h.ssh(f"cd {SSL} && mv new-key.pem kubernetes-key.pem && mv new.pem kubernetes.pem && rm -f new.csr")
        h.ssh("systemctl restart etcd kube-apiserver")
        healthy(bed, h)  # etcdctl endpoint health, until it says so
        typed += 8
    return time.monotonic() - began, typed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bed = Testbed(n=3)
    bed.start()
    work = Path(tempfile.mkdtemp(prefix="bench-certs-"))
    specs = work / "specs"
    shutil.copytree(SPECS, specs)
    managed_specs(specs, bed.pki_dir)
    ours: list[float] = []
    hand: list[float] = []
    failed = {"reconciler": 0, "by_hand": 0}
    typed = 0
    try:
        cli("apply", str(SPECS))
        for r in range(args.rounds):
            for way in ("reconciler", "by_hand"):
                writer = Writer(bed)
                writer.start()
                try:
                    seconds, n = by_reconciler(bed, specs) if way == "reconciler" else by_hand(bed, work)
                finally:
                    writer.stop()
                failed[way] += writer.failed
                (ours if way == "reconciler" else hand).append(seconds)
                typed = n if way == "by_hand" else typed
                put_back(bed, specs)
            print(f"round {r + 1}: reconciler {ours[-1]:.1f} s, by hand {hand[-1]:.1f} s", flush=True)
    finally:
        bed.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "renewal_3_masters_reconciler_s": round(statistics.median(ours), 2),
        "renewal_3_masters_by_hand_s": round(statistics.median(hand), 2),
        "per_host_reconciler_s": round(statistics.median(ours) / 3, 2),
        "per_host_by_hand_s": round(statistics.median(hand) / 3, 2),
        "time_ratio_hand_over_reconciler": round(statistics.median(hand) / statistics.median(ours), 2),
        "commands_typed_reconciler": 1,
        "commands_typed_by_hand": typed,
        "failed_writes_reconciler": failed["reconciler"],
        "failed_writes_by_hand": failed["by_hand"],
        "rounds": args.rounds,
    }
    print(json.dumps(results, indent=2))
    (REPO / "bench" / "cert-renewal-last.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
