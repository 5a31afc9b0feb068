"""Neighbouring changes of a step go to the server together (``apply.apply_together``): each in a
transaction of its own, all in one round trip. What that must not change: a change that fails
stops the step there, is rolled back and ledgered as failed, and nothing after it runs; those
before it stay committed, each with its ledger row. And what it is for: one round trip for a run
of such changes, counted by the bench's proxy."""

from __future__ import annotations

from typing import Any

import pytest

from kbmigrate import db, runbook
from kbmigrate.conninfo import Target
from kbmigrate.dev.proxy import delayed
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import for_step
from kbmigrate.engine.steps import apply_step
from kbmigrate.errors import StepFailed

from conftest import drop, gated, new_demo


def _spent(proxy: Any) -> int:
    """The round trips through ``proxy`` so far, but the lock watcher's: it looks only at work in
    flight for longer than 0.5 s, which a loaded machine's index build can be (engine/blockers.py)."""
    return sum(n for name, n in proxy.counts.snapshot()["by_application"].items() if not name.startswith("kbmigrate watch"))


def _ledger(target: Target, run_id: str) -> dict[str, list[str]]:
    with db.connect(target) as conn:
        out: dict[str, list[str]] = {}
        for r in db.rows(conn, "select change, outcome from kbmigrate.ledger where run_id = %s order by id", (run_id,)):
            out.setdefault(r["change"], []).append(r["outcome"])
        return out


def test_a_change_that_fails_among_its_neighbours_stops_the_step_there(server: Target) -> None:
    target = new_demo(server, "kbt_together_fail")
    run_id = "together-fail"
    try:
        gated(target, run_id)
        # the planted fault: kbmigrate.membership is a table already, so the view cannot replace it
        with db.connect(target, autocommit=True) as conn:
            conn.execute("create schema if not exists kbmigrate")
            conn.execute("create table kbmigrate.membership (user_id uuid, workspace_id uuid)")
        order = [c.name for c in for_step("02_schema", RunParams())]
        failing = order.index("membership_view")
        with db.connect(target, autocommit=True) as conn, pytest.raises(StepFailed) as stopped:
            apply_step(conn, "02_schema", RunParams(), run_id, progress=False)
        assert "membership_view" in stopped.value.message and "\n" not in stopped.value.message
        rows = _ledger(target, run_id)
        assert [c for c in order if c in rows] == order[:failing + 1], rows  # none after it ran
        assert all(rows[c] == ["applied"] for c in order[:failing]), rows
        assert rows["membership_view"] == ["failed"], rows
        with db.connect(target) as conn:  # those before it committed; the next one never ran
            cols = {r["attname"] for r in db.rows(conn, "select attname from pg_attribute where attrelid = "
                                                        "'public.knowledge_base'::regclass and attnum > 0")}
            assert {"workspace_id", "is_shared", "section_id"} <= cols
            assert not db.scalar(conn, "select count(*) from pg_constraint where conrelid = "
                                       "'public.knowledge_base'::regclass and contype = 'f'")
    finally:
        drop(server, target)


def test_neighbouring_changes_cost_one_round_trip(server: Target) -> None:
    target = new_demo(server, "kbt_together_rt")
    run_id = "together-rt"
    changes = for_step("02_schema", RunParams())
    # counted from the plan: each run of changes that are one transaction each is one round trip;
    # a concurrent build costs 4 (its verify, its intent with its bounds, the build, its record);
    # the gates ask a new session once which database it reaches (a kernel's knows it already);
    # and the step asks once whether the application is there, to give way to it (engine/steps.py)
    runs = sum(1 for i, c in enumerate(changes) if not c.has("notx") and (i == 0 or changes[i - 1].has("notx")))
    expected = runs + 4 * sum(1 for c in changes if c.has("notx")) + 1 + 1
    try:
        host, port = target.params.get("host", "127.0.0.1"), int(target.params.get("port", "5432"))
        with delayed(host, port, 0) as proxy:
            far = target.via("127.0.0.1", proxy.port)  # the gates are for the database as the run reaches it
            gated(far, run_id)
            conn = db.connect(far, autocommit=True)
            before = _spent(proxy)
            done = apply_step(conn, "02_schema", RunParams(), run_id, progress=False)
            spent = _spent(proxy) - before
            conn.close()
        assert [o.outcome for o in done] == ["applied"] * len(changes)
        assert spent == expected, (spent, expected, len(changes))
        one_by_one = sum(1 if not c.has("notx") else 5 for c in changes) + 1  # as each change went alone
        assert one_by_one - spent >= 9, (one_by_one, spent)
    finally:
        drop(server, target)


