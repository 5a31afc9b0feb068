"""The batched backfill resumes after an interruption and ends where an uninterrupted run ends."""

from __future__ import annotations

from typing import Any

import pytest

from kbmigrate import db
from kbmigrate.engine import backfill, failpoint
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import for_step
from kbmigrate.engine.steps import apply_step

from conftest import drop, new_demo, gated

STATE = "select md5(string_agg((id, workspace_id, is_shared, updated_at)::text, '|' order by id)) from knowledge_base"
QUARANTINE = "select md5(string_agg((entry_id, reason)::text, '|' order by entry_id)) from kbmigrate.quarantine"


def _batches(conn: Any, run_id: str) -> list[dict[str, Any]]:
    return db.rows(conn, "select outcome, rows_affected, detail from kbmigrate.ledger where run_id = %s "
                         "and change = 'backfill_workspace_ids' order by id", (run_id,))


def test_interrupted_backfill_resumes_to_the_same_result(server: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = new_demo(server, "kbt_resume_a"), new_demo(server, "kbt_resume_b")
    params = RunParams(batch_size=40)
    change = for_step("03_backfill")[0]
    try:
        gated(a, "setup", params)
        gated(b, "setup-b", params)
        for later in ("interrupted", "resumed"):  # later runs on a: the backup from before the first change
            gated(a, later, params, backup_of="setup")
        with db.connect(a, autocommit=True) as ca, db.connect(b, autocommit=True) as cb:
            apply_step(ca, "02_schema", params, "setup", progress=False)
            apply_step(cb, "02_schema", params, "setup-b", progress=False)
            backfill.run(cb, change, params, "setup-b", progress=False)
            # its statistics follow the backfill at once: the planner (the policies' lookups of
            # workspace_id) sees the share still NULL as it is now, not as it was (all of it)
            actual = db.scalar(cb, "select avg((workspace_id is null)::int) from public.knowledge_base")
            seen = db.scalar(cb, "select null_frac from pg_stats where schemaname = 'public' "
                                 "and tablename = 'knowledge_base' and attname = 'workspace_id'")
            assert seen is not None and abs(float(seen) - float(actual)) < 0.01 and float(actual) < 0.5, (seen, actual)

            real_reach = failpoint.reach
            calls = {"n": 0}

            def crash_on_fourth(name: str) -> None:
                calls["n"] += 1
                if calls["n"] == 4:
                    raise KeyboardInterrupt  # the operator's Ctrl-C, in the middle of batch 4
                real_reach(name)

            monkeypatch.setattr(failpoint, "reach", crash_on_fourth)
            with pytest.raises(KeyboardInterrupt):
                backfill.run(ca, change, params, "interrupted", progress=False)
            monkeypatch.setattr(failpoint, "reach", real_reach)
            done_before_crash = _batches(ca, "interrupted")
            assert len(done_before_crash) == 3  # batch 4 rolled back with its ledger row
            assert sum(r["rows_affected"] for r in done_before_crash) > 0

            backfill.run(ca, change, params, "resumed", progress=False)
            assert db.scalar(ca, STATE) == db.scalar(cb, STATE)
            assert db.scalar(ca, QUARANTINE) == db.scalar(cb, QUARANTINE)
            # every batch was a short transaction of at most batch_size entries
            assert all(r["detail"]["scanned"] <= params.batch_size for r in _batches(ca, "resumed"))
    finally:
        drop(server, a)
        drop(server, b)
