"""etcd 3.4 -> 3.5, rolled out from the specs on the testbed's three members (Debian bookworm's 3.4.23 and trixie's
3.5.16, `scripts/fetch-etcd`), with a client writing through every endpoint and a watch on the members serving the
whole time: a member whose new binary does not start is rolled back to 3.4 and the rollout stops (the cluster stays
at 3.4, the other members as they were); once it is fixed the upgrade completes, the cluster's version becomes 3.5,
and going back to 3.4 is refused at plan time. No acknowledged write lost, never fewer than two members serving.

The cluster cannot go back to 3.4 in place: the test ends by building the testbed's etcd anew on 3.4 (data wiped,
`apply --break-glass` of the bundled specs), as later tests expect it."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import Testbed, TestHost
from tests.support.cli import reconciler
from tests.support.daemon import wait_for
from tests.support.serving import Serving, tls, version
from tests.support.specs import BUNDLED as SPECS
from tests.support.tuning import Writer, etcdctl

pytestmark = pytest.mark.testbed

CACHE = Path("/var/cache/reconciler/etcd/v3.5/bin")  # scripts/fetch-etcd; hosts see this machine's / below theirs
OLD, NEW = "/usr/bin/etcd", "/usr/local/lib/etcd-v3.5/etcd"
ROLLOUT_SECONDS = 25  # the bundled 120 s, shortened: the broken member's rollback comes after it
BROKEN = f"""#!/bin/sh
# a broken install: answers --version and --help as 3.5 does, never starts
case " $* " in *" --version "*|*" --help "*) exec {CACHE}/etcd "$@" ;; esac
echo "etcd: cannot start: a broken install" >&2
exit 1
"""


def install(host: TestHost, text: str | None = None) -> None:
    """Put etcd 3.5 at NEW on `host` as an operator would (or `text`, a script, in its place)."""
    if text is None:
        host.ssh(f"install -D -m 0755 {CACHE}/etcd {NEW}")
    else:
        path = host.root / NEW.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)


def point_at(spec_copy: Path, was: str, binary: str) -> Path:
    """Every member's etcd_binary `binary` where it was `was`; the rollout timeout shortened."""
    inventory = spec_copy / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace(f"etcd_binary: {was}", f"etcd_binary: {binary}"))
    etcd = spec_copy / "etcd.yaml"
    etcd.write_text(etcd.read_text().replace("timeoutSeconds: 120", f"timeoutSeconds: {ROLLOUT_SECONDS}"))
    return spec_copy


def rebuild_on_3_4(bed: Testbed) -> None:
    """etcd on 3.4 again, from nothing: a 3.5 cluster's data cannot go back (only a snapshot restore could)."""
    for h in bed.hosts:
        h.ssh("systemctl stop etcd; rm -rf /var/lib/etcd/default.etcd", check=False)
    rebuilt = reconciler("apply", str(SPECS), "--break-glass", "--wait", "120")
    assert rebuilt.code == 0, rebuilt.out + rebuilt.err
    assert reconciler("apply", str(SPECS)).code == 0


def test_etcd_3_4_to_3_5_rolls_back_a_broken_member_then_completes_and_refuses_going_back(
    converged: Testbed, spec_copy: Path
) -> None:
    context = tls(converged)
    before = {h.name: version(h, context) for h in converged.hosts}
    assert all(v and v["etcdserver"].startswith("3.4.") and v["etcdcluster"] == "3.4.0" for v in before.values()), (
        before
    )
    broken, *good = converged.hosts
    specs = point_at(spec_copy, OLD, NEW)
    writer, serving = Writer(converged), Serving(converged)
    writer.start()
    serving.start()
    try:
        for h in good:
            install(h)
        install(broken, BROKEN)

        # 1. The broken member is rolled back to 3.4; the rollout stops; the cluster stays at 3.4.
        first = reconciler("apply", str(specs), "--wait", "60")
        said = first.out + first.err
        assert first.code != 0, said
        assert f"{broken.name}: etcd.service failed on the new config" in said and "rolled back" in said, said
        now = {h.name: version(h, context) for h in converged.hosts}
        was, is_now = before[broken.name], now[broken.name]
        assert was and is_now and is_now["etcdserver"] == was["etcdserver"], now
        assert OLD in (broken.root / "etc/systemd/system/etcd.service").read_text()
        assert all(v and v["etcdcluster"] == "3.4.0" for v in now.values()), now

        # 2. Fixed, the upgrade completes; once every member runs 3.5 the cluster's version follows.
        install(broken)
        second = reconciler("apply", str(specs))
        assert second.code == 0, second.out + second.err

        def at_3_5() -> dict[str, dict[str, str] | None] | None:
            said = {h.name: version(h, context) for h in converged.hosts}
            return said if all(v and v["etcdcluster"] == "3.5.0" for v in said.values()) else None

        after = wait_for("the cluster's version to become 3.5", at_3_5, timeout=60)
        assert after is not None and all(v and v["etcdserver"] == "3.5.16" for v in after.values()), after
    finally:
        writer.stop()
        serving.stop()
    try:
        # 3. Back to 3.4 is refused before anything is written.
        back = reconciler("plan", str(point_at(spec_copy, NEW, OLD)))
        said = back.out + back.err
        assert back.code != 0 and "older than the cluster, which runs at version 3.5" in said, said
        assert "takes a restore from a snapshot" in said
        assert all(NEW in (h.root / "etc/systemd/system/etcd.service").read_text() for h in converged.hosts)

        # No acknowledged write lost; never fewer than two members serving.
        stored = set(etcdctl(converged, "get", "--prefix", "--keys-only", "/tuning-test/").stdout.split())
        missing = set(writer.acked) - stored
        assert len(writer.acked) > 50 and not missing, (len(writer.acked), writer.failed, sorted(missing)[:5])
        assert serving.samples and min(serving.samples) >= 2, serving.samples
        print(
            f"etcd 3.4 -> 3.5: {len(writer.acked)} writes acknowledged, none lost ({writer.failed} refused); "
            f"members serving: never fewer than {min(serving.samples)} in {len(serving.samples)} samples"
        )
    finally:
        rebuild_on_3_4(converged)
