"""The `reconciler` command: validate | plan | apply | check | import | run (the daemon) | status | tuning.

Owns argument parsing, exit codes and human output; the work is done by spec.load and engine.converge.
Exit codes: validate 0 valid / 1 invalid; plan 0 no changes / 2 changes pending / 1 error;
apply and check 0 converged and healthy / 1 a host failed or did not converge; status 0 all converged /
1 not / 3 daemon unreachable; any command: 64 a usage error (sysexits' EX_USAGE), 70 an internal error (one line
on stderr, the traceback in a report file), 130 interrupted (Ctrl-C: what was done and what was not is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import tempfile
import time
import traceback
import typing
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import progress
from reconciler.errors import SpecError
from reconciler.live import Above, Live, showing
from reconciler.spec.desired import DesiredHost, DesiredState
from reconciler.spec.isolate import begin_load, load_desired
from reconciler.status.logs import configure_logging
from reconciler.tuning import overlay as overlay_store

if TYPE_CHECKING:  # each command imports what it runs: `validate` needs neither SSH nor the engine
    from reconciler.adopt.importer import ImportResult
    from reconciler.observe.snapshot import HostSnapshot
    from reconciler.outcome import RunResult
    from reconciler.settings import DaemonSettings


EX_USAGE, EX_SOFTWARE, INTERRUPTED = 64, 70, 130


class _Parser(argparse.ArgumentParser):
    """A usage error exits 64 (sysexits' EX_USAGE), a code no result uses (plan's 2 means changes pending)."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _at_least_one(text: str) -> int:
    """argparse type: a whole number >= 1 (`--connect-attempts 0` would never connect)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default (where it has one worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or action.help is None:
            return action.help
        return super()._get_help_string(action)


# `run` and `status` take these defaults from DaemonSettings, which is pydantic: read only when one of those runs (or
# its --help), so that `plan` and `apply` leave pydantic to their spec-load child while they import SSH meanwhile.
_SETTINGS_DEFAULTS: dict[str, Callable[[DaemonSettings], Any]] = {
    "specs": lambda d: d.spec_dir,
    "listen": lambda d: f"{d.listen_host}:{d.listen_port}",
    "url": lambda d: f"http://127.0.0.1:{d.listen_port}",
    "resync": lambda d: d.resync_interval,
    "resync_jitter": lambda d: d.resync_jitter,
    "workers": lambda d: d.workers,
    "backoff_base": lambda d: d.backoff_base,
    "backoff_cap": lambda d: d.backoff_cap,
    "debounce_ms": lambda d: d.debounce_ms,
    "verify_wait": lambda d: d.verify_wait,
    "shutdown_timeout": lambda d: d.shutdown_timeout,
    "connect_attempts": lambda d: d.connect_attempts,
    "state_dir": lambda d: d.state_dir,
    "name": lambda d: d.name,
}


def _settings_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """`run` and `status` options not given: DaemonSettings' defaults."""
    from reconciler.settings import DaemonSettings

    d = DaemonSettings()
    for dest, default in _SETTINGS_DEFAULTS.items():
        if getattr(args, dest, "") is None:
            setattr(args, dest, default(d))
    return args


