"""The ``sipwake`` command line (thin: each command calls into the package)."""

from __future__ import annotations

import sys

import click

from sipwake import __version__
from sipwake.errors import SipParseError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sipwake")
def main() -> None:
    """sipwake: SIP registrar and push-waking proxy, a lab PBX for softphones that sleep."""


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
