"""The ``sipwake`` command line (thin: each command calls into the package)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from sipwake import __version__
from sipwake.errors import SipParseError
from sipwake.sip.grammar import COMPILED

__all__ = ["main"]

_F = TypeVar("_F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sipwake")
def main() -> None:
    """sipwake: SIP registrar and push-waking proxy, a lab PBX for softphones that sleep."""


def _existing_db(db: str) -> str:
    """``db`` if the file exists; else one line and exit 2 (reading must not create it)."""
    import os

    if not os.path.exists(db):
        click.echo(f"error: {db}: no such database (sipwake serve --db PATH writes one)", err=True)
        sys.exit(2)
    return db


def _as_aor(user: str | None) -> str | None:
    """``alice@lab.test`` → ``sip:alice@lab.test`` (an AOR as the store keys it)."""
    if user is not None and not user.startswith(("sip:", "sips:")):
        return f"sip:{user}"
    return user


def _print_table(table: object) -> None:
    """A rich table, full width when piped (nothing cut off)."""
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 200).print(table)


@main.command("parse")
@click.argument("source", type=click.File("rb"), default="-")
@click.option(
    "--stream", is_flag=True, help="Frame as read from TCP/TLS (no body without Content-Length)."
)
def parse_cmd(source: click.utils.LazyFile, stream: bool) -> None:
    """Parse a SIP message from SOURCE (a file, or - for standard input) and explain it.

    Exits 0 and prints each header's parsed value, or exits 1 with the reason the
    message would be refused (the reason phrase sipwake puts in its 400).
    """
    from sipwake.describe import describe_message
    from sipwake.sip.parser import parse_message

    data: bytes = source.read()
    try:
        message = parse_message(data, stream=stream)
    except SipParseError as exc:
        click.echo(f"error: not a valid SIP message: {exc.reason}", err=True)
        click.echo(f"a server would answer {exc.status_hint} ({exc.reason})", err=True)
        sys.exit(1)
    for line in describe_message(message):
        click.echo(line)


@main.command("serve")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML configuration file (defaults work without one).",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="TRANSPORT:HOST:PORT",
    help="Listen here instead of the configured listeners (repeatable).",
)
@click.option(
    "--open",
    "open_",
    is_flag=True,
    help="Accept any user of the domain without authentication (labs, benchmarks).",
)
@click.option("--domain", default=None, help="SIP domain served (default lab.test).")
@click.option("--db", "db", default=None, help="SQLite file for bindings (default ./sipwake.db).")
@click.option("--memory", is_flag=True, help="Keep bindings in memory only.")
@click.option(
    "--admin",
    "admin",
    default=None,
    metavar="HOST:PORT|auto|off",
    help="Status/admin endpoint (sipwake status, mobile): auto (default: 127.0.0.1, the "
    "first SIP port + 4 or any free port), HOST:PORT, or off.",
)
@click.option("--trace", is_flag=True, help="Print every SIP message sent and received (masked).")
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    show_default=True,
)
@click.option(
    "--log-format", default="text", type=click.Choice(["text", "json"]), show_default=True
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def serve_cmd(
    config_path: str | None,
    listen: tuple[str, ...],
    open_: bool,
    domain: str | None,
    db: str | None,
    memory: bool,
    admin: str | None,
    trace: bool,
    log_level: str,
    log_format: str,
    debug: bool,
) -> None:
    """Run the lab PBX (registrar + stateful proxy)."""
    import asyncio

    from sipwake.config import load_config, parse_listen
    from sipwake.errors import ConfigError
    from sipwake.logs import setup_logging
    from sipwake.server import Server

    setup_logging(log_level, log_format)
    try:
        config = load_config(config_path)
        updates: dict[str, object] = {}
        if listen:
            try:
                updates["listen"] = [parse_listen(item) for item in listen]
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--listen") from exc
        if domain:
            updates["domain"] = domain
        if db or memory:
            store = config.store.model_copy(
                update={"backend": "memory" if memory else "sqlite", **({"path": db} if db else {})}
            )
            updates["store"] = store
        if admin is not None:
            from pydantic import ValidationError

            try:  # checked as the file's ``admin:`` is
                updates["admin"] = type(config).model_validate({"admin": admin}).admin
            except ValidationError as exc:
                message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                raise click.BadParameter(message, param_hint="--admin") from exc
        if updates:
            config = config.model_copy(update=updates)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

    server = Server(config, open=open_, trace=trace)

    async def run() -> None:
        await server.start()
        _banner(server, config_path)
        await server.run()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except (ConfigError, OSError) as exc:
        if debug:
            raise
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        click.echo(f"error: {text}", err=True)
        sys.exit(2)


def _banner(server: object, config_path: str | None = None) -> None:
    from sipwake.server import Server

    assert isinstance(server, Server)
    config = server.config
    click.echo(f"sipwake {__version__}: lab PBX for domain {config.domain}")
    for listener in server.bound:
        click.echo(f"  listening  {listener.transport:<4} {listener.host_port}")
    store = "memory" if config.store.backend == "memory" else str(config.store.path)
    click.echo(f"  bindings   {store}")
    core = "compiled (mypyc)" if COMPILED else "interpreted (README: Speed)"
    click.echo(f"  core       {core}")
    if server.admin is not None:
        click.echo(
            f"  admin      {server.admin.url}  (sipwake status, sipwake mobile: found "
            f"through {config.admin_file})"
        )
    else:
        click.echo("  admin      off")
    for what, how in server.describe():
        click.echo(f"  {what:<10} {how}")
    if server.open or config.auth.open:
        click.echo("  WARNING: --open: registrations and calls are accepted without authentication")
    click.echo("  users (register as USER@DOMAIN with this password):")
    source = config_path or "the configuration"
    for name, password in server.passwords.items():
        if config.users[name].password is None:  # derived from the secret: a demo password
            click.echo(f"    {name:<10} {password}")
        else:  # the user's own: never printed (terminal scrollback, CI logs)
            click.echo(f"    {name:<10} (password set in {source})")
    click.echo("  Ctrl-C stops.")


_SERVER_DIR = click.option(
    "--server",
    "server_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The folder of the sipwake serve to talk to (its sipwake-admin file).",
)


def _admin_target(url: str | None, server_dir: str) -> object:
    from sipwake.adminclient import AdminClientError, locate

    try:
        return locate(url, server_dir)
    except AdminClientError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.command("status")
@click.option(
    "--url",
    default=None,
    help="The admin endpoint of a running sipwake serve (default: the one of --server's folder).",
)
@_SERVER_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def status_cmd(url: str | None, server_dir: str, as_json: bool) -> None:
    """Users, their devices and client state (foreground / suspended / offline) as seen by
    the running ``sipwake serve`` of this folder; push tokens masked."""
    import json

    from sipwake.adminclient import AdminClientError, AdminTarget

    target = _admin_target(url, server_dir)
    assert isinstance(target, AdminTarget)
    try:
        data = target.get("/status")
    except AdminClientError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    server = data.get("server") or {}
    table = Table(
        title=f"sipwake {data.get('domain', '')}: {data.get('calls_active', 0)} calls "
        f"(folder {server.get('folder', '?')}, pid {server.get('pid', '?')})"
    )
    for column in ("user", "presence", "device", "state", "via", "registered", "push"):
        table.add_column(column)
    for user in data.get("users", []):
        first = True
        for device in user["devices"]:
            push = device.get("push")
            table.add_row(
                user["aor"] if first else "",
                (user["presence"] + (" (DND)" if user.get("dnd") else "")) if first else "",
                device.get("instance") or device["contact"],
                device["state"],
                f"{device['transport']} {device['source']}",
                f"{device['registered_s_ago']:g} s ago",
                _push_cell(push),
            )
            first = False
    _print_table(table)
    for name, limit in (data.get("limits") or {}).items():
        if limit.get("refused"):
            top = ", ".join(f"{e['key']} {e['refused']}" for e in limit.get("top", []))
            click.echo(f"rate limit {name} {limit['rate']}: {limit['refused']} refused ({top})")


def _push_cell(push: dict[str, Any] | None) -> str:
    """A device's push target in ``sipwake status``: provider and masked token, and
    ``no alert token`` for an iOS app that gave only its VoIP token (no missed-call,
    cancel or message alerts)."""
    if not push:
        return "-"
    text = f"{push['provider']} {push['token']}"
    return f"{text} (no alert token)" if push.get("alert") == "no alert token" else text


@main.command("mock-push")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default="sipwake-mock-push",
    show_default=True,
    help="Where the keys, certificates and push.yaml are written.",
)
@click.option("--bundle-id", default="org.lab.phone", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65533),
    default=18443,
    show_default=True,
    help="APNs listens on PORT, FCM on PORT+1, Web Push on PORT+2 (0: any free ports); "
    "sipwake replay --target uses the same.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="COMMAND",
    help="A fault from the start, e.g. 'dead TOKEN', 'fail apns 429 TooManyRequests "
    "retry-after=5 times=2', 'latency 50' (repeatable; the same commands can be typed "
    "on standard input while it runs; 'help' lists them).",
)
def mock_push_cmd(
    directory: str, bundle_id: str, host: str, port: int, faults: tuple[str, ...]
) -> None:
    """Local mock APNs, FCM and Web Push service (HTTP/2 over TLS on 127.0.0.1) that check
    pushes as the real services do; writes the matching push settings to DIR/push.yaml and
    prints every push it accepts until Ctrl-C. Keys and certificates in DIR are kept
    across runs, so a server is configured once. Faults are injected with --fault or by
    typing fault commands on standard input."""
    import asyncio
    import contextlib
    import signal
    import threading
    from pathlib import Path

    from sipwake.push.mockcli import run_mock_push

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        commands: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:  # a thread: stdin may be a terminal, a pipe or closed
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line.strip())

        threading.Thread(target=read_stdin, name="mock-push-stdin", daemon=True).start()
        await run_mock_push(
            Path(directory),
            bundle_id=bundle_id,
            say=lambda line: click.echo(line, nl=True),
            stop=stop,
            faults=faults,
            commands=commands,
            host=host,
            port=port,
        )

    try:
        asyncio.run(run())
    except ValueError as exc:
        click.echo(f"error: --fault: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host} ports {port}-{port + 2}: {exc}", err=True)
        sys.exit(2)


@main.command("push-test")
@click.argument("target")
@click.option(
    "--kind",
    type=click.Choice(["call", "message", "cancel"]),
    default="call",
    show_default=True,
    help="call: a VoIP push (APNs voip, FCM high priority); message, cancel: alerts.",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The configuration whose push providers to use (the server's).",
)
@click.option("--db", default=None, help="The server's bindings (default: the config's store).")
def push_test_cmd(target: str, kind: str, config_path: str | None, db: str | None) -> None:
    """Send one real push to the registered device(s) of TARGET and print the provider's
    answer. TARGET: a user (bob), an AOR, a device's +sip.instance, or the first 6+
    characters of its push token. Exit 0 when every push was delivered."""
    import asyncio

    from sipwake.config import load_config
    from sipwake.errors import ConfigError
    from sipwake.push.pushtest import PushTestError, db_of, push_test

    try:
        config = load_config(config_path)
        results = asyncio.run(
            push_test(config, db_of(config, db), target, kind=kind, say=click.echo)  # type: ignore[arg-type]
        )
    except (ConfigError, PushTestError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(0 if all(r.outcome.status == "delivered" for r in results) else 1)


@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
def check_config_cmd(path: str) -> None:
    """Check a YAML configuration file; print each error with file, line and field."""
    from sipwake.config import load_config
    from sipwake.errors import ConfigError

    try:
        config = load_config(path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(
        f"{path}: ok (domain {config.domain}, {len(config.listen)} listeners, "
        f"{len(config.users)} users)"
    )


@main.command("pushes")
@click.option(
    "--db",
    "db",
    default="sipwake.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="SQLite file the server writes.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--user", "aor", default=None, help="Only this AOR (sip:alice@lab.test).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def pushes_cmd(db: str, limit: int, aor: str | None, as_json: bool) -> None:
    """List recent push attempts, newest first (device tokens masked)."""
    import dataclasses
    import json
    from datetime import datetime

    from rich import box
    from rich.table import Table

    from sipwake.store.base import StoreError
    from sipwake.store.sqlite import SqliteStore

    aor = _as_aor(aor)
    try:
        with SqliteStore(_existing_db(db)) as store:
            records = store.pushes(limit, aor=aor)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in records], ensure_ascii=False))
        return
    if not records:
        click.echo(f"no push attempts recorded in {db}" + (f" for {aor}" if aor else ""))
        return
    table = Table(title=f"push attempts in {db}, newest first", box=box.SIMPLE_HEAD)
    table.add_column("time", no_wrap=True)
    table.add_column("user", overflow="fold", min_width=10)
    table.add_column("token", no_wrap=True, min_width=max(len(r.token) for r in records))
    for column in ("kind", "provider", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=8)
    table.add_column("latency", justify="right", no_wrap=True)
    for r in records:
        table.add_row(
            datetime.fromtimestamp(r.wall).strftime("%m-%d %H:%M:%S"),
            r.aor or "-",
            r.token,
            r.kind,
            r.provider,
            r.status,
            " ".join(str(x) for x in (r.http_status, r.reason) if x is not None) or "-",
            f"{r.latency * 1000:.0f} ms",
        )
    # Piped into a file or grep: every column in full, whatever COLUMNS says.
    _print_table(table)


def _host_port(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@main.command("replay")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--clock",
    type=click.Choice(["virtual", "real"]),
    default="virtual",
    show_default=True,
    help="virtual: in-memory transports on a virtual clock (deterministic, fast); "
    "real: loopback sockets and real time against an embedded sipwake server.",
)
@click.option(
    "--target",
    metavar="HOST:PORT",
    callback=_host_port,
    help="Replay (in real time) against this SIP server instead: UDP/TCP devices use "
    "PORT, TLS ones PORT+1; the server's own settings apply (see the README's limits).",
)
@click.option(
    "--mock-push",
    "mock_push",
    metavar="HOST:PORT",
    callback=_host_port,
    help="With --target: where the mock push services listen, APNs on PORT, FCM on "
    "PORT+1 (PORT+2 is Web Push's in sipwake mock-push) [default: 127.0.0.1:18443].",
)
@click.option(
    "--mock-push-dir",
    type=click.Path(file_okay=False),
    default="sipwake-mock-push",
    show_default=True,
    help="With --target: the mocks' keys, certificates and push.yaml, kept across runs "
    "(the same as sipwake mock-push --dir).",
)
@click.option(
    "--full",
    is_flag=True,
    help="Real time: run each scenario for its whole duration_s (default: stop once "
    "nothing more can happen that an expectation looks at).",
)
@click.option("--junit", "junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option(
    "--html",
    "html_dir",
    type=click.Path(file_okay=False),
    help="Write one HTML page per scenario (verdict, SVG ladder) and index.html here.",
)
@click.option("--quiet", is_flag=True, help="Verdict lines only: no ladders, no met expectations.")
def replay_cmd(
    paths: tuple[str, ...],
    clock: str,
    target: tuple[str, int] | None,
    mock_push: tuple[str, int] | None,
    mock_push_dir: str,
    full: bool,
    junit: str | None,
    html_dir: str | None,
    quiet: bool,
) -> None:
    """Replay scenario files (FILE or DIR of *.yaml): verdicts, ladder diagrams, JUnit.

    Exits 0 when every expectation of every scenario is met, 1 when one is missed,
    2 when a scenario file is invalid (the other files still run).
    """
    import logging
    from pathlib import Path

    from sipwake.scenario import ScenarioResult, junit_xml, ladder, verdict_text
    from sipwake.scenario.suite import run_file, scenario_files

    files = list(scenario_files(paths))
    if not files:
        click.echo(f"error: no scenario files (*.yaml) in {', '.join(paths)}", err=True)
        sys.exit(2)
    real = clock == "real" or target is not None
    if mock_push is not None and target is None:
        click.echo("error: --mock-push only applies with --target", err=True)
        sys.exit(2)
    mocks = None
    if target is not None:
        from sipwake.push.mockcli import MOCK_PUSH_PORT
        from sipwake.scenario.live import MockPush

        host, port = mock_push or ("127.0.0.1", MOCK_PUSH_PORT)
        if port > 65533:
            click.echo(f"error: --mock-push: {port}+1 is not a port", err=True)
            sys.exit(2)
        mocks = MockPush(host=host, port=port, directory=Path(mock_push_dir))
        click.echo(
            f"mock APNs at {mocks.url('apns')}, mock FCM at {mocks.url('fcm')}; "
            f"push settings for {target[0]}:{target[1]} in "
            f"{Path(mock_push_dir).resolve() / 'push.yaml'}"
        )
    if real:  # connection failures to suspended phones are expected: no log noise
        logging.getLogger("sipwake").setLevel(logging.ERROR)

    def render(result: ScenarioResult) -> str:
        text = verdict_text(result)
        if quiet:
            return "\n".join(line for line in text.splitlines() if not line.startswith("  met "))
        if result.replay is not None:
            text += "\n" + ladder(result.replay)
        return text + "\n"

    def run(path: Path) -> ScenarioResult:
        try:
            return run_file(
                path, clock="real" if real else "virtual", target=target, mocks=mocks, full=full
            )
        except OSError as exc:  # MockPushError among them: no replay can run
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    results: list[ScenarioResult] = []
    if sys.stdout.isatty() and len(files) > 1:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("replaying", total=len(files))
            for path in files:
                progress.update(task, description=f"replaying {path.name}")
                result = run(path)
                results.append(result)
                progress.console.print(render(result), markup=False, highlight=False)
                progress.advance(task)
    else:
        for path in files:
            result = run(path)
            results.append(result)
            click.echo(render(result))
    passed = sum(r.passed for r in results)
    bad = sum(r.error is not None for r in results)
    total = sum(r.wall_s for r in results)
    took = f"{total:.1f} s" if real else f"{total * 1000:.0f} ms"
    click.echo(
        f"{passed}/{len(results)} scenarios passed"
        + (f", {bad} invalid" if bad else "")
        + f" ({took})"
    )
    if junit:
        Path(junit).write_text(junit_xml(results), encoding="utf-8")
    if html_dir:
        from sipwake.scenario.htmlreport import write_html

        write_html(results, Path(html_dir))
        click.echo(f"HTML report: {Path(html_dir) / 'index.html'}")
    sys.exit(2 if bad else 0 if passed == len(results) else 1)


@main.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of scenario files (for editors and linters)."""
    import json

    from sipwake.scenario.model import scenario_json_schema

    click.echo(json.dumps(scenario_json_schema(), indent=2, ensure_ascii=False))


