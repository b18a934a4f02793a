"""The seed's HA front (specs/ha/) on the testbed: HAProxy on every master, keepalived holding 198.18.0.100, clients
sending requests through the VIP the whole time (testbed.ha.Traffic, on the HTTP and the TLS frontend): an apiserver
whose etcd stops is marked down by the TLS backend's own /healthz check (a handshake-only check would keep it up),
the VIP moves when its holder's HAProxy is stopped or killed (at once: the unit tells keepalived), never to a
host whose own check fails, and when the holder is cut off (its link down, or partitioned with its link up),
exactly one host holds it afterwards, and an edit to HAProxy's config rolls out (reloads) without a failed
request. Hardened (issue 26): the seed's insecure port is refused on the VIP unless the operator opts in (the
module's specs opt in: its clients use that port), HAProxy serves as the haproxy user in a chroot, adverts from a
stranger or over a router do not move the VIP, and a cold start gives the VIP only to a host whose HAProxy
answers."""

from __future__ import annotations

import shlex
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from testbed import Testbed, TestHost
from testbed.ha import VIP, VIP_TLS_URL, VIP_URL, Traffic, enable_ha, holders, partitioned, send_adverts
from tests.support.certs import admin_specs, managed_specs, put_back
from tests.support.cli import reconciler
from tests.support.daemon import wait_for
from tests.support.rotation import rejections, rotation
from tests.support.specs import BUNDLED as SPECS

pytestmark = pytest.mark.testbed


def holder(bed: Testbed) -> TestHost:
    def one() -> list[str]:
        found = holders(bed)
        return found if len(found) == 1 else []

    return bed.host(wait_for("exactly one VIP holder", one)[0])


def all_healthy(spec_dir: Path) -> bool:
    return reconciler("check", str(spec_dir), timeout=120).code == 0


def fail_haproxy_on_holder(bed: Testbed, command: str) -> tuple[TestHost, list[str]]:
    """Run `command` (it stops or kills HAProxy) on the VIP holder with clients sending through the VIP; return
    the old holder and the hosts holding the VIP once it moved and requests succeed again."""
    old = holder(bed)
    with Traffic() as traffic:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5)
        began = time.monotonic()
        old.ssh(command)
        moved = wait_for("the VIP on another host", lambda: [h for h in holders(bed) if h != old.name])
        assert traffic.wait_success_after(began) is not None
    return old, moved


def journal_after(host: TestHost, unit: str) -> Callable[[], str]:
    """A function that returns what `unit` logged on `host` since now (from the journal's cursor)."""
    out = host.ssh(f"journalctl -u {unit} -n 1 -o cat --no-pager --show-cursor", check=False).stdout
    cursor = next((line[len("-- cursor: ") :] for line in out.splitlines() if line.startswith("-- cursor: ")), "")
    after = f"--after-cursor={shlex.quote(cursor)}" if cursor else ""
    return lambda: host.ssh(f"journalctl -u {unit} -o cat --no-pager {after}", check=False).stdout


VIP_CHECK_URL = f"http://{VIP}:8404/apiserver/healthz"  # specs/ha's vip check: an apiserver's /healthz only


def through_vip(url: str = VIP_URL) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (the testbed's VIP)
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def front(converged: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    spec_dir = tmp_path_factory.mktemp("ha") / "specs"
    shutil.copytree(SPECS, spec_dir)
    enable_ha(spec_dir)
    result = reconciler("apply", str(spec_dir))
    assert result.code == 0, result.out + result.err
    assert "vip   apiserver" in result.out and "held here" in result.out
    holder(converged)
    yield spec_dir
    for h in converged.hosts:  # the HA front off again; the bundled specs do not manage it
        h.ssh("systemctl disable --now keepalived haproxy", check=False)
    result = reconciler("apply", str(SPECS))
    assert result.code == 0, result.out + result.err


def test_an_apiserver_whose_etcd_stops_is_taken_out_without_a_failed_request(front: Path, converged: Testbed) -> None:
    victim = next(h for h in converged.hosts if h.name != holder(converged).name)
    at = holder(converged)
    log = "journalctl -u haproxy -o cat --no-pager -n 50"
    with Traffic() as traffic, Traffic(url=VIP_TLS_URL) as tls:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5 and tls.sent() > 5)
        began = time.monotonic()
        victim.ssh("systemctl stop etcd")
        # the TLS backend's line: its check is GET /healthz through TLS, so a 500 behind a good handshake is down
        wait_for(
            f"HAProxy on {at.name} to mark {victim.name}'s secure apiserver down",
            lambda: f"kube-apiserver/{victim.name} is DOWN" in at.ssh(log, check=False).stdout,
        )
        down = time.monotonic()
        time.sleep(1)  # requests keep flowing past the moment it went down
    try:
        # the HTTP frontend retries a 500 on another apiserver: nothing fails; the TLS one passes bytes through and
        # cannot, so its requests may fail until the check marks the apiserver down, and none after
        assert traffic.sent(began) > 20 and traffic.failed(began) == [], traffic.failed(began)[:5]
        assert tls.sent(down) > 10 and tls.failed(down) == [], tls.failed(down)[:5]
    finally:
        victim.ssh("systemctl start etcd")
        wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)