def test_while_the_application_is_there_each_change_goes_on_its_own_and_a_pause_follows(server: Target) -> None:
    """engine/steps.py: with another client of the database present, 02_schema's changes are sent
    one by one (a round trip each: the application's queries run between them), and the run's
    next change starts no sooner than the pause after the last one has ended."""
    from datetime import timedelta

    target = new_demo(server, "kbt_together_gentle", size="medium")  # its index builds take longer than MIN_PAUSE
    run_id = "together-gentle"
    changes = for_step("02_schema", RunParams())
    # each change alone: 1 round trip, a concurrent build 4 (as above); the gates' 1; asking
    # whether the application is there, 1; its index builds without parallel workers, 1
    alone = sum(1 for c in changes if not c.has("notx")) + 4 * sum(1 for c in changes if c.has("notx")) + 1 + 1 + 1
    try:
        host, port = target.params.get("host", "127.0.0.1"), int(target.params.get("port", "5432"))
        with delayed(host, port, 0) as proxy, db.connect(target, application_name="the application") as app:
            far = target.via("127.0.0.1", proxy.port)
            gated(far, run_id)
            app.execute("select 1")  # in a transaction: the application is there
            conn = db.connect(far, autocommit=True)
            before = _spent(proxy)
            done = apply_step(conn, "02_schema", RunParams(), run_id, progress=False)
            spent = _spent(proxy) - before
            conn.close()
        assert [o.outcome for o in done] == ["applied"] * len(changes)
        # (a change that meets autovacuum's lock on the fresh copy retries: a round trip more)
        assert spent >= alone - 3, (spent, alone)  # sent together they would cost 17
        with db.connect(target) as conn:
            at = {r["change"]: r["applied_at"] for r in db.rows(
                conn, "select change, applied_at from kbmigrate.ledger where run_id = %s and outcome = 'applied'", (run_id,))}
        paused = [(o, n) for o, n in zip(done, done[1:]) if "paused_after" in o.detail]
        assert len(paused) >= 3, paused  # at this size, at least its three index builds
        for o, n in paused:  # (the ledger's clock is the server's: the next change's row comes after the pause)
            assert at[n.change] - at[o.change] >= timedelta(seconds=o.detail["paused_after"]), (o.change, n.change)
        # a change that says how long the server worked pauses so that its work is work_share of the time
        assert all(o.detail["paused_after"] == round(RunParams().pause_after(o.detail["held_seconds"]), 3)
                   for o, _ in paused if "held_seconds" in o.detail), paused
    finally:
        drop(server, target)


def test_an_empty_result_keeps_its_columns(small_demo: Target) -> None:
    """06 reads who lost access to their own entries; on a database where nobody did, the cells
    that use its columns must still find them (a table without columns fails on ``.user_id``)."""
    with db.connect(small_demo) as conn:
        alone = runbook.table(db.rows(conn, "select 1 as user_id, 2 as entries_lost where false"))
        batched = runbook.table(db.batch(conn, [("select 1 as user_id where false", None)])[0])
    assert alone.empty and list(alone.columns) == ["user_id", "entries_lost"]
    assert batched.empty and list(batched.user_id) == []
