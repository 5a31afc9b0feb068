"""The runbook under nbval, as a DBA would step through it: each notebook's cells run in order on
a demo database with the default parameters and the connection from the libpq environment, and
every cell must run without error (``--nbval-lax``: the sources hold no outputs to compare)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jupytext

from kbmigrate import db
from kbmigrate.run import notebooks
from kbmigrate.conninfo import Target
from kbmigrate.engine.plan import STEPS
from kbmigrate.runbook import default_run_id

from conftest import approving, drop, new_demo


def test_the_runbook_passes_nbval_on_a_demo_database(server: Target, tmp_path: Path) -> None:
    target = new_demo(server, "kbt_nbval")
    try:
        files = []
        for step in STEPS:  # 07_rollback runs on demand, with a run to roll back
            path = tmp_path / f"{step}.ipynb"
            jupytext.write(notebooks.read(step), path, fmt="ipynb")
            files.append(str(path))
        p = target.params
        env = {**os.environ, "PGHOST": p["host"], "PGPORT": p["port"], "PGUSER": p["user"], "PGDATABASE": p["dbname"]}
        # 01's approval cell waits for kbmigrate approve, from "another terminal", of this run only
        run_id = default_run_id()
        with approving(run_id) as approved:
            done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                                   f"--rootdir={tmp_path}", *files], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=900)
        assert approved == [run_id], approved
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "failed" not in done.stdout and "error" not in done.stdout.splitlines()[-1]
        cells = sum(1 for step in STEPS for c in notebooks.read(step).cells if c.cell_type == "code")
        assert f"{cells} passed" in done.stdout.splitlines()[-1], done.stdout[-500:]
        with db.connect(target) as conn:  # it did migrate: the by-hand run is a run
            assert db.scalar(conn, "select count(*) from kbmigrate.ledger where run_id like 'manual-%%'") > 0
            assert db.scalar(conn, "select relrowsecurity from pg_class where oid = 'public.knowledge_base'::regclass")
    finally:
        drop(server, target)
