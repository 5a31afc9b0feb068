"""Crash safety: the run dies (SIGKILL, a power cut) inside each change's transaction, inside
each batch of the backfill and inside each concurrent index build, at failpoints
(lib/kbmigrate/engine/failpoint.py); a resume then ends exactly where an uninterrupted run ends:
the same data, the same schema, every change in effect and ledgered once as applied. Each kind
of crash is shown to be caught when the resume is broken on purpose. Then `kbmigrate run` is
killed through the CLI, once at a failpoint and twice at a random moment, and `--resume` finishes it.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine import apply, backfill
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import for_step
from kbmigrate.errors import StepFailed
from kbmigrate.paths import REPO_ROOT, RUNS_DIR

from conftest import drop, new_demo
from crash_child import STEPS, apply_all

CHILD = Path(__file__).with_name("crash_child.py")
EXE = Path(sys.executable).parent / "kbmigrate"
BATCHES = 4  # the backfill's batch size is chosen so that it takes at least this many batches

# Imported entries and seeded sections get fresh uuids in each run, and imports an import_date:
# compare what they are, not those. The schema and the ledger are compared too: a change that a
# resume skipped leaves the data alone but not the catalog, and the ledger must say which
# change is in effect (applied once; the resume's no-ops and the failed rows are not outcomes).
CANONICAL = {
    "knowledge_base": """select md5(string_agg(x, '|' order by x)) from (
        select concat_ws(',', coalesce(kb.metadata ->> 'original_id', kb.id::text), kb.title, kb.content, kb.workspace_id,
                         s.name, kb.is_shared, kb.created_at, kb.updated_at, kb.metadata - 'import_date') as x
        from knowledge_base kb left join knowledge_base_sections s on s.id = kb.section_id) t""",
    "sections": """select md5(string_agg(concat_ws(',', workspace_id, name, description, display_order, icon, is_active),
                                      '|' order by workspace_id, name)) from knowledge_base_sections""",
    "quarantine": "select md5(string_agg(entry_id::text || reason, '|' order by entry_id)) from kbmigrate.quarantine",
    "imports": "select md5(string_agg(source || original_id, '|' order by source, original_id)) from kbmigrate.legacy_imports",
    "counts": "select (select count(*) from knowledge_base)::text || '/' || (select count(*) from knowledge_base_sections)",
    "columns": """select string_agg(format('%s.%s %s %s %s', c.table_schema, c.table_name, c.column_name, c.data_type,
                                            c.is_nullable), '; ' order by c.table_schema, c.table_name, c.column_name)
                  from information_schema.columns c where c.table_schema in ('public', 'kbmigrate')""",
    "constraints": """select string_agg(format('%s %s %s %s', conrelid::regclass, conname, convalidated,
                                                pg_get_constraintdef(oid)), '; ' order by conrelid::regclass::text, conname)
                      from pg_constraint where connamespace in ('public'::regnamespace, 'kbmigrate'::regnamespace)""",
    "indexes": """select string_agg(format('%s valid=%s %s', i.indexrelid::regclass, i.indisvalid,
                                            pg_get_indexdef(i.indexrelid)), '; ' order by i.indexrelid::regclass::text)
                  from pg_index i join pg_class c on c.oid = i.indexrelid
                  where c.relnamespace in ('public'::regnamespace, 'kbmigrate'::regnamespace)""",
    "rls": """select string_agg(format('%s rls=%s %s', relname, relrowsecurity, relforcerowsecurity), '; ' order by relname)
              from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'""",
    "policies": """select string_agg(format('%s %s %s %s %s %s', tablename, policyname, cmd, roles, qual, with_check),
                                     '; ' order by tablename, policyname) from pg_policies""",
    "functions": """select string_agg(format('%s(%s) %s %s %s %s', p.proname, pg_get_function_identity_arguments(p.oid),
                                              md5(p.prosrc), p.prosecdef, p.proconfig, p.proacl), '; ' order by p.proname)
                    from pg_proc p where p.pronamespace in ('public'::regnamespace, 'kbmigrate'::regnamespace)""",
    "views": """select string_agg(format('%s %s %s', c.relname, c.reloptions, md5(pg_get_viewdef(c.oid))), '; ' order by c.relname)
                from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind = 'v'""",
    "ledger": """select string_agg(change || ':' || outcome, ', ' order by change) from (
                   select distinct change, outcome from kbmigrate.ledger
                   where step in ('02_schema', '03_backfill', '04_seed_sections', '05_import_legacy')
                     and outcome in ('applied', 'skipped')) t""",
}


def state(target: Target) -> dict[str, str]:
    with db.connect(target) as conn:
        return {k: db.scalar(conn, q) for k, q in CANONICAL.items()}


def batch_size(server: Target) -> int:
    probe = new_demo(server, "kbt_crash_probe")
    try:
        with db.connect(probe) as conn:
            pending = int(db.scalar(conn, "select count(*) from knowledge_base where workspace_id is null"))
    finally:
        drop(server, probe)
    assert pending >= BATCHES, "the demo has too few entries without a workspace for a backfill of several batches"
    return math.ceil(pending / BATCHES)