class _SettingsHelp(_Help):
    """--help of `run` and `status`: their defaults are DaemonSettings'."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest not in _SETTINGS_DEFAULTS or action.help is None:
            return super()._get_help_string(action)
        from reconciler.settings import DaemonSettings

        return f"{action.help} (default: {_SETTINGS_DEFAULTS[action.dest](DaemonSettings())})"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reconciler")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def _global_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """--log-level and --log-format, before the command or after it (then `default` is SUPPRESS: given or absent)."""
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help="default: info for run, warning otherwise; debug also prints an internal error's traceback",
    )
    parser.add_argument(
        "--log-format",
        default="auto" if default is None else default,
        choices=["auto", "console", "json"],
        help="auto: JSON unless stderr is a terminal",
    )


def _after() -> _Parser:
    """The global flags as a command's own, so that they work after it too (`validate specs --log-format json`)."""
    after = _Parser(add_help=False)
    _global_flags(after, argparse.SUPPRESS)
    return after


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reconciler", description=__doc__.split("\n")[0], formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _global_flags(parser, None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("validate", "check a spec directory; list every error"),
        ("plan", "show what apply would change on each host (dry run)"),
        ("apply", "converge every host, then verify files, units and health checks"),
        ("check", "observe every host directly: drift, unit states and health checks"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Help, parents=[_after()])
        p.add_argument("spec_dir", type=Path, nargs="?", default=Path("specs"), help="spec directory")
        p.add_argument(
            "--json",
            action="store_true",
            help="print the result as one JSON document (docs/commands.md: Machine-readable output)",
        )
        if name != "validate":
            p.add_argument("--host", action="append", default=[], help="only these hosts (repeatable)")
            p.add_argument(
                "--connect-attempts",
                type=_at_least_one,
                default=4,
                help="SSH connection attempts per host (backoff between)",
            )
            p.add_argument(
                "--state-dir",
                type=Path,
                default=None,
                help="the daemon's state directory, for its etcd tuning overlay (default: $RECONCILER_STATE_DIR "
                "or /var/lib/reconciler)",
            )
        if name == "apply":
            p.add_argument(
                "--verify-wait",
                "--wait",
                dest="wait",
                type=_seconds,
                default=120.0,
                help="seconds to wait for health checks after applying (the daemon's flag of the same name)",
            )
            p.add_argument(
                "--break-glass",
                action="store_true",
                help="etcd has lost quorum and a person repairs it: restart rollout units without the cluster-wide "
                "restart lock, the quorum guard or a health wait between members (docs/apply.md: Lost quorum)",
            )
    _run_parser(sub)
    _import_parser(sub)
    from reconciler import certs_cli
    from reconciler import etcd_cli as etcd_command

    etcd_command.add_parser(sub, [_after()])
    certs_cli.add_parser(sub, [_after()])
    st = sub.add_parser(
        "status",
        help="the running daemon's view: every host's last pass, health, backoff, tuning",
        formatter_class=_SettingsHelp,
        parents=[_after()],
    )
    st.add_argument("--url", help="the daemon's HTTP endpoint: a URL, or its --listen HOST:PORT")
    st.add_argument("--json", action="store_true", help="print /status as JSON instead of a table")
    t = sub.add_parser(
        "tuning",
        help="show or clear the etcd tuning overlay the daemon keeps",
        formatter_class=_Help,
        parents=[_after()],
    )
    t.add_argument("action", choices=["show", "clear"])
    t.add_argument("--state-dir", type=Path, default=None, help="default: $RECONCILER_STATE_DIR or /var/lib/reconciler")
    help_text = "write the example specs into a new spec directory and print the daemon's systemd unit for it"
    i = sub.add_parser("init", help=help_text, description=help_text, formatter_class=_Help, parents=[_after()])
    i.add_argument("dir", type=Path, help="the spec directory to write (new or empty), e.g. /etc/reconciler/specs")
    i.add_argument("--unit-only", action="store_true", help="write nothing; print the unit for DIR")
    return parser


