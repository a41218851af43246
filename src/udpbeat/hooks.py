"""``udpbeat client --on-change CMD``: a command run on every state change, never in the way.

As keepalived runs its notify scripts, the command runs through the shell with the change in
its environment (:func:`hook_environment`):

=====================  ==========================================================
``UDPBEAT_TARGET``     the probed ``host:port``
``UDPBEAT_OLD_STATE``  ``UNKNOWN``, ``UP``, ``SUSPECT`` or ``DOWN``
``UDPBEAT_NEW_STATE``  likewise
``UDPBEAT_REASON``     the detector's reason, e.g. ``3 consecutive misses``
``UDPBEAT_EVIDENCE``   the evidence as a JSON object
``UDPBEAT_TIME``       Unix time of the change, in seconds
=====================  ==========================================================

Which changes run it (:class:`ChangeFilter`): by default those that change the *settled*
state, UP or DOWN (``UNKNOWN -> UP``, ``SUSPECT -> DOWN``, ``DOWN -> UP``); a flap to SUSPECT and
back to UP, which a lossy path makes often, runs nothing. ``include_suspect`` (the client's
``--on-change-suspect``) runs the hook on every change.

An I/O shell like :mod:`udpbeat.client`: hooks run as asyncio subprocesses on the prober's own
loop, so a slow hook never delays a heartbeat. At most ``max_running`` run at once, in the order
of the changes; up to ``max_waiting`` more wait their turn, and past that a change gets no hook
(reported). Every process is reaped. A hook that fails (non-zero status, killed, or could not
start) is reported through ``on_failure`` as one line; nothing here prints. :meth:`close` waits
for hooks still running, up to a timeout, then kills them (their whole process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping

from udpbeat.detector import State, Transition

MAX_RUNNING = 4
MAX_WAITING = 64
#: Seconds :meth:`HookRunner.close` waits for running hooks before it kills them.
EXIT_GRACE = 5.0
#: Seconds to wait for killed hooks to be reaped.
KILL_WAIT = 2.0


def hook_environment(transition: Transition, target: str, wall_time: float) -> dict[str, str]:
    """The variables a hook receives for ``transition`` (pure)."""
    evidence = {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in transition.evidence.items()
    }
    return {
        "UDPBEAT_TARGET": target,
        "UDPBEAT_OLD_STATE": str(transition.old),
        "UDPBEAT_NEW_STATE": str(transition.new),
        "UDPBEAT_REASON": transition.reason,
        "UDPBEAT_EVIDENCE": json.dumps(evidence, sort_keys=True),
        "UDPBEAT_TIME": f"{wall_time:.6f}",
    }


class ChangeFilter:
    """Which state changes of one target run the hook (pure).

    By default a change runs it when it lands on UP or DOWN and that differs from the last
    state that ran it: ``UP -> SUSPECT -> UP`` runs nothing, ``UP -> SUSPECT -> DOWN`` runs it
    once (for ``SUSPECT -> DOWN``). With ``include_suspect`` every change runs it.
    """

    def __init__(self, *, include_suspect: bool = False) -> None:
        self.include_suspect = include_suspect
        self._settled = State.UNKNOWN

    def wants(self, transition: Transition) -> bool:
        """Whether ``transition`` runs the hook; call it once per change, in order."""
        if transition.new not in (State.UP, State.DOWN):
            return self.include_suspect
        settled_changed = transition.new is not self._settled
        self._settled = transition.new
        return settled_changed or self.include_suspect


class HookRunner:
    """Runs ``command`` for each :meth:`notify`, asynchronously, on the running loop."""

    def __init__(
        self,
        command: str,
        target: str,
        *,
        on_failure: Callable[[str], None],
        max_running: int = MAX_RUNNING,
        max_waiting: int = MAX_WAITING,
        stdout: int | None = None,
        base_environment: Mapping[str, str] | None = None,
    ) -> None:
        """``stdout``: where hooks' standard output goes (a file descriptor; ``None``:
        inherited). ``base_environment`` defaults to this process's environment."""
        self.command = command
        self.target = target
        self._on_failure = on_failure
        self._slots = asyncio.Semaphore(max_running)
        self._max_running = max_running
        self._max_waiting = max_waiting
        self._stdout = stdout
        self._base = dict(os.environ if base_environment is None else base_environment)
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._processes: set[asyncio.subprocess.Process] = set()
        self._closing = False
        self.started = 0
        self.failed = 0
        self.skipped = 0

    @property
    def running(self) -> int:
        """Hooks whose process is running now."""
        return len(self._processes)

    def notify(
        self,
        transition: Transition,
        *,
        target: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Schedule the hook for ``transition``; returns at once. ``target`` names the target
        instead of the runner's own (one runner for many targets), ``extra`` adds variables."""
        change = f"{transition.old} -> {transition.new}"
        if target is None or target == self.target:
            target = self.target
        else:
            change = f"{target} {change}"  # several targets share one runner
        if self._closing or len(self._tasks) >= self._max_running + self._max_waiting:
            self.skipped += 1
            self._on_failure(
                f"on-change hook not run for {change}: "
                f"{len(self._tasks)} hooks already running or waiting"
            )
            return
        # ``transition.at`` is on the loop's monotonic clock; the hook gets Unix time.
        wall_time = time.time() - (self._loop.time() - transition.at)
        environment = {
            **self._base,
            **(extra or {}),
            **hook_environment(transition, target, wall_time),
        }
        task = self._loop.create_task(self._run(environment, change))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout: float = EXIT_GRACE) -> None:
        """Wait up to ``timeout`` seconds for every hook, then kill those still running."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        self._closing = True
        for process in list(self._processes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        # Killed hooks end at once and free their slots; hooks still waiting then see
        # ``_closing`` and give up. The bound only guards against the unforeseen.
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=KILL_WAIT)
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, environment: dict[str, str], change: str) -> None:
        async with self._slots:
            if self._closing:
                self.skipped += 1
                self._on_failure(f"on-change hook for {change} not run: udpbeat is exiting")
                return
            await self._run_one(environment, change)

    async def _run_one(self, environment: dict[str, str], change: str) -> None:
        try:
            process = await asyncio.create_subprocess_shell(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                env=environment,
                start_new_session=True,  # its own process group, so a kill reaches its children
            )
        except OSError as error:
            self.failed += 1
            self._on_failure(f"on-change hook for {change} could not start: {error}")
            return
        self.started += 1
        self._processes.add(process)
        try:
            status = await process.wait()
        finally:
            self._processes.discard(process)
        if status < 0 and self._closing:
            self.failed += 1
            self._on_failure(f"on-change hook for {change} still running at exit: killed")
        elif status < 0:
            self.failed += 1
            name = signal.Signals(-status).name if -status in signal.valid_signals() else -status
            self._on_failure(f"on-change hook for {change} was killed ({name})")
        elif status > 0:
            self.failed += 1
            self._on_failure(f"on-change hook for {change} exited with status {status}")
