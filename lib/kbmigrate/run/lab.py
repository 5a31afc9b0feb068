"""Hand-stepped runs are runs: ``kbmigrate lab`` (``make lab``).

It makes a run folder as ``kbmigrate run`` does — a manifest (status ``manual``), the SQL as it is
now, and a copy of each step's notebook with the run id and the parameters already in it — and
opens JupyterLab *there*, on the target, so that what the DBA runs and sees is saved into the run
folder, never into the sources. When JupyterLab closes (or with ``kbmigrate lab --finish RUN``),
the run is finished like a headless one: each notebook's status and sha256, what changed, the
backup it took, ``report.html``, and the seal in the database's ledger. Its backup can then be
rolled back with ``kbmigrate rollback`` like any other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import papermill

from kbmigrate import db
from kbmigrate.checks import pooler
from kbmigrate.conninfo import Target
from kbmigrate.engine import plan
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import BadParameter, NoGo
from kbmigrate.paths import RUNS_DIR, shown
from kbmigrate.run import manifest, notebooks, runner
from kbmigrate.run.record import Run, StepEntry


def prepare(target: Target, params: RunParams, run_id: str | None = None) -> Path:
    """The run folder, ready to be stepped through by hand."""
    params.validate()
    run_id = run_id or f"manual-{runner.new_run_id()}"
    folder = RUNS_DIR / run_id
    if folder.exists():
        raise BadParameter(name="--run-id", reason=f"{shown(folder)} already exists; a run id is used once")
    ok, detail = pooler.own_session(target)
    if not ok:
        raise NoGo(target=target.label, reason=detail)
    with runner.private_files():
        with db.connect(target, autocommit=True) as conn:
            Run.open(target, conn, run_id, params, steps=list(plan.STEPS), status="manual")
        for step in plan.STEPS:  # 07_rollback is on demand: kbmigrate rollback
            papermill.execute_notebook(notebooks.read(step), str(folder / f"{step}.ipynb"), prepare_only=True,
                                       parameters=notebooks.own(step, {"run_id": run_id, **params.as_dict()}),
                                       progress_bar=False)
    return folder


def _status(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    ran = [c for c in code if c.get("execution_count")]
    if any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])):
        return "failed"
    if not ran:
        return "not run"
    return "succeeded" if len(ran) == len(code) else "partly run"


def finish(target: Target, run_id: str) -> dict[str, Any]:
    """Record what was done by hand in the run folder, build the report, and seal the manifest."""
    folder = RUNS_DIR / run_id
    run = Run.load(target, run_id)
    if run.status != "manual" or run.data.get("ended_at"):
        raise BadParameter(name="--finish", reason=f"run {run_id} is not a hand-stepped run still open")
    with runner.private_files():
        run.steps = []
        for step in plan.STEPS:
            path = folder / f"{step}.ipynb"
            if path.exists():
                runner.scan_for_secrets(path, target.secrets)
                path.chmod(0o600)
                run.steps.append(StepEntry(step, 1, shown(path), status=_status(path), start=None,
                                           sha256=manifest.sha256_file(path)))
        with db.connect(target, autocommit=True, application_name=f"kbmigrate finish {run_id}"[:63]) as conn:
            run.finish(conn, "manual")
            run.seal(conn)
    return run.as_dict()


def open_lab(target: Target, folder: Path) -> int:
    """JupyterLab on the run folder, its kernels pointed at the target; returns when it is closed."""
    with runner.kernel_environment(target):
        env = dict(os.environ)
    env[db.SESSION_LOG] = str(folder / "sessions.jsonl")  # the kernels list their sessions there, as in a headless run
    return subprocess.call([str(Path(sys.executable).parent / "jupyter"), "lab", f"--ServerApp.root_dir={folder}"],
                           env=env, cwd=folder)