def test_the_vip_moves_when_its_holders_haproxy_dies_and_is_not_taken_back(front: Path, converged: Testbed) -> None:
    old, moved = fail_haproxy_on_holder(converged, "systemctl stop haproxy")
    assert moved != [old.name]
    # the unit's ExecStopPost told keepalived (its track_file): FAULT before the URI check could fail twice
    log = old.ssh("journalctl -u keepalived -o cat --no-pager -n 30").stdout
    fault = log.rindex("Entering FAULT STATE")
    assert "VRRP_Script(haproxy) failed" not in log[:fault], log
    # the new holder fails too while the old one's check still fails: the VIP goes to the third host, not back
    second = converged.host(moved[0])
    second.ssh("systemctl stop haproxy")
    third = wait_for("the VIP on the third host", lambda: [h for h in holders(converged) if h != second.name])
    assert third == [next(h.name for h in converged.hosts if h.name not in (old.name, second.name))]
    second.ssh("systemctl start haproxy")
    old.ssh("systemctl start haproxy")  # healthy again: neither takes the VIP back (nopreempt)
    wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)
    assert holders(converged) == third


def test_the_vip_moves_when_its_holders_haproxy_is_killed(front: Path, converged: Testbed) -> None:
    """SIGKILL: systemd starts HAProxy again at once (Restart=always), but its ExecStopPost has run first: the VIP
    goes to a host whose HAProxy is up (the URI check alone would not have seen the gap)."""
    old, moved = fail_haproxy_on_holder(converged, "systemctl kill --signal=SIGKILL haproxy")
    assert len(moved) == 1 and moved != [old.name]
    wait_for(
        f"HAProxy on {old.name} started again",
        lambda: old.ssh("systemctl is-active haproxy", check=False).returncode == 0,
    )
    wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)
    assert holders(converged) == moved  # and not taken back


def test_the_vip_moves_when_its_holder_is_cut_off_and_one_host_holds_it_after(front: Path, converged: Testbed) -> None:
    old = holder(converged)
    with Traffic() as traffic:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5)
        began = time.monotonic()
        old.ssh("nohup sh -c 'ip link set host0 down; sleep 6; ip link set host0 up' >/dev/null 2>&1 &")
        wait_for("the VIP on another host", lambda: [h for h in holders(converged) if h != old.name])
        assert traffic.wait_success_after(began) is not None
    wait_for(f"{old.name} back on the network", lambda: old.port_open(22), timeout=60)
    wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)
    for _ in range(3):  # exactly one holder, seen on every host, and staying so
        assert len(holders(converged)) == 1, holders(converged)
        time.sleep(1)


def test_a_partitioned_holder_keeps_the_vip_alone_and_one_host_holds_it_when_it_returns(
    front: Path, converged: Testbed
) -> None:
    old = holder(converged)
    with Traffic() as traffic:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5)
        began = time.monotonic()
        with partitioned(old):  # its link stays up: its keepalived sees no fault and keeps the VIP, unheard
            wait_for("the VIP on a reachable host", lambda: [h for h in holders(converged) if h != old.name])
            assert traffic.wait_success_after(began) is not None
            assert (old.root / "etc/keepalived/keepalived.conf").exists()
        back = time.monotonic()
        wait_for(f"{old.name} back on the network", lambda: old.port_open(22), timeout=60)
        # the two holders hear each other again: one gives the VIP up, and the clients follow the one left
        wait_for("exactly one holder", lambda: len(holders(converged)) == 1, timeout=30)
        assert traffic.wait_success_after(back) is not None
    wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)
    for _ in range(3):  # exactly one holder, seen on every host, and staying so
        assert len(holders(converged)) == 1, holders(converged)
        time.sleep(1)


