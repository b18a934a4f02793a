"""adopt.importer, end to end on in-memory masters (tests/support/masters.py) through the real CLI, its spec loader
and its planner, no SSH and no testbed (issue 26, items 4, 9 and 13): secrets written 0600 and never printed, a
host past its budget names itself and nothing is written, an `OUT` that appears while import runs is never written
into, and masters built as the guide builds them (token.csv 0644) import with exit 0."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from reconciler import cli
from reconciler.adopt.importer import run_import
from reconciler.engine.converge import plan_all
from reconciler.plan.actions import Kind
from reconciler.spec.desired import Target
from reconciler.spec.isolate import load_desired
from reconciler.transport import session as session_module
from reconciler.transport.base import MAX_OUTPUT, CommandResult, Connection
from reconciler.transport.fake import FakeConnection, SimHost
from reconciler.transport.session import Session
from tests.support.masters import (
    APP_UNIT,
    AWS,
    AWS_ENV,
    DROP_IN,
    PLAIN_ENV,
    TOKEN,
    VAULT,
    address,
    app_host,
    guide_fleet,
    heavy_master,
    infos,
)


class Hooked(FakeConnection):
    """A master's own connection that runs `before` ahead of every command but import's own scripts (ahead of
    plan's observation): what appears meanwhile."""

    def __init__(self, host: SimHost, before: Callable[[], None]):
        super().__init__(host)
        self.before = before

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        if argv[3:4] != ["reconciler-import"]:
            self.before()
        return await super().run(argv, input=input, timeout=timeout, max_output=max_output)


def connections(masters: list[SimHost], before: Callable[[], None] | None = None) -> dict[str, FakeConnection]:
    """Each master's own connection by name (Hooked when `before` is given)."""
    return {m.name: FakeConnection(m) if before is None else Hooked(m, before) for m in masters}


def connector(conns: dict[str, FakeConnection]) -> Callable[[Target], Any]:
    async def connect(target: Target) -> Connection:
        return conns[target.name]

    return connect


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def cli_import(monkeypatch: pytest.MonkeyPatch, conns: dict[str, FakeConnection], out: Path, *args: str) -> int:
    """`reconciler import` as an operator runs it (debug logs on), its SSH connections being the masters' own."""
    monkeypatch.setattr(session_module, "ssh_connector", lambda **_: connector(conns))
    hosts = [a for c in conns.values() for a in ("--host", f"{c.host.name}={address(c.host)}")]
    return cli.main(["--log-level", "debug", "import", *hosts, *args, str(out)])


def documents(spec_dir: Path) -> list[dict[str, Any]]:
    return [d for f in sorted(spec_dir.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def plan_of(spec_dir: Path, conns: dict[str, FakeConnection]) -> dict[str, list[tuple[Kind, str]]]:
    async def go() -> dict[str, list[tuple[Kind, str]]]:
        result = await plan_all(load_desired(spec_dir), Session(connector(conns)))
        out = {}
        for host, outcome in result.outcomes.items():
            assert outcome.status != "failed", outcome.summary()
            out[host] = [(a.kind, a.target) for a in (outcome.plan.actions if outcome.plan else ())]
        return out

    return asyncio.run(go())


def test_secrets_in_a_drop_in_and_an_env_file_are_sensitive_0600_and_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    conns = connections([app_host()])
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


async def _plan_text(spec_dir: Path, conns: dict[str, FakeConnection]) -> str:
    result = await plan_all(load_desired(spec_dir), Session(connector(conns)))
    return "\n".join(o.plan.render() for o in result.outcomes.values() if o.plan is not None)


def test_a_unit_file_holding_a_secret_is_written_0600_with_a_warning_that_names_the_key_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    host = app_host()
    host.files[APP_UNIT].content += f"Environment=API_TOKEN={VAULT}\n".encode()
    conns = connections([host])
    out = tmp_path / "adopted"
    code = cli_import(monkeypatch, conns, out, "--unit", "app.service")
    stdout, stderr = capfd.readouterr()
    assert code == 0, stdout + stderr
    assert (out / "units.yaml").stat().st_mode & 0o777 == 0o600
    assert "API_TOKEN" in stderr and "drop-in" in stderr and VAULT not in stdout + stderr


def test_the_cli_names_the_host_and_the_budget_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    host = heavy_master()

    async def connect(target: Target) -> Connection:
        return FakeConnection(host)

    monkeypatch.setattr(session_module, "ssh_connector", lambda **_: connect)
    out = tmp_path / "adopted"
    code = cli.main(["import", "--host", f"{host.name}={address(host)}", str(out)])
    stdout, stderr = capfd.readouterr()
    assert code == 1 and not out.exists() and not list(tmp_path.iterdir())
    assert f"{host.name}: cannot be read: more to read than import's budget of 16 MiB per host" in stderr, stderr
    assert "nothing written" in stderr and "xxxx" not in stdout + stderr


def test_an_out_that_appears_while_import_runs_is_never_written_into(tmp_path: Path) -> None:
    masters = [app_host()]
    hosts = infos(masters)
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
            conns = connections(masters, before=make)
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
    masters = [app_host()]
    out = tmp_path / "adopted"
    out.mkdir()
    result = asyncio.run(
        run_import(infos(masters), out, Session(connector(connections(masters))), units=("app.service",))
    )
    assert result.written == out and (out / "units.yaml").exists(), result.adoption.problems
    shutil.rmtree(out)
    out.mkdir()

    def fill() -> None:
        if not (out / "late.yaml").exists():
            (out / "late.yaml").write_text("# late\n")

    conns = connections(masters, before=fill)
    result = asyncio.run(run_import(infos(masters), out, Session(connector(conns)), units=("app.service",)))
    assert result.written is None and [p.name for p in out.iterdir()] == ["late.yaml"]


def test_without_renameat2_the_directory_is_still_never_clobbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.adopt import importer

    monkeypatch.setattr(importer, "_rename_noreplace", importer._mkdir_then_move)
    masters = [app_host()]
    out = tmp_path / "adopted"
    result = asyncio.run(
        run_import(infos(masters), out, Session(connector(connections(masters))), units=("app.service",))
    )
    assert result.written == out and (out / "units.yaml").stat().st_mode & 0o777 == 0o600

    other = tmp_path / "other"

    def appear() -> None:
        other.mkdir(exist_ok=True)

    conns = connections(masters, before=appear)
    result = asyncio.run(run_import(infos(masters), other, Session(connector(conns)), units=("app.service",)))
    assert result.written is None and not list(other.iterdir())


def test_seed_masters_import_with_exit_0_and_one_edit_plans_one_attrs_change_and_no_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], reset_logging: None
) -> None:
    masters = guide_fleet()
    conns = connections(masters)
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
    assert planned == {m.name: [(Kind.ATTRS, "/etc/kubernetes/token.csv")] for m in masters}, planned
