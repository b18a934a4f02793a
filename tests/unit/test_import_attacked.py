"""`reconciler import` attacked (issue 26, items 4, 9 and 13): secrets it copies, a host with too much to read, an
`OUT` that appears while it runs, and masters built as the seed's guide builds them (token.csv left 0644).

The hosts are `Box`es (tests/unit/test_adopt.py: in-memory hosts answering import's read-only scripts); where
import then plans, each Box has a twin `SimHost` (reconciler.transport.fake) holding the same files and units, so
import runs end to end, through the real CLI, its spec loader and its planner, with no SSH and no testbed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from reconciler import cli
from reconciler.adopt import discover as disc
from reconciler.adopt.describe import describe
from reconciler.adopt.emit import spec_files
from reconciler.adopt.importer import run_import
from reconciler.adopt.secrets import env_file_secrets, unit_file_secrets
from reconciler.engine.converge import plan_all
from reconciler.errors import HostError
from reconciler.plan.actions import Kind
from reconciler.secrets import secret_name
from reconciler.spec.desired import Target
from reconciler.spec.isolate import load_desired
from reconciler.transport import session as session_module
from reconciler.transport.base import MAX_OUTPUT, CommandResult, Connection
from reconciler.transport.fake import FakeConnection, SimFile, SimHost, SimUnit
from reconciler.transport.session import Session
from tests.support.boxes import KUBE_DIR, TOKEN, Box, BoxConnection, fleet, found_hosts, infos

UNIT_DIR = "/etc/systemd/system"
VAULT = "s.Zq8SECRETvaultTOKEN4711"
AWS = "wJalrXUtnFEMI+K7MDENG+bPxRfiCYSECRETKEY"
APP_UNIT = f"{UNIT_DIR}/app.service"
DROP_IN = f"{UNIT_DIR}/app.service.d/10-vault.conf"
AWS_ENV = "/etc/app/aws.env"
PLAIN_ENV = "/etc/app/plain.env"


# --- twins: a Box for import's scripts, a SimHost with the same files for plan ------------------------------------


def sim_of(box: Box) -> SimHost:
    """A SimHost holding what the Box holds; every unit active and enabled, started after its files were written."""
    sim = SimHost(box.name)
    written = time.time() - 100
    for path, content in box.files.items():
        mode, owner, group = box.stats.get(path, (0o644, "root", "root"))
        sim.files[box.real(path)] = SimFile(content, mode, owner, group, mtime=written, ctime=written)
    sim.dirs.update(box.dirs)
    for unit, path in box.units.items():
        assert box.real(path) == f"{UNIT_DIR}/{unit}", "a SimHost keeps its units in /etc/systemd/system"
        sim.units[unit] = SimUnit(True, True, time.time() - 50, written, pid=100 + len(sim.units))
    return sim


class Twin(FakeConnection):
    """Import's own scripts go to the Box, everything else (plan's observation) to its SimHost."""

    def __init__(self, box: Box, sim: SimHost, before_observe: Callable[[], None] | None = None):
        super().__init__(sim)
        self.box = box
        self.before_observe = before_observe

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        if len(argv) > 3 and argv[3] == "reconciler-import":
            return await BoxConnection(self.box).run(argv, input=input, timeout=timeout, max_output=max_output)
        if self.before_observe is not None:
            self.before_observe()
        return await super().run(argv, input=input, timeout=timeout, max_output=max_output)


def twins(boxes: list[Box], before_observe: Callable[[], None] | None = None) -> dict[str, Twin]:
    return {b.name: Twin(b, sim_of(b), before_observe) for b in boxes}


def connector(conns: dict[str, Twin]) -> Callable[[Target], Any]:
    async def connect(target: Target) -> Connection:
        return conns[target.name]

    return connect


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def cli_import(monkeypatch: pytest.MonkeyPatch, conns: dict[str, Twin], out: Path, *args: str) -> int:
    """`reconciler import` as an operator runs it (debug logs on), its SSH connections being the twins."""
    monkeypatch.setattr(session_module, "ssh_connector", lambda **_: connector(conns))
    hosts = [a for t in conns.values() for a in ("--host", f"{t.box.name}={t.box.address}")]
    return cli.main(["--log-level", "debug", "import", *hosts, *args, str(out)])


def documents(spec_dir: Path) -> list[dict[str, Any]]:
    return [d for f in sorted(spec_dir.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def plan_of(spec_dir: Path, conns: dict[str, Twin]) -> dict[str, list[tuple[Kind, str]]]:
    async def go() -> dict[str, list[tuple[Kind, str]]]:
        result = await plan_all(load_desired(spec_dir), Session(connector(conns)))
        out = {}
        for host, outcome in result.outcomes.items():
            assert outcome.status != "failed", outcome.summary()
            out[host] = [(a.kind, a.target) for a in (outcome.plan.actions if outcome.plan else ())]
        return out

    return asyncio.run(go())


# --- item 4: secrets are marked sensitive, written 0600, never printed -------------------------------------------


def app_box() -> Box:
    """A host whose app.service reads a token from a drop-in and keys from an env file (both 0600), and a 0644
    env file with no secret in it."""
    files = {
        APP_UNIT: f"[Service]\nEnvironmentFile={AWS_ENV}\nEnvironmentFile=-{PLAIN_ENV}\nExecStart=/usr/bin/app\n".encode(),
        DROP_IN: f"[Service]\nEnvironment=VAULT_ADDR=https://vault:8200 VAULT_TOKEN={VAULT}\n".encode(),
        AWS_ENV: f"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY={AWS}\n".encode(),
        PLAIN_ENV: b"LOG_LEVEL=info\nAPP_KEY_FILE=/etc/app/tls.key\nETCD_KEY_FILE=/etc/ssl/etcd-key.pem\nTOKEN_TTL=3600\n"
        b"ETCD_INITIAL_CLUSTER_TOKEN=k8s-etcd-cluster\nDEBUG=false\n",
    }
    stats = {DROP_IN: (0o600, "root", "root"), AWS_ENV: (0o600, "root", "root")}
    return Box("m1", "198.18.0.21", files, stats, {"app.service": APP_UNIT}, {"app.service": [DROP_IN]})


def test_secrets_in_a_drop_in_and_an_env_file_are_sensitive_0600_and_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    conns = twins([app_box()])
    out = tmp_path / "adopted"
    code = cli_import(monkeypatch, conns, out, "--unit", "app.service")
    printed = "".join(capfd.readouterr())
    assert code == 0, printed
    files = {d["spec"]["path"]: d["spec"] for d in documents(out) if d["kind"] == "File"}
    assert files[DROP_IN]["sensitive"] is True and "mode" not in files[DROP_IN]  # 0600, the sensitive default
    assert files[AWS_ENV]["sensitive"] is True and "mode" not in files[AWS_ENV]
    assert "sensitive" not in files[PLAIN_ENV] and "mode" not in files[PLAIN_ENV]  # 0644 and nothing secret in it
    assert (out / "units.yaml").stat().st_mode & 0o777 == 0o600  # the spec file holding them: its owner's only
    assert VAULT in (out / "units.yaml").read_text()  # written (the spec must hold it) ...
    for secret in (VAULT, AWS, VAULT[:12], AWS[:12]):  # ... and never printed
        assert secret not in printed, printed

    # and a later edit of the secret: plan's diff says the file changes, never what it holds
    units = out / "units.yaml"
    units.write_text(units.read_text().replace(VAULT, "s.NEWSECRETvaultTOKEN0815"))
    result = asyncio.run(_plan_text(out, conns))
    assert DROP_IN in result and VAULT not in result and "NEWSECRET" not in result, result


async def _plan_text(spec_dir: Path, conns: dict[str, Twin]) -> str:
    result = await plan_all(load_desired(spec_dir), Session(connector(conns)))
    return "\n".join(o.plan.render() for o in result.outcomes.values() if o.plan is not None)


def test_a_file_only_its_owner_may_read_is_sensitive_whatever_it_holds(tmp_path: Path) -> None:
    box = app_box()
    box.stats[PLAIN_ENV] = (0o600, "root", "root")
    box.stats[AWS_ENV] = (0o644, "root", "root")
    box.files[AWS_ENV] = b"AWS_REGION=eu-central-1\n"
    found = found_hosts([box], ("app.service",))["m1"]
    assert found.sensitive >= {PLAIN_ENV, DROP_IN} and AWS_ENV not in found.sensitive


def test_a_file_others_cannot_read_but_its_group_can_is_sensitive_with_its_mode_kept(tmp_path: Path) -> None:
    box = app_box()
    box.stats[PLAIN_ENV] = (0o640, "root", "app")  # the service's group reads it; others not
    found = found_hosts([box], ("app.service",))
    adoption = describe(infos([box]), found)
    spec = next(d.spec for d in adoption.files["units.yaml"] if d.kind == "File" and d.spec["path"] == PLAIN_ENV)
    assert spec["sensitive"] is True and spec["mode"] == "0640" and spec["group"] == "app"
    assert not adoption.problems and not adoption.warnings  # group-readable is how services read their secrets


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("VAULT_TOKEN", "s.abc", True),
        ("AWS_SECRET_ACCESS_KEY", "wJalr/K7MDENG", True),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE", True),
        ("DB_PASSWORD", "hunter2", True),
        ("MYSQL_PASSWD", "hunter2", True),
        ("DB_PASS", "hunter2", True),
        ("GITHUB_API_KEY", "ghp_x", True),
        ("APP_KEY", "base64:abc", True),
        ("KEY", "abc", True),
        ("GOOGLE_APPLICATION_CREDENTIALS_JSON", "{}", True),
        ("client-secret", "abc", True),
        ("ETCD_KEY_FILE", "/etc/kubernetes/ssl/kubernetes-key.pem", False),  # names a file
        ("ETCD_PEER_KEY_FILE", "/etc/kubernetes/ssl/kubernetes-key.pem", False),
        ("etcd-keyfile", "/etc/kubernetes/ssl/kubernetes-key.pem", False),
        ("token-auth-file", "/etc/kubernetes/token.csv", False),
        ("kubelet-client-key", "/etc/kubernetes/ssl/kubelet-key.pem", False),  # a path, whatever the name
        ("VAULT_TOKEN_PATH", "/run/vault/token", False),
        ("TOKEN_TTL", "3600", False),
        ("ETCD_INITIAL_CLUSTER_TOKEN", "k8s-etcd-cluster", False),  # etcd's cluster id, not a secret
        ("initial-cluster-token", "k8s-etcd-cluster", False),
        ("experimental-bootstrap-token-auth", "", False),  # a switch
        ("ETCD_CLIENT_CERT_AUTH", "true", False),
        ("DB_PASSWORD", "", False),  # nothing to keep
        ("LOG_LEVEL", "info", False),
        ("KUBE_API_ADDRESS", "--bind-address=10.0.0.1", False),
        ("PWD", "/root/x", False),
    ],
)
def test_secret_names(name: str, value: str, secret: bool) -> None:
    assert secret_name(name, value) is secret


def test_secrets_are_found_by_name_in_env_files_and_units_never_by_value() -> None:
    env = (
        'KUBE_API_ARGS="--etcd-servers=https://10.0.0.1:2379 --oidc-client-secret=abc --token-auth-file=/x/t.csv"\n'
        "DATABASE_URL=postgres://app:hunter2@db:5432/app\n"
        "# VAULT_TOKEN=commented-out\n"  # still in the file, and in any diff of it
        "export DB_PASSWORD=hunter2\n"  # systemd skips the line; the file still holds it
        "PLAIN=1\n"
        '#ETCD_WAL_DIR=""\n'
    )
    assert env_file_secrets(env) == ["--oidc-client-secret", "DATABASE_URL", "VAULT_TOKEN", "DB_PASSWORD"]
    unit = (
        "[Service]\n"
        'Environment="VAULT_TOKEN=s.x" LOG=info\n'
        "ExecStart=/usr/bin/app --password hunter2 --key-file=/etc/app.key --verbose\n"
    )
    assert unit_file_secrets(unit) == ["VAULT_TOKEN", "--password"]
    assert unit_file_secrets("[Service]\n#Environment=API_KEY=abc\n") == ["API_KEY"]
    seed_env = 'KUBE_API_ARGS="--experimental-bootstrap-token-auth --token-auth-file=/etc/kubernetes/token.csv"\n'
    assert env_file_secrets(seed_env) == [] and unit_file_secrets("[Service]\nExecStart=/usr/bin/etcd\n") == []


@pytest.mark.parametrize(
    "text",
    [
        "X=" + "a" * 2**20,
        'X="' + "a b " * 2**18,
        "X=" + "://" + "a" * 2**20,
        "X=" + "://a:" * 2**18,
        "[Service]\nExecStart=/bin/x " + "--a " * 2**18,
        "[Service]\nEnvironment=" + "'" * 2**20,
        "[Service]\nEnvironment=" + "\\" * 2**20,
    ],
)
def test_looking_for_secrets_takes_time_linear_in_the_text(text: str) -> None:
    """A host's file is up to 1 MiB of anything: shlex took 15 s on one long word, a scheme before `://` 20 s."""
    began = time.process_time()
    env_file_secrets(text)
    unit_file_secrets(text)
    assert time.process_time() - began < 5  # about 0.1 s; quadratic would be minutes