def test_an_haproxy_edit_rolls_out_by_reload_without_a_failed_request(front: Path, converged: Testbed) -> None:
    cfg = front / "ha" / "haproxy.yaml"
    cfg.write_text(cfg.read_text().replace("timeout client 60s", "timeout client 90s"))
    with Traffic() as traffic, Traffic(url=VIP_TLS_URL) as tls:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5 and tls.sent() > 5)
        began = time.monotonic()
        result = reconciler("apply", str(front))
        time.sleep(1)
    assert result.code == 0, result.out + result.err
    assert result.out.count("reload haproxy.service") == 3 and "restart haproxy" not in result.out
    assert traffic.sent(began) > 20 and traffic.failed(began) == [], traffic.failed(began)[:5]
    assert tls.sent(began) > 20 and tls.failed(began) == [], tls.failed(began)[:5]
    assert all("timeout client 90s" in (h.root / "etc/haproxy/haproxy.cfg").read_text() for h in converged.hosts)


def test_haproxy_serves_as_the_haproxy_user_in_a_chroot(front: Path, converged: Testbed) -> None:
    """Root only binds the ports: the master process keeps root (and the unit's master socket), the worker that
    serves runs as haproxy in /var/lib/haproxy; the unit's ExecStartPost (as root) still told keepalived."""
    for h in converged.hosts:
        master = h.ssh("systemctl show -p MainPID --value haproxy").stdout.strip()
        workers = h.ssh(f"pgrep -P {master} -x haproxy").stdout.split()
        assert workers, f"{h.name}: no HAProxy worker under {master}"
        for pid in workers:
            assert h.ssh(f"ps -o user= -p {pid}").stdout.strip() == "haproxy"
            assert h.ssh(f"readlink /proc/{pid}/root").stdout.strip() == "/var/lib/haproxy"
        assert h.ssh(f"ps -o user= -p {master}").stdout.strip() == "root"
        assert h.ssh("cat /run/haproxy-stopped").stdout.strip() == "0"
        ask = (
            'python3 -c "import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(10); '
            "s.connect('/run/haproxy-master.sock'); "
            "s.sendall(b'show proc\\n'); s.shutdown(socket.SHUT_WR); print(s.makefile().read())\""
        )
        assert "worker" in h.ssh(ask).stdout  # the master CLI answers


def test_the_insecure_port_is_refused_on_the_vip_unless_the_operator_opts_in(front: Path, converged: Testbed) -> None:
    inventory = front / "inventory.yaml"
    opted_in = inventory.read_text()
    docs = list(yaml.safe_load_all(opted_in))
    for doc in docs:
        del doc["spec"]["vars"]["lb_insecure_bind"]  # docs/ha.md's defaults
    inventory.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    try:
        result = reconciler("apply", str(front))
        assert result.code == 0, result.out + result.err
        assert result.out.count("reload haproxy.service") == 3, result.out
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((VIP, 8081), timeout=5).close()
        for h in converged.hosts:  # on each master itself it serves, as the seed's own port does
            assert h.ssh("curl -sf -o /dev/null http://127.0.0.1:8081/healthz", check=False).returncode == 0
        # the TLS frontend and the vip check (the monitor port's /apiserver/healthz) need no opt-in
        assert through_vip(VIP_CHECK_URL)
        assert all_healthy(front)
    finally:
        inventory.write_text(opted_in)
        result = reconciler("apply", str(front))
        assert result.code == 0, result.out + result.err
    assert wait_for("the insecure port on the VIP again (opted in)", through_vip)