def _run_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="the daemon: watch specs, resync, converge continuously, serve /metrics and /status",
        formatter_class=_SettingsHelp,
        parents=[_after()],
    )
    p.add_argument("spec_dir", type=Path, nargs="?", help="spec directory (watched), as plan and apply take it")
    p.add_argument("--specs", type=Path, help="the same, as a flag (what older units pass)")
    p.add_argument("--listen", help="HOST:PORT of the HTTP endpoint")
    p.add_argument("--resync", type=float, help="seconds between full passes")
    p.add_argument("--resync-jitter", type=float, help="fraction of --resync, random +/-")
    p.add_argument("--workers", type=int, help="hosts reconciled in parallel")
    p.add_argument("--backoff-base", type=float, help="first retry delay after a failure")
    p.add_argument("--backoff-cap", type=float, help="longest retry delay")
    p.add_argument("--debounce-ms", type=int, help="spec edits closer than this are one")
    p.add_argument("--verify-wait", type=float, help="seconds to wait for health after applying")
    p.add_argument("--shutdown-timeout", type=float, help="seconds SIGTERM waits for passes in flight")
    p.add_argument(
        "--connect-attempts",
        type=_at_least_one,
        help="SSH attempts within one pass (fewer than a command's 4: the daemon retries a host with backoff)",
    )
    p.add_argument("--state-dir", type=Path, help="where the etcd tuning overlay is kept")
    p.add_argument(
        "--leader-election",
        action="store_true",
        help="run as one of several replicas: only the one elected on the cluster's etcd changes hosts",
    )
    p.add_argument("--name", help="this replica's name in the election")
    p.add_argument(
        "--accept-specs",
        action="store_true",
        help="as leader, make this replica's specs the agreed ones even where they differ from the published",
    )