def test_a_unit_file_holding_a_secret_is_written_0600_with_a_warning_that_names_the_key_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    box = app_box()
    box.files[APP_UNIT] += f"Environment=API_TOKEN={VAULT}\n".encode()
    conns = twins([box])
    out = tmp_path / "adopted"
    code = cli_import(monkeypatch, conns, out, "--unit", "app.service")
    stdout, stderr = capfd.readouterr()
    assert code == 0, stdout + stderr
    assert (out / "units.yaml").stat().st_mode & 0o777 == 0o600
    assert "API_TOKEN" in stderr and "drop-in" in stderr and VAULT not in stdout + stderr


# --- item 9: a byte budget per host, and an OUT that appears meanwhile ----------------------------------------------


class Counting:
    """A connection that counts the bytes import took from the host: each answer, or all it asked for from a host
    that sent more (the transport stops reading there)."""

    def __init__(self, inner: Connection):
        self.inner = inner
        self.accepted = 0

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        try:
            result = await self.inner.run(argv, input=input, timeout=timeout, max_output=max_output)
        except HostError:
            self.accepted += max_output
            raise
        self.accepted += len(result.stdout)
        return result


def hostile(files: int = 256, size: int = 1024 * 1024) -> Box:
    """A master whose scheduler reads `files` env files of `size` bytes each (and whose drop-ins are as large)."""
    box = fleet(1)[0]
    env = "".join(f"EnvironmentFile=-/etc/big/{i}.env\n" for i in range(files))
    scheduler = f"{KUBE_DIR}/kube-scheduler.service"
    box.files[scheduler] = box.files[scheduler].replace(b"[Service]\n", f"[Service]\n{env}".encode())
    for i in range(files):
        box.files[f"/etc/big/{i}.env"] = (b"X=" + b"x" * (size - 3) + b"\n")[:size]
    return box