@pytest.fixture(scope="module")
def reference(server: Target) -> dict[str, Any]:
    """An uninterrupted run of steps 02-05 and the failpoints it passed: one in each change, one in
    each backfill batch, one in each concurrent index build."""
    params = RunParams(batch_size=batch_size(server))
    target = new_demo(server, "kbt_crash_ref")
    try:
        apply_all(target, params, "reference")
        expected = state(target)
        with db.connect(target) as conn:
            batches = int(db.scalar(conn, "select count(*) from kbmigrate.ledger where run_id = 'reference' "
                                          "and change = 'backfill_workspace_ids'"))
    finally:
        drop(server, target)
    changes = [c for step in STEPS for c in for_step(step, params)]
    points = [c.name for c in changes if not c.has("batched")]
    points += [f"backfill_workspace_ids@{n}" for n in range(1, batches + 1)]
    points += [f"{c.name}:building" for c in changes if c.has("notx")]
    assert batches >= BATCHES and sum(p.endswith(":building") for p in points) == 3, points
    return {"params": params, "state": expected, "points": points}


def wait_until_gone(target: Target, application_name: str, seconds: float = 30) -> None:
    """The killed run's server sessions end by themselves (the server notices the client is gone)."""
    end = time.monotonic() + seconds
    with db.connect(target, autocommit=True, application_name="test observer") as conn:
        while db.scalar(conn, "select count(*) from pg_stat_activity where application_name = %s", (application_name,)):
            assert time.monotonic() < end, f"sessions named {application_name!r} outlived their killed client"
            time.sleep(0.05)


@contextmanager
def writers_waited_for(target: Target) -> Iterator[None]:
    """An application transaction writing the tables that get indexes: a concurrent build must wait
    for it after putting its index in the catalog, so a crash meets the build half done."""
    conn = psycopg.connect(target.conninfo, application_name="a writing app")
    try:
        conn.execute("lock table public.knowledge_base, public.workspace_members in row exclusive mode")
        yield
    finally:
        conn.rollback()
        conn.close()


def invalid_indexes(target: Target) -> list[str]:
    with db.connect(target) as conn:
        return [r["name"] for r in db.rows(conn, "select indexrelid::regclass::text as name from pg_index where not indisvalid")]


def crash_at(target: Target, point: str, params: RunParams) -> None:
    """Run steps 02-05 in a process of its own until it dies at ``point``."""
    run_id = "crashed"
    if point.endswith(":building"):  # the changes before the build, then the build waits for a writer
        name = point.removesuffix(":building")
        before = [c for c in for_step("02_schema", params)][: [c.name for c in for_step("02_schema", params)].index(name)]
        with db.connect(target, limits=params.limits("read"), autocommit=True) as conn:
            for change in before:
                apply.apply(conn, change, params, run_id)
    env = {**os.environ, "KBMIGRATE_FAILPOINT": point}
    with writers_waited_for(target) if point.endswith(":building") else _nothing():
        child = subprocess.run([sys.executable, str(CHILD), target.conninfo, str(params.batch_size), run_id],
                               env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        assert child.returncode == -signal.SIGKILL, f"{point}: the run was not killed there ({child.returncode}): {child.stderr[-2000:]}"
        wait_until_gone(target, f"kbmigrate crash {run_id}")
        if point.endswith(":building"):  # the crash met the build half done, and its session ended with it
            assert invalid_indexes(target), f"{point}: no index was left half built"


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def resume(target: Target, params: RunParams) -> None:
    apply_all(target, params, "resumed")


def trial(server: Target, point: str, params: RunParams, *, resumed: Callable[[Target, RunParams], None] = resume
          ) -> dict[str, str]:
    target = new_demo(server, "kbt_crash")
    try:
        crash_at(target, point, params)
        resumed(target, params)
        return state(target)
    finally:
        drop(server, target)


# The failpoints are the plan's: a test per point, computed from the plan (tests/crash_child.STEPS)
# at collection time would need a database, so the points run in two halves, one per worker.
@pytest.mark.parametrize("half", [0, 1])
def test_a_crash_at_any_failpoint_resumes_to_the_uninterrupted_result(server: Target, reference: dict[str, Any],
                                                                      half: int) -> None:
    points = reference["points"][half::2]
    wrong = {}
    for point in points:
        got = trial(server, point, reference["params"])
        diff = {k: (reference["state"][k], v) for k, v in got.items() if v != reference["state"][k]}
        if diff:
            wrong[point] = diff
    assert not wrong, f"resumed after a crash, the result differs: {json.dumps(wrong, indent=1)[:3000]}"
    assert len(points) >= 12


def _resume_trusting_every_verify(target: Target, params: RunParams) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(apply, "verify_passes", lambda *a, **k: (True, ""))
        resume(target, params)


def _resume_from_the_end_of_the_table(target: Target, params: RunParams) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backfill, "ZERO_ID", "ffffffff-ffff-ffff-ffff-ffffffffffff")
        resume(target, params)