def _import_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    help_text = "read masters built by hand and write a spec directory describing them exactly"
    p = sub.add_parser("import", help=help_text, description=help_text, formatter_class=_Help, parents=[_after()])
    p.add_argument("out", type=Path, help="the spec directory to write (must not exist yet)")
    p.add_argument("--inventory", type=Path, help="a spec file or directory whose Host documents say how to reach them")
    p.add_argument(
        "--host", action="append", default=[], metavar="NAME=[USER@]ADDRESS[:PORT]", help="a host (repeatable)"
    )
    p.add_argument("--user", default="root", help="SSH user for --host")
    p.add_argument("--port", type=int, default=22, help="SSH port for --host")
    p.add_argument("--become", choices=["sudo"], help="for --host: run every command through passwordless sudo")
    p.add_argument("--identity-file", help="SSH key for --host")
    p.add_argument("--known-hosts", help="known_hosts for --host (default: ~/.ssh/known_hosts)")
    p.add_argument("--unit", action="append", default=[], help="a further unit to import (repeatable)")
    p.add_argument("--connect-attempts", type=_at_least_one, default=4, help="SSH connection attempts per host")
    p.add_argument(
        "--force", action="store_true", help="write the directory even where it is not exact (then say what is not)"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")


def _import_command(args: argparse.Namespace) -> int:
    from reconciler.adopt.describe import HostInfo
    from reconciler.adopt.importer import hosts_from_inventory, run_import
    from reconciler.transport.session import Session, ssh_connector

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        print(f"{args.out} exists and is not an empty directory: import writes a new one", file=sys.stderr)
        return 1
    hosts: list[HostInfo] = []
    if args.inventory:
        try:
            hosts = hosts_from_inventory(args.inventory)
        except SpecError as exc:
            print("\n".join(f"  {i}" for i in exc.issues), file=sys.stderr)
            return 1
    for item in args.host:
        name, sep, address = item.partition("=")
        if not sep:
            print(f"--host {item!r}: expected NAME=[USER@]ADDRESS[:PORT]", file=sys.stderr)
            return EX_USAGE
        user, at, address = address.rpartition("@")
        address, port = _host_port(address, args.port)
        if not name or not address or port is None:
            print(f"--host {item!r}: expected NAME=[USER@]ADDRESS[:PORT]", file=sys.stderr)
            return EX_USAGE
        spec: dict[str, object] = {"address": address}
        if port != 22:
            spec["port"] = port
        if (user if at else args.user) != "root":
            spec["user"] = user if at else args.user
        if args.become:
            spec["become"] = args.become
        for key, value in (("identityFile", args.identity_file), ("knownHosts", args.known_hosts)):
            if value:
                spec[key] = str(Path(value).expanduser().absolute())
        hosts.append(HostInfo(name, address, {}, spec))
    if not hosts:
        print("no hosts: give --inventory or --host NAME=ADDRESS", file=sys.stderr)
        return 1

    async def run() -> int:
        session = Session(ssh_connector(attempts=args.connect_attempts))
        try:
            result = await run_import(hosts, args.out, session, units=tuple(args.unit), force=args.force)
        finally:
            await session.close()
        if args.json:
            from reconciler.documents import import_document

            code = _import_code(result)
            print(json.dumps(import_document(result, str(args.out), code), indent=2))
            return code
        return _print_import(result, args.out)

    return asyncio.run(run())


def _host_port(address: str, default: int) -> tuple[str, int | None]:
    """`10.0.0.1`, `10.0.0.1:2222`, `[fd00::1]:2222`, `fd00::1` -> address and port (None: not a port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":") or str(default)
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, str(default)
    return host, int(port) if port.isdigit() and 0 < int(port) < 65536 else None


def _import_code(result: ImportResult) -> int:
    return 0 if not result.failed_hosts and not result.refused and (result.exact or result.written) else 1


def _print_import(result: ImportResult, out: Path) -> int:
    for host, why in result.failed_hosts.items():
        print(f"{host}: cannot be read: {why}", file=sys.stderr)
    if result.failed_hosts:
        print("nothing written", file=sys.stderr)
        return 1
    for name, docs in result.adoption.files.items():
        print(f"{name}: " + ", ".join(f"{d.kind}/{d.name}" for d in docs))
    for note in result.adoption.notes:
        print(f"note: {note}")
    problems = [*result.adoption.problems, *(f"validate: {i}" for i in result.invalid)]
    problems += [f"plan on {h}: {a}" for h, actions in result.pending.items() for a in actions]
    for problem in problems:
        print(f"not exact: {problem}", file=sys.stderr)
    if result.refused:
        print(f"{result.refused}; nothing written", file=sys.stderr)
        return 1
    if result.exact:
        print(f"{out}: written; it validates and `reconciler plan {out}` finds nothing to change on any host")
        return 0
    if result.written:
        print(f"{out}: written anyway (--force); it is not exact where said above", file=sys.stderr)
        return 0
    print("nothing written: import describes hosts exactly or not at all (--force writes it anyway)", file=sys.stderr)
    return 1


def _daemon_settings(args: argparse.Namespace) -> DaemonSettings:
    from reconciler.settings import DaemonSettings

    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--listen {args.listen!r}: expected HOST:PORT (127.0.0.1:9479, [::1]:9479, :9479)")
    return DaemonSettings(
        spec_dir=args.spec_dir or args.specs,
        listen_host=host.strip("[]") or "127.0.0.1",
        listen_port=int(port),
        resync_interval=args.resync,
        resync_jitter=args.resync_jitter,
        workers=args.workers,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        debounce_ms=args.debounce_ms,
        verify_wait=args.verify_wait,
        shutdown_timeout=args.shutdown_timeout,
        connect_attempts=args.connect_attempts,
        state_dir=args.state_dir,
        leader_election=args.leader_election,
        name=args.name,
        accept_specs=args.accept_specs,
    )


# DaemonSettings' field -> the flag that sets it, where the names differ
_FLAGS = {
    "--spec-dir": "--specs",
    "--resync-interval": "--resync",
    "--listen-port": "--listen",
    "--listen-host": "--listen",
}


def _unknown_hosts(desired: DesiredState, hosts: list[str]) -> str:
    unknown = sorted(set(hosts) - set(desired.hosts))
    return (
        f"--host {', '.join(unknown)}: no such host in the specs (they have {', '.join(desired.hosts)})"
        if unknown
        else ""
    )


def _status_command(args: argparse.Namespace) -> int:
    from reconciler.output import Style, render_status, status_exit_code, wants_colour

    url = args.url.rstrip("/") + "/status"
    if "://" not in url:  # what --listen takes: HOST:PORT
        url = f"http://{url}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
        doc = json.loads(body)
    except (OSError, ValueError) as exc:
        print(
            f"cannot read the daemon's status at {url}: {exc}\n(is `reconciler run` running there? "
            "`reconciler check DIR` observes the hosts without a daemon)",
            file=sys.stderr,
        )
        return 3
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_status(doc, args.url, Style(wants_colour())))
    return status_exit_code(doc)


def _tuning_command(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or overlay_store.default_state_dir()
    if args.action == "clear":
        removed = overlay_store.clear(state_dir)
        print(
            f"{overlay_store.path_in(state_dir)}: {'removed' if removed else 'no overlay'}; the spec values apply "
            "again (a running daemon rolls them out one member at a time)"
        )
        return 0
    try:
        overlay = overlay_store.load(state_dir)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if overlay is None:
        print(f"no etcd tuning overlay in {state_dir}: the spec values apply")
        return 0
    print(json.dumps(asdict(overlay), indent=2))
    return 0


def _load(spec_dir: Path, state_dir: Path | None) -> tuple[DesiredState, str]:
    """Specs plus the daemon's overlay (if any), and a line describing the overlay for humans."""
    try:
        overlay = overlay_store.load(state_dir or overlay_store.default_state_dir())
    except ValueError as exc:
        print(f"warning: {exc}; ignoring it", file=sys.stderr)
        overlay = None
    pending = begin_load(spec_dir, overlay=overlay.as_env() if overlay else None)
    # while the load's child imports the loader and reads the specs, this process imports what it will run
    import reconciler.engine.converge
    import reconciler.transport.session  # noqa: F401

    desired = pending.result()
    if overlay is None or desired.tuning is None:
        return desired, ""
    return desired, (
        f"etcd tuning overlay in force ({desired.tuning.source}): heartbeat {overlay.heartbeat_ms} ms, "
        f"election {overlay.election_ms} ms, decided {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(overlay.decided_at))}"
        f"{f' ({overlay.cause})' if overlay.cause else ''}; effective {desired.tuning.effective}"
    )


def health_table(snapshot: HostSnapshot, host: DesiredHost, now: float | None = None) -> list[str]:
    """Units, health checks and certificates; a certificate's state and days are those /status reports
    (`status.report.certificate_report`, with the host's warnDays), in `output.certificate_text`'s words."""
    from reconciler.output import certificate_text
    from reconciler.status.report import certificate_report

    lines = []
    for unit in snapshot.units.values():
        lines.append(f"    unit  {unit.name:<32} {unit.active_state}/{unit.sub_state}, {unit.unit_file_state or '-'}")
    for check in snapshot.checks:
        lines.append(f"    check {check.name:<32} {'Healthy' if check.ok else 'Unhealthy'}  {check.detail}")
    for vip, held in snapshot.addresses.items():
        lines.append(f"    vip   {vip:<32} {'held here' if held else 'not held here'} ({host.addresses.get(vip, '')})")
    for path, cert in certificate_report(host, snapshot, time.time() if now is None else now).items():
        subject = f"  ({cert['subject']})" if cert["subject"] else ""
        lines.append(f"    cert  {path:<32} {certificate_text(cert)}{subject}")
    return lines


def _print_result(result: RunResult, command: str, desired: DesiredState) -> None:
    from reconciler.output import Style, colour_plan, wants_colour

    for outcome in result.outcomes.values():
        if command == "plan" and outcome.plan is not None:
            print(colour_plan(outcome.plan.render(), Style(wants_colour())))
            if outcome.snapshot is not None:  # what the daemon renews (apply does not): said with the plan
                from reconciler.engine.cert_schedule import planned

                host = desired.hosts[outcome.host]
                for line in planned(host, outcome.snapshot.certificates, time.time()):
                    print(colour_plan(line, Style(wants_colour())))
        elif command == "apply":
            print(outcome.summary())
            for action in outcome.applied:
                print(f"  {action.headline()}")
        elif command == "check" and outcome.status == "converged":  # check applies nothing: no "0 change(s) applied"
            print(f"{outcome.host}: converged (no drift, every check passes)")
        else:
            print(outcome.summary())
        if command in ("apply", "check") and outcome.snapshot is not None:
            print("\n".join(health_table(outcome.snapshot, desired.hosts[outcome.host])))


async def _run(args: argparse.Namespace, desired: DesiredState, live: Live) -> RunResult | None:
    """The command's pass over the hosts; None when --break-glass was refused (said on stderr)."""
    from reconciler.engine.converge import converge, observe_status, plan_all
    from reconciler.transport.session import Session, ssh_connector

    session = Session(ssh_connector(attempts=args.connect_attempts))
    ticking = asyncio.create_task(_tick(live)) if live.tty else None
    try:
        if args.command == "plan":
            result = await plan_all(desired, session, args.host)
        elif args.command == "apply":
            if args.break_glass:
                from reconciler.engine.break_glass import refusal

                refused = await refusal(session, desired)
                if refused:
                    print(f"refusing --break-glass: {refused}", file=sys.stderr)
                    return None
                print(
                    f"break glass: etcd does not answer; no restart lock, and {desired.etcd_unit}'s members restart "
                    "without the quorum guard or waiting (other rollout units keep their guard)",
                    file=sys.stderr,
                )
            user = os.environ.get("USER") or f"uid {os.getuid()}"
            actor = f"reconciler apply ({user}@{socket.gethostname()}, pid {os.getpid()})"
            result = await converge(
                desired, session, wait=args.wait, only=args.host, actor=actor, break_glass=args.break_glass
            )
        else:
            result = await observe_status(desired, session, args.host)
    finally:
        if ticking is not None:
            ticking.cancel()
        await session.close()
        live.erase()
    return result


def _finish(args: argparse.Namespace, result: RunResult, desired: DesiredState, overlay_line: str) -> int:
    """Print the result (a table, or the --json document) and say the exit code."""
    failed = [o.host for o in result.failed]
    code = 1 if failed else 2 if args.command == "plan" and result.pending else 0
    if args.json:
        from reconciler.documents import run_document

        print(json.dumps(run_document(args.command, result, desired, code, str(args.spec_dir), overlay_line), indent=2))
        return code
    if overlay_line:
        print(overlay_line)
    _print_result(result, args.command, desired)
    if failed:
        print(f"\n{len(failed)} of {len(result.outcomes)} host(s) failed: {', '.join(failed)}", file=sys.stderr)
    return code


async def _tick(live: Live) -> None:
    """Redraw every second: a host that waits shows for how long."""
    while True:
        await asyncio.sleep(1)
        live.draw()


def _with_progress(args: argparse.Namespace, desired: DesiredState, holder: list[Live], overlay_line: str) -> int:
    """`plan`/`apply`/`check` with each host's progress on stderr (see `live`); logs go above the live lines."""
    live = showing(sorted(n for n in desired.hosts if not args.host or n in args.host), args.log_format)
    holder.append(live)
    stderr = sys.stderr
    if live.tty:
        sys.stderr = Above(live, stderr)  # type: ignore[assignment]
        live.draw()  # within a moment of starting, the operator sees every host
    try:
        with progress.reporting(live):
            result = asyncio.run(_run(args, desired, live))
    finally:
        sys.stderr = stderr
    return 1 if result is None else _finish(args, result, desired, overlay_line)


def _interrupted(holder: list[Live]) -> int:
    """Ctrl-C: what each host had done and what it was doing; exit 130."""
    print("\ninterrupted", file=sys.stderr)
    if not holder:
        print("no host was touched", file=sys.stderr)
    for live in holder:
        live.erase()
        for line in live.interrupted():
            print(line, file=sys.stderr)
    return INTERRUPTED


def _crashed(exc: BaseException, debug: bool) -> int:
    """An internal error: one line, and the traceback in a report file (printed too with --log-level debug)."""
    text = "".join(traceback.format_exception(exc))
    where = ""
    for directory in (overlay_store.default_state_dir(), Path(tempfile.gettempdir())):
        try:
            fd, name = tempfile.mkstemp(prefix=f"crash-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".txt", dir=directory)
            with os.fdopen(fd, "w") as report:
                report.write(text)
            where = name
            break
        except OSError:
            continue
    if debug:
        print(text, file=sys.stderr, end="")
    first = str(exc).splitlines()[0] if str(exc) else ""
    print(
        f"reconciler: internal error: {type(exc).__name__}{f': {first}' if first else ''}"
        f"{f'; full report in {where}' if where else ''} (please report it)",
        file=sys.stderr,
    )
    return EX_SOFTWARE


def _os_error(exc: OSError) -> str:
    """An OSError as a person reads it: the file and what is wrong with it."""
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


def _raise_open_files_limit() -> None:
    """The daemon keeps one SSH connection per host: raise the soft limit of open files (often 1024) to the
    hard one, as systemd advises services to do themselves, so a fleet of a thousand hosts fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str] | None = None) -> int:
    """The command; never a traceback: Ctrl-C exits 130, a file problem is one line, an internal error 70."""
    holder: list[Live] = []
    given = argv if argv is not None else sys.argv[1:]
    debug = any(
        w == "--log-level=debug" or (w == "--log-level" and n == "debug") for w, n in zip(given, [*given[1:], ""])
    )
    try:
        return _main(argv, holder)
    except KeyboardInterrupt:
        return _interrupted(holder)
    except BrokenPipeError:  # `reconciler plan --json | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE
    except OSError as exc:  # the state dir, a spec dir, a file named on the command line
        print(f"reconciler: {_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        return _crashed(exc, debug)


def _main(argv: list[str] | None, holder: list[Live]) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("run", "status"):
        args = _settings_defaults(args)
    if args.command == "run":
        from pydantic import ValidationError

        from reconciler.engine.daemon import Daemon

        configure_logging(args.log_level or "info", args.log_format)
        _raise_open_files_limit()
        try:
            settings = _daemon_settings(args)
        except ValidationError as exc:
            for error in exc.errors():
                flag = "--" + "-".join(str(x) for x in error["loc"]).replace("_", "-") if error["loc"] else "settings"
                print(f"{_FLAGS.get(flag, flag)}: {error['msg']}", file=sys.stderr)
            return EX_USAGE
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return EX_USAGE
        return asyncio.run(Daemon(settings).run())
    configure_logging(args.log_level or "warning", args.log_format)
    if args.command == "tuning":
        return _tuning_command(args)
    if args.command == "status":
        return _status_command(args)
    if args.command == "import":
        return _import_command(args)
    if args.command == "etcd":
        from reconciler import etcd_cli as etcd_command

        return etcd_command.run(args)
    if args.command == "certs":
        from reconciler import certs_cli

        return certs_cli.run(args)
    if args.command == "init":
        from reconciler.init import init_command

        return init_command(args.dir, unit_only=args.unit_only)
    overlay_line = ""
    try:
        if args.command == "validate":
            desired = load_desired(args.spec_dir)
        else:
            desired, overlay_line = _load(args.spec_dir, args.state_dir)
    except SpecError as exc:
        if args.json:
            from reconciler.documents import spec_error_document

            print(json.dumps(spec_error_document(args.command, exc, str(args.spec_dir)), indent=2))
            return 1
        print(f"{len(exc.issues)} error(s) in {args.spec_dir}:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    if not args.json:
        for warning in desired.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if args.command == "validate":
        if args.json:
            from reconciler.documents import valid_document

            print(json.dumps(valid_document("validate", desired, str(args.spec_dir)), indent=2))
            return 0
        print(f"{args.spec_dir}: valid ({len(desired.hosts)} host(s))")
        return 0
    unknown = _unknown_hosts(desired, args.host)
    if unknown:
        print(unknown, file=sys.stderr)
        return EX_USAGE
    return _with_progress(args, desired, holder, overlay_line)


if __name__ == "__main__":
    sys.exit(main())