def test_a_host_with_more_to_read_than_the_budget_is_refused_without_reading_past_it() -> None:
    box = hostile()
    conn = Counting(BoxConnection(box))
    with pytest.raises(HostError) as err:
        asyncio.run(disc.discover(conn, box.name))
    message = str(err.value)
    assert "16 MiB" in message and "budget" in message, message
    assert "xxxx" not in message
    # what import let the host send, over all its round trips: the budget in base64, and little besides
    assert conn.accepted <= disc.MAX_HOST_BYTES * 4 // 3 + 4 * 1024 * 1024, conn.accepted


def test_the_cli_names_the_host_and_the_budget_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    box = hostile()

    async def connect(target: Target) -> Connection:
        return BoxConnection(box)

    monkeypatch.setattr(session_module, "ssh_connector", lambda **_: connect)
    out = tmp_path / "adopted"
    code = cli.main(["import", "--host", f"{box.name}={box.address}", str(out)])
    stdout, stderr = capfd.readouterr()
    assert code == 1 and not out.exists() and not list(tmp_path.iterdir())
    assert f"{box.name}: cannot be read: more to read than import's budget of 16 MiB per host" in stderr, stderr
    assert "nothing written" in stderr and "xxxx" not in stdout + stderr


def test_a_host_that_lies_about_the_budget_is_cut_off_at_it() -> None:
    """A host that ignores the budget it is given (a hostile shell) is stopped by the transport's cap."""
    box = hostile()
    box.ignore_budget = True  # type: ignore[attr-defined]
    conn = Counting(BoxConnection(box))
    with pytest.raises(HostError):
        asyncio.run(disc.discover(conn, box.name))
    assert conn.accepted <= disc.MAX_HOST_BYTES * 4 // 3 + 4 * 1024 * 1024, conn.accepted