@main.command("voicemail")
@click.option(
    "--dir",
    "directory",
    default="sipwake-voicemail",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory the voicemail writes messages to.",
)
@click.option("--user", default=None, help="Only this mailbox (alice or sip:alice@lab.test).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def voicemail_cmd(directory: str, user: str | None, as_json: bool) -> None:
    """List recorded voicemail messages, newest first."""
    import json

    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from sipwake.voicemail import list_messages

    messages = list_messages(directory, user)
    if as_json:
        click.echo(json.dumps([m.to_json() for m in messages], ensure_ascii=False))
        return
    if not messages:
        click.echo(f"no voicemail in {directory}" + (f" for {user}" if user else ""))
        return
    table = Table(title=f"voicemail in {directory}, newest first", box=box.SIMPLE_HEAD)
    table.add_column("time", no_wrap=True)
    for column in ("user", "from"):
        table.add_column(column, overflow="fold", min_width=10)
    table.add_column("cause", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("file", overflow="fold")
    for m in messages:
        caller = f"{m.caller_name} <{m.caller}>" if m.caller_name else m.caller
        table.add_row(
            m.started.astimezone().strftime("%m-%d %H:%M:%S"),
            escape(m.user),
            escape(caller),
            str(m.cause) if m.cause is not None else "-",
            f"{m.duration:.1f} s",
            escape(str(m.path)),
        )
    _print_table(table)


# -- sipwake calls: call records and ladder diagrams ------------------------------------
@main.group("calls", invoke_without_command=True)
@click.option(
    "--db",
    "db",
    default="sipwake.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="SQLite file the server writes.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--user", "aor", default=None, help="Only calls to this AOR (sip:alice@lab.test).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option(
    "--width",
    default=None,
    type=click.IntRange(min=60),
    help="Columns to fit (default: the terminal's, 80 when piped).",
)
@click.pass_context
def calls_cmd(
    ctx: click.Context, db: str, limit: int, aor: str | None, as_json: bool, width: int | None
) -> None:
    """List recent calls, newest first: outcome, ring and talk time, who hung up.

    `sipwake calls show REF` prints one call: times, parties, ladder.
    """
    import json

    from sipwake.calls.view import render_call_list, summary_json
    from sipwake.store.base import StoreError
    from sipwake.store.sqlite import SqliteStore

    ctx.meta["sipwake.calls.db"] = db
    if ctx.invoked_subcommand is not None:
        return
    aor = _as_aor(aor)
    try:
        with SqliteStore(_existing_db(db)) as store:
            summaries = store.calls(limit, aor=aor)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps([summary_json(s) for s in summaries], ensure_ascii=False))
        return
    if not summaries:
        click.echo(f"no calls recorded in {db}" + (f" for {aor}" if aor else ""))
        return
    for line in render_call_list(summaries, width=width or _columns()):
        click.echo(line)


def _columns() -> int:
    """The terminal's width (at most 160), or 80 when the output is not a terminal."""
    import shutil

    if not sys.stdout.isatty():
        return 80
    return max(60, min(160, shutil.get_terminal_size((80, 24)).columns))


@calls_cmd.command("show")
@click.argument("ref")
@click.option(
    "--db",
    "db",
    default=None,
    type=click.Path(dir_okay=False),
    help="SQLite file the server writes (default: the one given to `calls`, or sipwake.db).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option(
    "--messages",
    "-m",
    "messages",
    is_flag=True,
    help="Also print each SIP message: first line and the header fields kept.",
)
@click.option(
    "--width",
    default=None,
    type=click.IntRange(min=40),
    help="Columns to fit (default: the terminal's, 80 when piped).",
)
@click.pass_context
def calls_show_cmd(
    ctx: click.Context, ref: str, db: str | None, as_json: bool, messages: bool, width: int | None
) -> None:
    """Show call REF: times and durations, who answered and who hung up, a legend of
    the parties, the timeline and a ladder of its messages and pushes."""
    import json

    from sipwake.calls.view import call_json, render_call
    from sipwake.store.base import StoreError
    from sipwake.store.sqlite import SqliteStore

    db = db or str(ctx.meta.get("sipwake.calls.db", "sipwake.db"))
    try:
        with SqliteStore(_existing_db(db)) as store:
            record = store.call(ref)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if record is None:
        click.echo(f"error: no call {ref!r} in {db} (sipwake calls lists them)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(call_json(record, width=width or 80), ensure_ascii=False))
        return
    for line in render_call(record, width=width or _columns(), messages=messages):
        click.echo(line)


def _admin_url(command: _F) -> _F:
    """``--url`` and ``--server`` of the commands that drive a running server."""
    with_url = click.option(
        "--url",
        default=None,
        help="The admin endpoint of a running sipwake serve (default: the one of "
        "--server's folder).",
    )
    return with_url(_SERVER_DIR(command))


# -- sipwake dnd: a user's do-not-disturb while the server runs -------------------------
@main.command("dnd")
@click.argument("user")
@click.argument("state", type=click.Choice(["on", "off"]))
@_admin_url
def dnd_cmd(user: str, state: str, url: str | None, server_dir: str) -> None:
    """Turn USER's do-not-disturb on or off in the running sipwake serve (as the phone's
    *78 / *79 does): calls then push nobody and go straight to the no-answer target.
    Kept in memory: a restart returns to users.<name>.dnd."""
    _admin_post(url, server_dir, "dnd", user, state)
    click.echo(f"{user}: do not disturb {state}")


# -- sipwake mobile: the built-in mobile behind the twin branch -------------------------
@main.group("mobile")
def mobile_cmd() -> None:
    """Drive the built-in mobile (the twin branch's far end when no gateway is set)."""


def _admin_post(
    url: str | None, server_dir: str, what: str, name: str, verb: str
) -> dict[str, Any]:
    """``POST /WHAT/NAME/VERB`` to the running server's admin endpoint; its answer, or
    one line and exit 2 (no such server) or 1 (the action was refused)."""
    from urllib.parse import quote

    from sipwake.adminclient import AdminClientError, AdminTarget

    target = _admin_target(url, server_dir)
    assert isinstance(target, AdminTarget)
    try:
        status, data = target.post(f"/{what}/{quote(name, safe='')}/{verb}")
    except AdminClientError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if status != 200:
        click.echo(f"error: {data.get('error', status)}", err=True)
        sys.exit(1)
    return data


def _mobile_action(verb: str, number: str, url: str | None, server_dir: str) -> None:
    data = _admin_post(url, server_dir, "mobile", number, verb)
    click.echo(f"{number}: {verb} ({data.get('calls', 0)} call(s))")


@mobile_cmd.command("answer")
@click.argument("number")
@_admin_url
def mobile_answer_cmd(number: str, url: str | None, server_dir: str) -> None:
    """Pick up the call ringing on the built-in mobile NUMBER (200 OK)."""
    _mobile_action("answer", number, url, server_dir)


@mobile_cmd.command("reject")
@click.argument("number")
@_admin_url
def mobile_reject_cmd(number: str, url: str | None, server_dir: str) -> None:
    """Decline the call ringing on the built-in mobile NUMBER (486 Busy Here)."""
    _mobile_action("reject", number, url, server_dir)


@mobile_cmd.command("hangup")
@click.argument("number")
@_admin_url
def mobile_hangup_cmd(number: str, url: str | None, server_dir: str) -> None:
    """Hang up the answered call on the built-in mobile NUMBER (BYE)."""
    _mobile_action("hangup", number, url, server_dir)
