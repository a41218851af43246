"""The ``udpbeat`` command's first module, outside the package so that it runs first.

Python takes a third of a second or more to import udpbeat, click, asyncio and aiohttp, and a
Ctrl-C in that time would end the command with a KeyboardInterrupt traceback from some import.
Until the command has been imported there is nothing to stop cleanly and nothing to report, so
a Ctrl-C then ends it at once, quietly, with the shell's status for it (130). The package itself
never touches signal handlers on import: ``import udpbeat`` in a program changes nothing.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

#: 128 + SIGINT, what a shell reports for a command that Ctrl-C ended.
EXIT_INTERRUPTED = 130


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    os._exit(EXIT_INTERRUPTED)  # nothing printed, nothing opened yet: no cleanup to run


def main() -> None:
    """Import the command with Ctrl-C ending it quietly, then run it with Python's own handler."""
    previous = signal.getsignal(signal.SIGINT)
    # An ignored SIGINT (a background job, nohup) stays ignored.
    guarded = previous is not signal.SIG_IGN
    if guarded:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    from udpbeat.cli import main as run_command

    if guarded:
        signal.signal(signal.SIGINT, previous)
    run_command()