def test_what_a_host_sends_counts_against_its_budget_even_when_refused() -> None:
    """A host whose stat says 1 byte and whose read sends 1 MiB: each file is refused ("changed while it was
    read"), and the bytes still count, so a later round is not given the whole budget again."""
    accepted = [0]

    class Liar:
        async def run(self, argv: Sequence[str], *, max_output: int = MAX_OUTPUT, **_: Any) -> CommandResult:
            body = base64.b64encode(b"x" * 1024 * 1024).decode()
            out = "".join(f"@@F {p} file 1 644 cm9vdA== cm9vdA==\n{body}\n" for p in argv[5:]).encode()
            accepted[0] += min(len(out), max_output)
            if len(out) > max_output:
                raise HostError("answered more than asked for")
            return CommandResult(tuple(argv), 0, out, b"")

    host = disc.FoundHost("liar")
    reader = disc._Reader(Liar(), host)  # type: ignore[arg-type]
    with pytest.raises(HostError):
        for i in range(10):  # rounds of 8 files: import has three, a hostile host would want more
            asyncio.run(reader.read([f"/etc/{i}/x{k}" for k in range(8)]))
    assert all(f.state == "changed while it was read" for f in host.files.values())
    assert accepted[0] <= disc.MAX_HOST_BYTES * 4 // 3 + 1024 * 1024, accepted[0]


