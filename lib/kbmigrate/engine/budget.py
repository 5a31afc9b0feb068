"""The lock budget: in production, a change may hold its locks about as long as its rehearsal did.

The rehearsal (``backup/rehearsal.py``) ran every change on the restored copy and recorded, for
each that held locks on the application's tables, its time on the server from its first
statement to COMMIT (``held_seconds``, read by the change itself in ``sql/engine/change.sql``).
In production such a change gets ``max(rehearsed × lock_budget_margin, lock_budget_floor)``, and
the server enforces it: the change's statement runs under a ``statement_timeout`` of that budget
plus ``lock_timeout`` (the part it may spend waiting for its lock, which has its own bound and
its own retries). A change past it is cancelled by the server, its transaction rolled back
(its work and its ledger row with it), and the run stops naming the change, its statement and
both figures (``OverBudget``).

Why both the wait and the hold count: a change queued for an ACCESS EXCLUSIVE lock blocks every
query that arrives after it, as one holding it does. The server's timer cannot tell the two
apart; the budget's ceiling is therefore ``budget + lock_timeout``, never more.

The budget is the run's rehearsal's, or that of the run whose backup it names (``--backup-of``):
the copy rehearsed is the one of that backup. No rehearsal recorded, no budget: the approval
gate requires one before production's first change. Changes with no lock on an application table
in their rehearsal (a ledger row alone, a concurrent index build, a backfill batch governed by its
``batch_target``) get none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kbmigrate.db import Limits
from kbmigrate.engine import gates
from kbmigrate.engine.params import RunParams


@dataclass(frozen=True)
class Budget:
    """A change's lock budget: what its rehearsal held, and what production may hold."""

    change: str
    rehearsed: float  # seconds on the server in the rehearsal, first statement to COMMIT
    seconds: float    # the budget: max(rehearsed × margin, floor)
    margin: float
    floor: float
    lock_timeout: str

    def limits(self, params: RunParams) -> Limits:
        """The change's bounds: its statement may run for the budget plus the wait for its lock,
        and never longer than the run's ``statement_timeout``."""
        ceiling = min(self.seconds + params.seconds("lock_timeout"), params.seconds("statement_timeout"))
        return Limits(params.lock_timeout, f"{max(int(ceiling * 1000), 1)}ms")

    def text(self) -> str:
        basis = (f"{self.rehearsed:.3f} s rehearsed × {self.margin:g}" if self.seconds > self.floor
                 else f"the floor {self.floor:g} s, as {self.rehearsed:.3f} s rehearsed × {self.margin:g} is less")
        return f"{self.seconds:.3f} s ({basis}; plus lock_timeout {self.lock_timeout} to get its lock)"


def rehearsed(run_id: str) -> dict[str, float] | None:
    """Per change, its rehearsed time holding locks on the application's tables, from the
    rehearsal of the run whose backup ``run_id`` relies on; None when none is recorded."""
    owner = gates.read(run_id).get("backup_of") or run_id
    record = gates.read(owner).get("rehearsal") or {}
    held = record.get("held")
    return {str(k): float(v) for k, v in held.items()} if isinstance(held, dict) and record.get("ok") else None


def for_change(run_id: str, change: str, params: RunParams) -> Budget | None:
    """The budget of ``change`` in production for run ``run_id``, or None (see the module's docstring)."""
    held = rehearsed(run_id)
    if held is None or change not in held:
        return None
    floor = params.seconds("lock_budget_floor")
    return Budget(change, held[change], max(held[change] * params.lock_budget_margin, floor),
                  params.lock_budget_margin, floor, params.lock_timeout)


def basis(changes: list[dict[str, Any]]) -> dict[str, float]:
    """From a rehearsal's change rows: the changes that held locks on the application's tables,
    with their time on the server (the budget's basis, kept in the run's gates)."""
    return {c["change"]: float(c["held_seconds"]) for c in changes
            if c.get("locks") and c.get("held_seconds") is not None}
