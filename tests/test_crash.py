"""Crash safety: the run dies (SIGKILL, a power cut) inside each change's transaction, inside
each batch of the backfill and inside each concurrent index build, at failpoints
(lib/kbmigrate/engine/failpoint.py); a resume then ends exactly where an uninterrupted run ends:
the same data, the same schema, every change in effect and ledgered once as applied. Each kind
of crash is shown to be caught when the resume is broken on purpose. (Killed through the CLI:
tests/test_crash_cli.py.)
"""

from __future__ import annotations

import json
import os
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
from kbmigrate.paths import REPO_ROOT

from conftest import drop, gated_demo
from crash_child import apply_all
from crash_reference import reference as uninterrupted, state


CHILD = Path(__file__).with_name("crash_child.py")


@pytest.fixture(scope="module")
def reference(server: Target) -> dict[str, Any]:
    return uninterrupted(server)


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
        changes = for_step("02_schema", params)
        before = changes[:[c.name for c in changes].index(name)]
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
    target = gated_demo(server, f"kbt_crash_{os.getpid()}", ("crashed", "resumed"))
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
        mp.setattr(apply, "in_effect_check", lambda change: "select 1")  # the check inside a change's own statement
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