def test_a_host_within_the_budget_imports_as_before(tmp_path: Path) -> None:
    box = hostile(files=10, size=256 * 1024)  # 2.5 MiB of env files
    found = found_hosts([box])["master-1"]
    assert not found.problems and all(found.files[f"/etc/big/{i}.env"].ok for i in range(10))


def read_locally(paths: list[str], budget: int) -> str:
    script = disc._READ_SCRIPT
    proc = subprocess.run(
        ["sh", "-c", script, "reconciler-import", str(budget), *paths], capture_output=True, check=True, timeout=60
    )
    return proc.stdout.decode()


def test_the_read_script_stops_at_the_budget_on_a_real_shell(tmp_path: Path) -> None:
    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([65 + i]) * 1000)
        paths.append(str(p))
    whole = read_locally(paths, 4000)
    assert "@@BUDGET" not in whole
    found = disc.parse_reads(whole, paths)
    assert all(found[p].ok and found[p].content == bytes([65 + i]) * 1000 for i, p in enumerate(paths))
    cut = read_locally(paths, 2500)
    assert cut.splitlines()[-1] == f"@@BUDGET {paths[2]}"  # two files read, the third would go over
    assert base64.b64encode(b"C" * 1000).decode() not in cut
    assert disc.parse_reads(cut, paths)[paths[3]].state == "budget"


def test_the_read_script_sends_no_more_of_a_file_than_its_size_said(tmp_path: Path) -> None:
    """A file that grows between its stat and its read is cut at the size stat gave (plus one byte: the growth is
    seen), so what the budget counted is what is sent."""
    p = tmp_path / "fifo"
    os.mkfifo(p)  # not a regular file: never read
    assert disc.parse_reads(read_locally([str(p)], 100), [str(p)])[str(p)].state == "notfile"
    answer = "@@F /x file 3 644 cm9vdA== cm9vdA==\n" + base64.b64encode(b"abcd").decode() + "\n"
    assert disc.parse_reads(answer, ["/x"])["/x"].state == "changed while it was read"


def test_an_out_that_appears_while_import_runs_is_never_written_into(tmp_path: Path) -> None:
    boxes = [app_box()]
    hosts = infos(boxes)
    for appear in ("empty", "content", "symlink"):
        out = tmp_path / appear / "adopted"
        out.parent.mkdir()
        elsewhere = tmp_path / appear / "elsewhere"
        elsewhere.mkdir()

        def make(out: Path = out, appear: str = appear, elsewhere: Path = elsewhere) -> None:
            if out.exists() or out.is_symlink():
                return
            if appear == "symlink":
                out.symlink_to(elsewhere)
                return
            out.mkdir()
            if appear == "content":
                (out / "mine.yaml").write_text("# someone's own\n")

        for force in (False, True):
            conns = twins(boxes, before_observe=make)
            result = asyncio.run(run_import(hosts, out, Session(connector(conns)), units=("app.service",), force=force))
            assert result.written is None, (appear, force)
            assert "appeared while import ran" in result.refused, result.refused
            assert not list(elsewhere.iterdir())
            if appear == "content":
                assert [p.name for p in out.iterdir()] == ["mine.yaml"]
            elif appear == "empty":
                assert not list(out.iterdir())
            assert sorted(p.name for p in out.parent.iterdir()) == sorted(["adopted", "elsewhere"])  # no staging left
            if out.is_symlink():
                out.unlink()
            else:
                shutil.rmtree(out)