def _resume_keeping_a_half_built_index(target: Target, params: RunParams) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(apply, "_INDEX_NAME", apply.re.compile(r"(?!)"))  # finds no index to clean up
        resume(target, params)


@pytest.mark.parametrize("point, broken", [
    ("kb_constraints", _resume_trusting_every_verify),
    ("backfill_workspace_ids@2", _resume_from_the_end_of_the_table),
    ("index_kb_workspace:building", _resume_keeping_a_half_built_index),
], ids=["change", "batch", "index"])
def test_the_crash_tests_catch_a_broken_resume(server: Target, reference: dict[str, Any], point: str,
                                               broken: Callable[[Target, RunParams], None]) -> None:
    assert point in reference["points"]
    try:
        got = trial(server, point, reference["params"], resumed=broken)
    except StepFailed:
        return  # the broken resume stopped: also caught
    assert got != reference["state"], f"a broken resume after a crash at {point} went unnoticed"


def manifest(run_id: str) -> dict[str, Any]:
    return json.loads((RUNS_DIR / run_id / "manifest.json").read_text())


def resume_until_done(target: Target, run_id: str, deadline: float = 60) -> subprocess.CompletedProcess[str]:
    """``--resume``; while an orphaned kernel of the killed run still holds the database, wait."""
    end = time.monotonic() + deadline
    while True:
        done = subprocess.run([str(EXE), "run", "--dsn", target.conninfo, "--resume", run_id, "--no-progress"],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        if done.returncode == 0 or ("holds" not in done.stderr):
            return done
        assert time.monotonic() < end, "the killed run never let go of the database"
        time.sleep(0.5)


def _kill_when_running(target: Target, run_id: str, step: str, extra_delay: float, args: list[str]) -> int:
    child = subprocess.Popen([str(EXE), "run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    end = time.monotonic() + 120
    while child.poll() is None:
        path = RUNS_DIR / run_id / "manifest.json"
        try:
            if path.exists() and any(s["step"] == step and s["status"] == "running" for s in manifest(run_id)["steps"]):
                break
        except (json.JSONDecodeError, KeyError):
            pass  # the file is being written
        assert time.monotonic() < end, f"{step} never started"
        time.sleep(0.05)
    time.sleep(extra_delay)
    child.send_signal(signal.SIGKILL)
    return child.wait()


@pytest.mark.xdist_group("crash-cli")
def test_kbmigrate_run_killed_at_a_failpoint_is_resumed_to_the_same_result(server: Target,
                                                                            reference: dict[str, Any]) -> None:
    """Through the CLI: the failpoint kills the kernel and the `kbmigrate run` that started it."""
    target = new_demo(server, "kbt_crash_cli")
    run_id = f"crash-fp-{os.getpid()}"
    try:
        child = subprocess.run([str(EXE), "run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                                "-p", f"batch_size={reference['params'].batch_size}"],
                               env={**os.environ, "KBMIGRATE_FAILPOINT": "backfill_workspace_ids@2"},
                               capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        assert child.returncode == -signal.SIGKILL, child.stderr
        assert manifest(run_id)["status"] == "running"  # nothing after the crash wrote to it
        done = resume_until_done(target, run_id)
        assert done.returncode == 0, done.stderr
        record = manifest(run_id)
        assert record["status"] == "succeeded" and record["resumed"][0]["status_before"] == "running"
        assert [(s["step"], s["attempt"]) for s in record["steps"] if s["step"] == "03_backfill"] == \
            [("03_backfill", 1), ("03_backfill", 2)]
        assert state(target) == reference["state"]
    finally:
        drop(server, target)


@pytest.mark.xdist_group("crash-cli")
@pytest.mark.parametrize("seed", [20261201, 20261202])
def test_kbmigrate_run_killed_at_random_is_resumed_to_the_same_result(server: Target, reference: dict[str, Any],
                                                                      seed: int) -> None:
    """SIGKILL to `kbmigrate run` alone, at a random moment of a random changing step: its kernel
    is orphaned and holds the database until it notices, then `--resume` finishes the run."""
    rng = random.Random(seed)
    step, delay = rng.choice(STEPS), rng.uniform(0.0, 2.0)
    target = new_demo(server, "kbt_crash_rnd")
    run_id = f"crash-rnd-{seed}-{os.getpid()}"
    try:
        _kill_when_running(target, run_id, step, delay, ["-p", f"batch_size={reference['params'].batch_size}"])
        done = resume_until_done(target, run_id)
        assert done.returncode == 0, f"killed {delay:.2f} s into {step}: {done.stderr}"
        assert manifest(run_id)["status"] == "succeeded"
        assert state(target) == reference["state"], f"killed {delay:.2f} s into {step}, the result differs"
    finally:
        drop(server, target)
