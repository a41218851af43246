"""``udpbeat``: the command line. The only package that prints or exits.

One module per command (:mod:`.server`, :mod:`.client`, :mod:`.demo`, :mod:`.monitor`), the
pure line formats in :mod:`.format`, and the output that never blocks the event loop in
:mod:`.output`.

Exit status: 0 the run ended with the server up; 1 the server was declared down (or never
answered); 2 bad usage or an error that stopped the run, with one line on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from udpbeat.cli.client import client
from udpbeat.cli.demo import demo
from udpbeat.cli.monitor import monitor
from udpbeat.cli.output import STDOUT_CLOSED, guard_standard_streams
from udpbeat.cli.proxy import proxy
from udpbeat.cli.report import report
from udpbeat.cli.server import server
from udpbeat.errors import UdpbeatError

EXIT_ERROR = 2
#: Set by the shell's completion script (``_UDPBEAT_COMPLETE=bash_source udpbeat`` makes one).
COMPLETE_VARIABLE = "_UDPBEAT_COMPLETE"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="udpbeat")
def cli() -> None:
    """UDP heartbeats: is the server alive, and how does the path to it behave?"""


cli.add_command(server)
cli.add_command(client)
cli.add_command(demo)
cli.add_command(proxy)
cli.add_command(monitor)
cli.add_command(report)


def _error(message: str) -> None:
    # The one line before exit 2. stderr may be gone too: then there is no one to tell.
    try:
        sys.stderr.write(f"udpbeat: error: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _usage() -> None:
    """``udpbeat`` alone: the whole help, on stderr (it is not what was asked for), exit 2."""
    context = click.Context(cli, info_name="udpbeat", **cli.context_settings)
    try:
        sys.stderr.write(cli.get_help(context) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: click's parsing with one-line errors and our exit codes."""
    stdout_closed = guard_standard_streams()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args and COMPLETE_VARIABLE not in os.environ:  # completion runs with no arguments
        _usage()
        sys.exit(EXIT_ERROR)
    try:
        status = cli.main(
            args=args,
            prog_name="udpbeat",
            standalone_mode=False,
            obj={STDOUT_CLOSED: stdout_closed},
        )
    except click.UsageError as error:
        _error(error.format_message())
        sys.exit(EXIT_ERROR)
    except click.ClickException as error:
        _error(error.format_message())
        sys.exit(EXIT_ERROR)
    except click.Abort:
        sys.exit(130)
    except UdpbeatError as error:
        _error(str(error))
        sys.exit(EXIT_ERROR)
    except OSError as error:
        _error(error.strerror or str(error))
        sys.exit(EXIT_ERROR)
    sys.exit(status if isinstance(status, int) else 0)