def test_adverts_from_a_stranger_or_over_a_router_do_not_move_the_vip(front: Path, converged: Testbed) -> None:
    """VRRPv3 adverts claiming the VIP with priority 254 sent to the holder: from the machine's side of the bridge
    (an address that is no peer), then with a peer's address forged but a TTL of 254 (routed). Without the checks
    the holder steps down for either (and stays down while they come)."""
    at = holder(converged)
    peer = next(h for h in converged.hosts if h.name != at.name)
    log = journal_after(at, "keepalived")
    send_adverts(at.address, until=lambda: "not a unicast peer" in log() or "higher priority" in log())
    assert "unicast source address 198.18.0.1 not a unicast peer" in log(), log()
    send_adverts(at.address, src=peer.address, ttl=254, until=lambda: "TTL/HL" in log() or "higher priority" in log())
    assert "TTL/HL 254 not in range 255 - 255" in log(), log()
    assert "higher priority" not in log() and "Entering BACKUP STATE" not in log(), log()
    assert holders(converged) == [at.name]


ANSWERS_ONCE = """
import socket
listening = socket.socket()
listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listening.bind(("127.0.0.1", 8404))
listening.listen(64)
held = []
while True:  # the first request is answered 200; every later one is accepted and never answered (a hang)
    conn, _ = listening.accept()
    held.append(conn)
    if len(held) == 1:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
        conn.close()
    with open("/run/answers-once.count", "w") as out:
        out.write(str(len(held)))
"""


def test_a_cold_start_gives_the_vip_only_to_a_host_whose_haproxy_answers(front: Path, converged: Testbed) -> None:
    """Every keepalived started at once, as at boot, while on the preferred host (priority 150) HAProxy's unit has
    not said it is ready (/run as empty as after a boot) and its monitor port answers once, then hangs (a HAProxy
    that dies or hangs as it starts). Without init_fail one answer made its check good, the missing file was
    created as "ready", and it took the VIP ~1.7 s after the start, before two failed checks took it away."""
    first = converged.hosts[0]
    for h in converged.hosts:
        h.ssh("systemctl stop keepalived")
    wait_for("no VIP holder", lambda: not holders(converged))
    (first.root / "root/answers_once.py").write_text(ANSWERS_ONCE)
    first.ssh("systemctl stop haproxy && rm -f /run/haproxy-stopped /run/answers-once.count")
    first.ssh("systemd-run --unit=answers-once /usr/bin/python3 /root/answers_once.py")
    count = "cat /run/answers-once.count 2>/dev/null || echo 0"
    try:
        wait_for("the stand-in listening", lambda: first.ssh("ss -Hltn 'sport = :8404'").stdout.strip())
        log = journal_after(first, "keepalived")
        for h in converged.hosts:
            h.ssh("systemctl start keepalived")
        # two checks came after its one answer (both hung): a MASTER it was going to take, it has taken by now
        wait_for("keepalived's third check", lambda: int(first.ssh(count).stdout.strip() or 0) >= 3, timeout=30)
        new = holder(converged)
        assert new.name != first.name
        assert through_vip()  # the holder's HAProxy answers
        assert "Entering MASTER STATE" not in log(), log()
    finally:
        first.ssh("systemctl stop answers-once; systemctl reset-failed answers-once", check=False)
        first.ssh("systemctl start haproxy")
        wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)


