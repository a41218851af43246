"""Lines to stdout and stderr that never block the event loop, and that notice a lost reader.

A command's event loop handles its signals; if it wrote to a pipe whose reader has paused (a
``| less`` left at its prompt, a slow log collector), one ``write`` would block it, and Ctrl-C
or SIGTERM would wait as long as the pipe stays full. So every line goes through a
:class:`LineWriter`: the loop appends the line to a queue and goes on; a thread of the writer's
own does the blocking writes. The queue is bounded: while the reader is stalled, lines past
``max_pending`` are dropped and counted, never buffered without limit.

When the reader goes away (``| head -1``) the write fails with ``EPIPE``; the writer stops
writing, drops what is queued, and calls ``on_lost`` once, from its own thread. What a command
does then is its own choice: a client ends quietly, a server keeps answering.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO

import click

#: Lines queued at most while the reader is slow; the rest are dropped and counted.
MAX_PENDING = 10_000
#: Seconds :meth:`LineWriter.close` waits for queued lines to be written.
CLOSE_TIMEOUT = 2.0


class LineWriter:
    """Writes lines to ``stream`` from a thread of its own; :meth:`write` never blocks.

    ``stream`` is written through its file descriptor (``os.write``, no Python buffer left
    holding bytes that an exiting interpreter would then block on) when it has one, else
    through ``write`` and ``flush`` (click's ``CliRunner`` captures output in memory).
    """

    def __init__(
        self,
        stream: TextIO | None,
        *,
        on_lost: Callable[[OSError], None] | None = None,
        max_pending: int = MAX_PENDING,
        name: str = "udpbeat-output",
    ) -> None:
        self._stream = stream
        self._fd = _fileno(stream)
        self._on_lost = on_lost
        self._max_pending = max_pending
        self._pending: deque[str] = deque()
        self._condition = threading.Condition()
        self._writing = False
        self._closed = False
        #: Lines dropped because the queue was full (the reader stalled).
        self.dropped = 0
        #: Lines never written because the stream was lost.
        self.discarded = 0
        #: The error that lost the stream, or ``None`` while it works.
        self.lost: OSError | None = None if stream is not None else BrokenPipeError("no stream")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        """Queue ``line`` (a newline is added); returns at once."""
        with self._condition:
            if self.lost is not None or self._closed:
                self.discarded += 1
                return
            if len(self._pending) >= self._max_pending:
                self.dropped += 1
                return
            self._pending.append(line)
            self._condition.notify()

    def idle(self) -> bool:
        """Nothing is queued or being written."""
        with self._condition:
            return not self._pending and not self._writing

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds for the queue to be written; ``True`` if it was."""
        with self._condition:
            return self._condition.wait_for(
                lambda: self.lost is not None or (not self._pending and not self._writing),
                timeout,
            )

    def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Write what is queued (waiting at most ``timeout``), then stop; ``True`` if all went.

        A writer stuck on a stalled reader is abandoned (its thread is a daemon), so a command
        can always exit.
        """
        written = self.flush(timeout)
        with self._condition:
            self._closed = True
            self._condition.notify()
        return written and self.lost is None

    def _run(self) -> None:
        condition = self._condition
        while True:
            with condition:
                condition.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                lines = list(self._pending)
                self._pending.clear()
                self._writing = True
            error: OSError | None = None
            try:
                self._write("".join(line + "\n" for line in lines))
            except OSError as caught:
                error = caught
            except ValueError as caught:  # the stream was closed under us
                error = BrokenPipeError(str(caught))
            with condition:
                self._writing = False
                if error is not None:
                    self.lost = error
                    self.discarded += len(lines) + len(self._pending)
                    self._pending.clear()
                condition.notify_all()
            if error is not None:
                if self._on_lost is not None:
                    self._on_lost(error)
                return

    def _write(self, text: str) -> None:
        if self._fd is not None:
            data = memoryview(text.encode("utf-8", "replace"))
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            return
        assert self._stream is not None
        self._stream.write(text)
        self._stream.flush()


def _fileno(stream: TextIO | None) -> int | None:
    if stream is None:
        return None
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


#: Key of the root click context's ``obj`` that says stdout was closed when udpbeat started.
STDOUT_CLOSED = "stdout_closed"


def stdout_was_closed() -> bool:
    """Whether :func:`guard_standard_streams` found stdout closed (read from click's context)."""
    context = click.get_current_context(silent=True)
    obj = context.find_root().obj if context is not None else None
    return bool(obj.get(STDOUT_CLOSED)) if isinstance(obj, dict) else False


def guard_standard_streams() -> bool:
    """Make sure file descriptors 0, 1 and 2 are open; ``True`` if stdout was closed.

    A command started with ``>&-`` has no descriptor 1. Left so, the first socket it opens
    would get descriptor 1, and output would go into the socket. A closed descriptor is opened
    on ``/dev/null`` instead, and the caller is told that stdout is gone.
    """
    stdout_closed = False
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # lower descriptors are open, so this cannot happen; be safe
                os.dup2(opened, fd)
                os.close(opened)
            if fd == 1:
                stdout_closed = True
    if stdout_closed:
        with contextlib.suppress(Exception):
            sys.stdout = None
    return stdout_closed
