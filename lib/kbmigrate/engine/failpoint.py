"""Failpoints: named places in the engine where a crash test makes the run die, as a power cut would.

``KBMIGRATE_FAILPOINT=NAME[@N]`` kills the run with SIGKILL the N-th time (default: the first)
this process reaches the place named NAME. The places:

- ``<change>``: inside a change's transaction, after its work and its ledger row, before COMMIT
  (for a batched change, ``backfill_workspace_ids@3`` is inside its third batch);
- ``<change>:building``: while the change's ``CREATE INDEX CONCURRENTLY`` is running on the
  server, seen from another session (the build is in the catalog, not yet valid);
- ``rehearsal:<place>``: the same place while the change is rehearsed on the restored copy.

``KBMIGRATE_FAILPOINT_SLOW=NAME=SECONDS`` makes the change named NAME hold its locks that much
longer: its verify script, which runs after its work in the same transaction, sleeps first (for
the lock budget's test, ``engine/budget.py``). Named apart in the rehearsal the same way.

"The run" is this process and, in a notebook kernel a run started, the ``kbmigrate run`` process
that started it (``KBMIGRATE_RUNNER_PID``): nothing is left to tidy up, as after a real crash.
Unset, a failpoint costs one lookup in the environment. It never changes what a run does, only
when it stops; it exists for the crash tests (tests/test_crash.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "KBMIGRATE_FAILPOINT"
RUNNER_PID = "KBMIGRATE_RUNNER_PID"
_reached: dict[str, int] = {}


def forget() -> None:
    """Count the places reached anew: "@N" counts within one step, as in a kernel of its own."""
    _reached.clear()


_apart: list[str] = []  # while the rehearsal runs, ["rehearsal"]: its places are "rehearsal:<name>"


@contextmanager
def named_apart(prefix: str) -> Iterator[None]:
    """The places reached inside the block are named ``<prefix>:<name>``: a failpoint armed for a
    change of production is not reached by the same change rehearsed on a copy."""
    _apart.append(prefix)
    try:
        yield
    finally:
        _apart.pop()


def _armed(name: str) -> bool:
    spec = os.environ.get(ENV, "")
    if not spec:
        return False
    if _apart:
        name = f"{_apart[-1]}:{name}"
    wanted, _, nth = spec.partition("@")
    if wanted != name:
        return False
    _reached[name] = _reached.get(name, 0) + 1
    return _reached[name] == int(nth or 1)


SLOW = "KBMIGRATE_FAILPOINT_SLOW"


def armed_any() -> bool:
    """Whether a test has armed a failpoint or a slowdown at all: its changes then run one by one,
    each reaching its own place."""
    return bool(os.environ.get(ENV) or os.environ.get(SLOW))


def slowdown(name: str) -> float:
    """Seconds the change ``name`` is to be slowed by (``KBMIGRATE_FAILPOINT_SLOW``), or 0."""
    wanted, _, seconds = os.environ.get(SLOW, "").rpartition("=")
    if _apart:
        name = f"{_apart[-1]}:{name}"
    return float(seconds) if wanted and wanted == name else 0.0


def crash() -> None:
    """SIGKILL the run: the runner that started this kernel (only if it is this process's parent), then this process."""
    runner = os.environ.get(RUNNER_PID, "")
    if runner.isdigit() and int(runner) == os.getppid():
        os.kill(int(runner), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def reach(name: str) -> None:
    """The run dies here when ``KBMIGRATE_FAILPOINT`` names this place (and this is the time)."""
    if _armed(name):
        crash()


@contextmanager
def while_building(name: str, dsn: str, backend_pid: int) -> Iterator[None]:
    """Around a concurrent index build: when armed for ``<name>:building``, a watcher on a session
    of its own kills the run once the server shows this backend building an index."""
    if not _armed(f"{name}:building"):
        yield
        return
    from kbmigrate import db
    from kbmigrate.conninfo import Target

    def watch() -> None:
        with db.connect(Target(dsn, "dsn"), autocommit=True, application_name="kbmigrate failpoint") as conn:
            for _ in range(6000):  # 10 minutes at most
                if conn.execute("select 1 from pg_stat_progress_create_index where pid = %s "
                                "and phase <> 'initializing'", (backend_pid,)).fetchone():  # in the catalog
                    crash()
                time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    yield