def test_certificates_renewed_on_every_master_with_no_failed_request_through_the_vip(
    front: Path, converged: Testbed, tmp_path: Path
) -> None:
    """kubernetes.pem (the apiservers' serving certificate, etcd's) renewed on the three masters, etcd and the
    apiserver restarted on each in turn, while clients send through the VIP's HTTP and TLS frontends: no request
    fails through either. The TLS frontend passes bytes through and cannot ask another apiserver again: without the
    drain, while a master's etcd restarts its apiserver answers /healthz with 500 until HAProxy's check marks it
    down (~1 s; 12-15 of ~300 requests here); with it (the haproxy Unit's `balancer`), each master's server is out
    of every HAProxy before its units restart and back once its apiserver is ready."""
    specs = tmp_path / "specs"
    shutil.copytree(front, specs)
    managed_specs(specs, converged.pki_dir)
    try:
        with Traffic() as traffic, Traffic(url=VIP_TLS_URL) as tls:
            wait_for("traffic through the VIP", lambda: traffic.sent() > 5 and tls.sent() > 5)
            began = time.monotonic()
            renewed = reconciler("certs", "renew", str(specs))
            after = time.monotonic()
            wait_for("requests past the renewal", lambda: traffic.sent(after) > 10 and tls.sent(after) > 10)
        said = renewed.out + renewed.err
        assert renewed.code == 0 and renewed.out.count("presents the new certificate") == 9, said
        for h in converged.hosts:  # out of the three HAProxies, and back
            assert f"{h.name}: drained from HAProxy on master-1, master-2, master-3" in said, said
            assert f"{h.name}: put back in HAProxy on master-1, master-2, master-3" in said, said
        assert traffic.sent(began) > 20 and traffic.failed(began) == [], traffic.failed(began)[:5]
        wall = time.time() - time.monotonic()  # the failures' wall-clock times, beside the renewal's own
        failed = [(time.strftime("%H:%M:%S", time.gmtime(wall + r[0])), r[2]) for r in tls.failed(began)]
        assert tls.sent(began) > 20 and failed == [], (failed[:5], said[-6000:])
        print(
            f"renewal through the VIP: {traffic.sent(began)} HTTP requests, 0 failed; {tls.sent(began)} through TLS, "
            "0 failed"
        )
    finally:
        put_back(converged, specs)


def test_the_ca_is_rotated_with_no_failed_request_through_the_vip_and_no_certificate_refused(
    front: Path, converged: Testbed, tmp_path: Path
) -> None:
    """`certs rotate-ca` trust, reissue, drop on the three masters (kubernetes.pem from the new CA), while clients send
    through the VIP's HTTP and TLS frontends: no request fails through either, no etcd member refuses a peer's
    certificate, and the `vip` check (an apiserver's /readyz through the VIP, its certificate verified by HAProxy
    with ca.pem) passes at the end: HAProxy reads its ca-file only as it starts or reloads, and the haproxy Unit's
    reloadOn names the bundle (Certificate/haproxy-ca), so the trust and drop phases reload it."""
    specs = tmp_path / "specs"
    shutil.copytree(front, specs)
    admin_specs(specs, converged.pki_dir)  # kubernetes.pem and the admin's certificate: every leaf is reissued
    since = time.time()
    with rotation(converged, tmp_path) as r:
        with Traffic() as traffic, Traffic(url=VIP_TLS_URL) as tls:
            wait_for("traffic through the VIP", lambda: traffic.sent() > 5 and tls.sent() > 5)
            began = time.monotonic()
            said = ""
            for phase in ("trust", "reissue", "drop"):
                done = reconciler("certs", "rotate-ca", phase, str(specs), *r.args)
                said += done.out + done.err
                assert done.code == 0, said
            after = time.monotonic()
            wait_for("requests past the rotation", lambda: traffic.sent(after) > 10 and tls.sent(after) > 10)
        assert said.count("haproxy.service reloaded (/etc/kubernetes/ssl/ca.pem changed)") == 6, said
        assert said.count("presents the new certificate") == 9 and said.count(": installed (serial") == 6, said
        wall = time.time() - time.monotonic()
        failed = [
            (name, time.strftime("%H:%M:%S", time.gmtime(wall + f[0])), f[2])
            for name, t in (("HTTP", traffic), ("TLS", tls))
            for f in t.failed(began)
        ]
        assert traffic.sent(began) > 20 and tls.sent(began) > 20 and failed == [], (failed[:5], said[-6000:])
        rejected = rejections(converged, since)
        assert not any(rejected.values()), {h: out[:3000] for h, out in rejected.items() if out}
        wait_for("every check healthy, the vip's included", lambda: all_healthy(specs), timeout=30)
        print(
            f"CA rotated through the VIP: {traffic.sent(began)} HTTP requests, {tls.sent(began)} through TLS, 0 failed"
        )
    # the testbed's own CA put back by hand (tests.support.rotation): ca.pem is newer than HAProxy's last reload,
    # so the plan reloads it on each host, as the daemon would (reloadOn names its Certificate), and nothing else
    applied = reconciler("apply", str(front))
    assert applied.code == 0, applied.out + applied.err
    assert applied.out.count("reload haproxy.service") == 3 and "restart haproxy" not in applied.out, applied.out
    wait_for("every check healthy on the testbed's own CA again", lambda: all_healthy(front), timeout=60)
