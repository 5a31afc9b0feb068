"""The backfill yields to the application: between batches it measures what the last batch cost
the others, and sets the next batch's size and the pause before it (the health-checked batched
migrations of large PostgreSQL shops: shrink and wait when it hurts, grow back when it does not).

What it measures, per batch (``sql/report/throttle_probe.sql``, inside the batch's transaction,
after its work, while its row locks are still held):

- the batch's own time, the span its row locks were held;
- the sessions waiting, at that moment, for a lock this batch holds;
- the database's load: the other sessions running a statement, against the count seen before the
  first batch.

The rule (multiplicative decrease, gentle increase; bounded):

- others waited on it, or it took longer than ``batch_target``: the next batch shrinks (in
  proportion to the overrun, at most by 4, never below ``MIN_BATCH``) and the pause grows (at
  least as long as the batch held its locks, doubled while it keeps hurting, at most ``max_pause``),
  unless nobody else is there to yield to (no other client session ran anything in the last 2 s,
  this run's own not counted): then it shrinks without pausing;
- the database got busier than before the backfill: same size, a longer pause;
- well under target (less than half) and nobody waiting: the batch grows by half again, up to
  ``batch_size``, and the pause halves;
- otherwise: as it is, the pause easing off;
- and whenever other client sessions are present (running, in a transaction, or active in the
  last 2 s), the pause is long enough that the backfill works at most ``work_share`` of the time
  (a quarter by default: the pause three times the batch) while the application is there, and at
  full speed when it is not.

Each decision is kept (and written in the batch's ledger row) so the notebook can chart them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kbmigrate.engine.params import RunParams, pause_for

MIN_BATCH = 50
MIN_PAUSE = 0.02        # seconds: below it a pause is no pause
BUSIER_BY = 4           # more running statements than before the backfill, to count as busier


@dataclass
class Decision:
    batch: int
    size: int              # the batch's size
    seconds: float         # how long it held its locks
    waiting: int           # sessions waiting on its locks at its end
    active: int            # other sessions running a statement
    present: int | None    # other client sessions there at all (None: not asked)
    next_size: int
    pause: float           # before the next batch
    why: str
    backed_off: bool = False  # it cost the application: smaller next batch or a longer pause


@dataclass
class Throttle:
    enabled: bool
    size: int
    max_size: int
    target: float
    max_pause: float
    work_share: float
    pause: float = 0.0
    baseline: int | None = None
    decisions: list[Decision] = field(default_factory=list)

    @classmethod
    def for_params(cls, params: RunParams) -> "Throttle":
        return cls(enabled=params.throttle, size=params.batch_size, max_size=params.batch_size,
                   target=params.seconds("batch_target"), max_pause=params.seconds("max_pause"),
                   work_share=params.work_share)

    @property
    def min_size(self) -> int:
        return min(MIN_BATCH, self.max_size)

    def after_batch(self, seconds: float, waiting: int, active: int, present: int | None = None) -> Decision:
        """Decide the next batch's size and the pause before it, from what this batch cost."""
        size, backed_off = self.size, False
        if self.baseline is None:
            self.baseline = active
        if not self.enabled:
            why = "throttle off"
        elif waiting > 0 or seconds > self.target:
            factor = 0.5 if seconds <= self.target else max(0.25, min(0.5, self.target / seconds))
            self.size = max(self.min_size, int(size * factor))
            why = (f"{waiting} session(s) waited on its locks" if waiting else
                   f"took {seconds:.3f} s > target {self.target:g} s")
            if waiting == 0 and present == 0:
                self.pause = 0.0
                why += "; nobody else there: no pause"
            else:
                self.pause = min(self.max_pause, max(self.pause * 2, seconds, MIN_PAUSE))
            backed_off = True
        elif active >= self.baseline + BUSIER_BY:
            self.pause = min(self.max_pause, max(self.pause * 2, MIN_PAUSE))
            why = f"database busier: {active} running statements, {self.baseline} before the backfill"
            backed_off = True
        elif seconds < self.target / 2:
            self.size = min(self.max_size, int(size * 1.5) + 1)
            self.pause = self.pause / 2 if self.pause / 2 >= MIN_PAUSE else 0.0
            why = "well under target: grow"
        else:
            self.pause = self.pause * 0.75 if self.pause * 0.75 >= MIN_PAUSE else 0.0
            why = "on target"
        if self.enabled and present == 0 and waiting == 0 and self.pause:  # nobody left to give way to
            self.pause = 0.0
            why += "; nobody else there: no pause"
        least = pause_for(seconds, self.work_share, self.max_pause)
        if self.enabled and present and self.pause < least:
            # others are using the database: the backfill works at most work_share of the time
            self.pause = round(least, 3)
            why += f"; {present} other session(s) present: working {self.work_share:g} of the time"
        decision = Decision(batch=len(self.decisions) + 1, size=size, seconds=round(seconds, 4), waiting=waiting,
                            active=active, present=present, next_size=self.size, pause=round(self.pause, 3), why=why,
                            backed_off=backed_off)
        self.decisions.append(decision)
        return decision

    def summary(self) -> dict[str, Any]:
        d = self.decisions
        return {"throttle": self.enabled, "batch_target_seconds": self.target,
                "backoffs": sum(1 for x in d if x.backed_off),
                "smallest_batch": min((x.size for x in d), default=self.size),
                "paused_seconds": round(sum(x.pause for x in d[:-1]), 3),
                "most_waiting": max((x.waiting for x in d), default=0)}
