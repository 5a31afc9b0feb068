"""SIGINT and SIGTERM stop a run within seconds, even while a statement is blocked.

On the first signal ``kbmigrate run`` does not die where it stands (that would leave a kernel
waiting on the server, and a manifest saying "running"). A helper thread, again and again until
the run says it has stopped:

1. ends every session of the run on the server (their application_name names the run): the
   statement in progress is cancelled and its transaction rolled back, whatever it waits for;
2. interrupts the notebook kernel (SIGINT to its process group, which reaches a pg_dump it runs).

The step's cell then fails, papermill saves its notebook, and the runner marks the notebook and
the manifest ``interrupted`` and exits 130 (SIGINT) or 143 (SIGTERM). A second signal stops at once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine import blockers

# Kernel process groups of the kernels now running (the runner's kernel manager keeps this up to date).
KERNEL_GROUPS: set[int] = set()


@dataclass
class Stop:
    """What the handler knows: which signal and when, and what it ended."""

    signal: str | None = None
    at: str | None = None
    sessions_ended: list[int] = field(default_factory=list)
    kernels_interrupted: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    helper: threading.Thread | None = None

    def settle(self) -> None:
        """Stop the helper thread and wait for it: a round of it still under way would end the
        sessions the run opens next (its summary, its seal), which carry the run's name too."""
        self.done.set()
        if self.helper is not None:
            self.helper.join(timeout=10)

    def as_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "at": self.at, "sessions_ended": sorted(set(self.sessions_ended)),
                "kernels_interrupted": self.kernels_interrupted}


def end_sessions(target: Target, run_id: str) -> list[int]:
    """End the run's sessions on the server; returns their pids."""
    with db.connect(target, autocommit=True, connect_timeout=3,
                    application_name="kbmigrate stop") as conn:  # not the run's name: it must not end itself
        # the run lock stays until the run has ended
        return db.terminate_where(conn, "application_name like %s and application_name not like 'kbmigrate lock %%'",
                                  (blockers.pattern(run_id),))


def _interrupt_kernels() -> int:
    sent = 0
    for pgid in list(KERNEL_GROUPS):
        try:
            os.killpg(pgid, signal.SIGINT)
            sent += 1
        except OSError:
            KERNEL_GROUPS.discard(pgid)
    return sent


def _stop_everything(target: Target, run_id: str, stop: Stop) -> None:
    while not stop.done.is_set():
        try:
            stop.sessions_ended += end_sessions(target, run_id)
        except Exception:  # the server may be gone: the kernel interrupt still stops the step
            pass
        stop.kernels_interrupted += _interrupt_kernels()
        stop.done.wait(0.5)


@contextmanager
def stop_on_signals(target: Target, run_id: str, say: Callable[[str], None], now: Callable[[], str]) -> Iterator[Stop]:
    """While the block runs, SIGINT and SIGTERM stop the run cleanly (see the module's docstring)."""
    stop = Stop()

    def handler(signum: int, frame: Any) -> None:
        if stop.signal:  # a second signal: stop now
            raise KeyboardInterrupt
        stop.signal, stop.at = signal.Signals(signum).name, now()
        say(f"kbmigrate: {stop.signal}: stopping run {run_id}: cancelling its statements and ending its sessions "
            "(again to stop at once)")
        stop.helper = threading.Thread(target=_stop_everything, args=(target, run_id, stop),
                                       name="kbmigrate stop", daemon=True)
        stop.helper.start()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    saved = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        stop.settle()
        for s, old in saved.items():
            signal.signal(s, old)
