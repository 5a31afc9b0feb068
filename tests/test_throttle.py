"""The backfill's throttle: it backs off when a batch costs the application (too long, sessions
waiting on its locks, a busier database), grows back when it does not, stays in its bounds, and
never changes what the backfill decides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import threading
import time

import psycopg
import pytest

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.steps import apply_step
from kbmigrate.engine.throttle import MIN_BATCH, Throttle
from kbmigrate.errors import BadParameter
from kbmigrate.paths import read_sql

from conftest import drop, new_demo, gated
from crash_reference import state


def throttle(**kw: object) -> Throttle:
    return Throttle.for_params(RunParams(**{"batch_size": 1000, "batch_target": "200ms", "max_pause": "1s", **kw}))


def test_a_slow_batch_shrinks_the_next_and_pauses() -> None:
    t = throttle()
    d = t.after_batch(seconds=0.8, waiting=0, active=0)  # 4x the target
    assert d.next_size == 250  # shrunk in proportion (0.2 / 0.8), at most by 4
    assert d.pause >= 0.8  # at least as long as it held its locks
    d = t.after_batch(seconds=10.0, waiting=0, active=0)
    assert d.next_size == max(MIN_BATCH, 250 // 4) and d.pause == 1.0  # bounded: by 4 at most, max_pause at most
    for _ in range(10):
        d = t.after_batch(seconds=10.0, waiting=0, active=0)
    assert d.next_size == MIN_BATCH and d.pause == 1.0


def test_with_nobody_else_there_a_slow_batch_shrinks_without_pausing() -> None:
    t = throttle()
    d = t.after_batch(seconds=0.8, waiting=0, active=0, present=0)
    assert d.next_size == 250 and d.pause == 0.0 and d.backed_off and "nobody else" in d.why
    d = t.after_batch(seconds=0.8, waiting=0, active=0, present=1)  # somebody came: it yields again
    assert d.next_size == max(MIN_BATCH, 250 // 4) and d.pause >= 0.8


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_with_others_present_it_works_at_most_its_share_of_the_time(share: float) -> None:
    t = throttle(work_share=share)
    for seconds in (0.05, 0.15, 0.19, 0.05):  # fast or on target, nobody waiting: no back-off
        d = t.after_batch(seconds=seconds, waiting=0, active=0, present=2)
        assert seconds / (seconds + d.pause) <= share + 0.01 and not d.backed_off, (seconds, d.pause)
    d = t.after_batch(seconds=0.05, waiting=0, active=0, present=0)  # they left: full speed again
    assert d.pause < 0.05


def test_the_steps_pause_makes_their_work_its_share_of_the_time() -> None:
    """engine/steps.py pauses after each change while the application is there (bounded by max_pause)."""
    assert RunParams(work_share=0.25).pause_after(0.1) == pytest.approx(0.3)
    assert RunParams(work_share=0.5).pause_after(0.1) == pytest.approx(0.1)
    assert RunParams(work_share=1).pause_after(0.1) == 0
    assert RunParams(work_share=0.25, max_pause="2s").pause_after(10) == 2.0
    for bad in (0, 0.01, 1.5, True, "half"):
        with pytest.raises(BadParameter, match="work_share"):
            RunParams(work_share=bad).validate()  # type: ignore[arg-type]


def test_sessions_waiting_on_its_locks_make_it_back_off_even_when_fast() -> None:
    t = throttle()
    d = t.after_batch(seconds=0.01, waiting=2, active=0)
    assert d.next_size == 500 and d.pause > 0 and "2 session(s) waited" in d.why


def test_a_busier_database_gets_pauses_not_smaller_batches() -> None:
    t = throttle()
    t.after_batch(seconds=0.15, waiting=0, active=3)  # the first batch sets the baseline
    d = t.after_batch(seconds=0.15, waiting=0, active=9)
    assert d.next_size == 1000 and d.pause > 0 and "busier" in d.why


def test_fast_batches_grow_back_to_batch_size_and_stop_pausing() -> None:
    t = throttle()
    t.after_batch(seconds=0.8, waiting=0, active=0)
    sizes = [t.after_batch(seconds=0.01, waiting=0, active=0).next_size for _ in range(12)]
    assert sizes == sorted(sizes) and sizes[-1] == 1000 and max(sizes) <= 1000
    assert t.pause == 0.0


def test_off_means_fixed_batches_and_no_pause() -> None:
    t = throttle(throttle=False)
    for seconds, waiting in ((5.0, 3), (0.01, 0)):
        d = t.after_batch(seconds=seconds, waiting=waiting, active=50)
        assert d.next_size == 1000 and d.pause == 0.0


def test_the_probe_counts_the_sessions_waiting_on_this_one(server: Target) -> None:
    target = new_demo(server, "kbt_probe")
    try:
        with db.connect(target) as holder:
            holder.execute("select id from public.knowledge_base order by id limit 3 for update")
            started = threading.Event()

            def wait_for_row() -> None:
                with psycopg.connect(target.conninfo, application_name="an app write") as app:
                    started.set()
                    app.execute("update public.knowledge_base set title = title where id = "
                                "(select id from public.knowledge_base order by id limit 1)")
                    app.rollback()

            app = threading.Thread(target=wait_for_row)
            app.start()
            started.wait(10)
            deadline = time.monotonic() + 10
            while (cost := db.rows(holder, read_sql("report/throttle_probe.sql"))[0])["waiting"] == 0:
                assert time.monotonic() < deadline, "the waiting session was never counted"
                time.sleep(0.05)
            assert cost["waiting"] == 1 and cost["present"] >= 1
            # sessions named with this run's id are its own, not others (one transaction: one view of the sessions)
            with holder.transaction():
                holder.execute("select set_config('kbmigrate.run_id', 'an app', true)")
                own = db.rows(holder, read_sql("report/throttle_probe.sql"))[0]
            assert own["present"] == cost["present"] - 1
            holder.rollback()
            app.join(10)
    finally:
        drop(server, target)


@contextmanager
def application_present(target: Target) -> Iterator[None]:
    """Another client, busy every 100 ms for as long as the block runs (there before it begins)."""
    stop, there = threading.Event(), threading.Event()

    def app() -> None:
        with psycopg.connect(target.conninfo, application_name="an app", autocommit=True) as conn:
            conn.execute("select 1")
            there.set()
            while not stop.wait(0.1):
                conn.execute("select 1")
    thread = threading.Thread(target=app)
    thread.start()
    assert there.wait(30), "the application never connected"
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_the_throttled_backfill_ends_where_the_plain_one_does(server: Target) -> None:
    """A target no batch can meet: every batch backs off, down to the smallest, with pauses;
    the data ends exactly as with the throttle off. Each batch's decision is in its ledger row."""
    slow, plain = new_demo(server, "kbt_thr"), new_demo(server, "kbt_thr_plain")
    try:
        for target, params, run in ((slow, RunParams(batch_size=200, batch_target="1ms", max_pause="50ms"), "thr"),
                                    (plain, RunParams(batch_size=200, throttle=False), "plain")):
            gated(target, run, params)
            with db.connect(target, autocommit=True) as conn:
                apply_step(conn, "02_schema", params, run, progress=False)
                with application_present(target):  # somebody to yield to
                    apply_step(conn, "03_backfill", params, run, progress=False)
        assert state(slow) == state(plain)
        with db.connect(slow) as conn:
            rows = db.rows(conn, "select detail from kbmigrate.ledger where change = 'backfill_workspace_ids' order by id")
        sizes = [r["detail"]["size"] for r in rows]
        first = rows[0]["detail"]  # shrunk in proportion to its overrun of 1 ms: by 2 to 4
        assert sizes[0] == 200 and sizes[1] == max(MIN_BATCH, int(200 * max(0.25, min(0.5, 0.001 / first["seconds"]))))
        assert min(sizes) == MIN_BATCH and len(sizes) > 888 // 200 + 1, sizes
        assert all(b <= a for a, b in zip(sizes, sizes[1:])), sizes  # it only ever backed off
        assert all(r["detail"]["present"] >= 1 for r in rows)
        assert rows[0]["detail"]["pause_before"] == 0  # each pause is recorded with the batch it came before
        assert all(r["detail"]["pause_before"] > 0 for r in rows[1:])
        assert all(r["detail"]["pause_before"] <= 0.05 for r in rows)
        with db.connect(plain) as conn:
            plain_sizes = [r["s"] for r in db.rows(conn, "select (detail ->> 'size')::int as s from kbmigrate.ledger "
                                                         "where change = 'backfill_workspace_ids'")]
        assert set(plain_sizes) == {200}
    finally:
        drop(server, slow)
        drop(server, plain)


