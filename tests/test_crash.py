"""Crash safety: kill `kbmigrate run` at random moments, run it again, and end exactly where an
uninterrupted run ends: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from kbmigrate import db
from kbmigrate.run import runner
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT

from conftest import drop, new_demo
from test_runbook import QUIET

TRIALS = int(os.environ.get("KBMIGRATE_CRASH_TRIALS", "20"))

# Imported entries and seeded sections get fresh uuids in each run, and imports an import_date:
# compare what they are, not those.
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
}


def state(target: Target) -> dict[str, str]:
    with db.connect(target) as conn:
        return {k: db.scalar(conn, q) for k, q in CANONICAL.items()}


def run_until_done(target: Target, deadline: float = 90) -> None:
    """Run again; while an orphaned kernel of the killed run still holds the database, wait."""
    exe = Path(sys.executable).parent / "kbmigrate"
    end = time.monotonic() + deadline
    while True:
        done = subprocess.run([str(exe), "run", "--dsn", target.conninfo, "--no-progress"], capture_output=True,
                              text=True, cwd=REPO_ROOT)
        if done.returncode == 0:
            return
        assert "Another kbmigrate run holds" in done.stderr, done.stderr
        assert time.monotonic() < end, "the killed run never let go of the database"
        time.sleep(0.5)


def test_killed_runs_converge_to_the_uninterrupted_result(server: Target) -> None:
    reference = new_demo(server, "kbt_crash_ref")
    try:
        started = time.monotonic()
        runner.run(reference, RunParams(), **QUIET)
        full_run = time.monotonic() - started
        expected = state(reference)
    finally:
        drop(server, reference)

    rng = random.Random(20261124)
    exe = Path(sys.executable).parent / "kbmigrate"
    delays = []
    for trial in range(TRIALS):
        target = new_demo(server, f"kbt_crash_{trial}")
        try:
            delay = rng.uniform(0.3, full_run)
            delays.append(round(delay, 2))
            child = subprocess.Popen([str(exe), "run", "--dsn", target.conninfo, "--no-progress"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            child.wait()
            run_until_done(target)
            assert state(target) == expected, f"trial {trial}: killed after {delay:.2f} s, the result differs"
        finally:
            drop(server, target)
    assert len(delays) == TRIALS >= 20 or "KBMIGRATE_CRASH_TRIALS" in os.environ