def test_an_empty_out_given_at_the_start_is_written_and_one_that_filled_up_is_not(tmp_path: Path) -> None:
    boxes = [app_box()]
    out = tmp_path / "adopted"
    out.mkdir()
    result = asyncio.run(run_import(infos(boxes), out, Session(connector(twins(boxes))), units=("app.service",)))
    assert result.written == out and (out / "units.yaml").exists(), result.adoption.problems
    shutil.rmtree(out)
    out.mkdir()

    def fill() -> None:
        if not (out / "late.yaml").exists():
            (out / "late.yaml").write_text("# late\n")

    conns = twins(boxes, before_observe=fill)
    result = asyncio.run(run_import(infos(boxes), out, Session(connector(conns)), units=("app.service",)))
    assert result.written is None and [p.name for p in out.iterdir()] == ["late.yaml"]


def test_without_renameat2_the_directory_is_still_never_clobbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.adopt import importer

    monkeypatch.setattr(importer, "_rename_noreplace", importer._mkdir_then_move)
    boxes = [app_box()]
    out = tmp_path / "adopted"
    result = asyncio.run(run_import(infos(boxes), out, Session(connector(twins(boxes))), units=("app.service",)))
    assert result.written == out and (out / "units.yaml").stat().st_mode & 0o777 == 0o600

    other = tmp_path / "other"

    def appear() -> None:
        other.mkdir(exist_ok=True)

    conns = twins(boxes, before_observe=appear)
    result = asyncio.run(run_import(infos(boxes), other, Session(connector(conns)), units=("app.service",)))
    assert result.written is None and not list(other.iterdir())


# --- item 13: masters built as the guide builds them (token.csv 0644) ------------------------------------------------


def seed_fleet() -> list[Box]:
    """The fleet with every unit in /etc/systemd/system (where a SimHost keeps them) and token.csv 0644, as the
    seed's guide leaves it."""
    boxes = fleet()
    for b in boxes:
        for unit, path in list(b.units.items()):
            real = b.real(path)
            b.files[f"{UNIT_DIR}/{unit}"] = b.files.pop(real)
            b.units[unit] = f"{UNIT_DIR}/{unit}"
        b.stats["/etc/kubernetes/token.csv"] = (0o644, "root", "root")
    return boxes


def test_a_world_readable_token_file_is_imported_as_it_is_with_a_warning_saying_how_to_tighten_it() -> None:
    boxes = seed_fleet()
    adoption = describe(infos(boxes), found_hosts(boxes))
    assert adoption.problems == []
    tokens = [d for d in adoption.files["kubernetes.yaml"] if d.kind == "File" and "token.csv" in d.spec["path"]]
    assert len(tokens) == 1
    spec = tokens[0].spec
    assert spec["sensitive"] is True and spec["mode"] == "0644" and spec["wideMode"] is True
    assert 'mode: "0600"' in tokens[0].comment
    (warning,) = adoption.warnings
    assert "/etc/kubernetes/token.csv" in warning and "0644" in warning and 'mode: "0600"' in warning
    assert "master-1, master-2, master-3" in warning and "no restart" in warning
    text = spec_files(adoption, "x")["kubernetes.yaml"]
    secret = TOKEN.decode().split(",")[0]
    assert secret not in warning and secret not in tokens[0].comment
    assert '  mode: "0644"\n' in text  # the line the operator edits


def test_seed_masters_import_with_exit_0_and_one_edit_plans_one_attrs_change_and_no_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    boxes = seed_fleet()
    conns = twins(boxes)
    out = tmp_path / "adopted"
    code = cli_import(monkeypatch, conns, out)
    stdout, stderr = capfd.readouterr()
    assert code == 0, stdout + stderr
    assert "warning: " in stderr and "/etc/kubernetes/token.csv" in stderr and 'mode: "0600"' in stderr
    assert TOKEN.decode().split(",")[0] not in stdout + stderr
    assert (out / "kubernetes.yaml").stat().st_mode & 0o777 == 0o600
    assert all(actions == [] for actions in plan_of(out, conns).values())

    kube = out / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace('  mode: "0644"\n', '  mode: "0600"\n', 1))
    planned = plan_of(out, conns)
    assert planned == {b.name: [(Kind.ATTRS, "/etc/kubernetes/token.csv")] for b in boxes}, planned