def test_a_step_gives_way_only_while_the_application_is_there(server: Target) -> None:
    """The steps around the backfill yield as its batches do (engine/steps.py): with another client
    of the database in a transaction, the step decides to give way and its index builds go without
    parallel workers; with nobody else there, or with the throttle off, neither."""
    from kbmigrate.engine.plan import for_step
    from kbmigrate.engine.steps import give_way_if_present as yielding

    target = new_demo(server, "kbt_gives_way")
    run_id = "gives-way"
    changes = for_step("02_schema", RunParams())
    workers = "select current_setting('max_parallel_maintenance_workers')"
    try:
        with db.connect(target, autocommit=True, application_name=f"kbmigrate {run_id}") as conn:
            default = db.scalar(conn, workers)
            assert default != "0"  # else the check below could not fail
            time.sleep(2.1)  # the sessions that made this database are gone, and not "active in the last 2 s"
            assert not yielding(conn, changes, RunParams(), run_id)
            assert db.scalar(conn, workers) == default
            with db.connect(target, application_name=f"kbmigrate watch {run_id}") as own:
                own.execute("select 1")  # the run's own session, in a transaction: not the application
                assert not yielding(conn, changes, RunParams(), run_id)
            with db.connect(target, application_name="the application") as app:
                app.execute("select 1")  # in a transaction: the application is there
                assert not yielding(conn, changes, RunParams(throttle=False), run_id)
                assert db.scalar(conn, workers) == default
                assert yielding(conn, changes, RunParams(), run_id)
                assert db.scalar(conn, workers) == "0"
                assert not yielding(conn, for_step("03_backfill", RunParams()), RunParams(), run_id)  # its batches give way themselves
    finally:
        drop(server, target)
