"""Hand-stepped runs are runs: ``kbmigrate lab`` (``make lab``).

It makes a run folder as ``kbmigrate run`` does — a manifest (status ``manual``), the SQL as it is
now, and a copy of each step's notebook with the run id and the parameters already in it — and
opens JupyterLab *there*, on the target, so that what the DBA runs and sees is saved into the run
folder, never into the sources. When JupyterLab closes (or with ``kbmigrate lab --finish RUN``),
the run is finished like a headless one: each step's status from what its kernels ran
(``cells.py``: the cells run, an unsaved notebook said, never "not run" for a step the ledger shows
changed the database), each notebook's sha256, what changed, the
backup it took, ``report.html``, and the seal in the database's ledger. Its backup can then be
rolled back with ``kbmigrate rollback`` like any other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import papermill

from kbmigrate import cells, db
from kbmigrate.checks import pooler
from kbmigrate.conninfo import Target
from kbmigrate.engine import gates, ledger, plan
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import BadParameter, LabAsRoot, LabFailed, NoGo
from kbmigrate.paths import RUNS_DIR, shown
from kbmigrate.run import approval, manifest, notebooks, runner
from kbmigrate.run.record import Run, StepEntry


def may_open(allow_root: bool) -> None:
    """JupyterLab refuses to run as root (it says so only in its log): refuse first, in one line."""
    if os.geteuid() == 0 and not allow_root:
        raise LabAsRoot()


def prepare(target: Target, params: RunParams, run_id: str | None = None, *, auto_approve: bool = False,
            four_eyes: bool = False) -> Path:
    """The run folder, ready to be stepped through by hand. Its approval cell (at the end of 01)
    waits for ``kbmigrate approve RUN``, or, with ``auto_approve``, records a self-approval;
    ``four_eyes``: someone other than the operator approves."""
    if auto_approve and four_eyes:
        raise BadParameter(name="--auto-approve", reason="four eyes ask for someone else's approval: give one of them")
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
        gates.record_operator(run_id, approval.who(), four_eyes=four_eyes, auto_approve=auto_approve)
        for step in plan.STEPS:  # 07_rollback is on demand: kbmigrate rollback
            papermill.execute_notebook(notebooks.read(step), str(folder / f"{step}.ipynb"), prepare_only=True,
                                       parameters=notebooks.own(step, {"run_id": run_id, **params.as_dict()}),
                                       progress_bar=False)
    return folder


def _entry(folder: Path, step: str, log: list[dict[str, Any]], changed: int, target: Target) -> StepEntry | None:
    """A step as its kernels ran it (cells.jsonl), never "not run" when the ledger shows it changed
    the database in this run."""
    path = folder / f"{step}.ipynb"
    if not path.exists():
        return None
    runner.scan_for_secrets(path, target.secrets)
    path.chmod(0o600)
    seen = cells.ran(path, step, log)
    status, warnings = seen.status, []
    if seen.unsaved:
        warnings.append(f"closed without saving: {seen.unsaved} of the cells that ran do not show as run in "
                        f"{path.name}; what they ran is in {cells.LOG}")
    if changed and status == "not run":
        status = "partly run"
        warnings.append(f"the ledger holds {changed} change(s) this step made in this run, though no cell of it "
                        "is recorded as run")
    times = [e["at"] for e in log if e.get("step") == step]
    return StepEntry(step, 1, shown(path), status=status, start=times[0] if times else None,
                     end=times[-1] if times else None, seconds=seen.seconds if times else None,
                     error=seen.errors[-1] if seen.errors else None, sha256=manifest.sha256_file(path),
                     cells={"run": seen.run, "of": seen.cells, "own": seen.own}, warning="; ".join(warnings) or None)


def finish(target: Target, run_id: str) -> dict[str, Any]:
    """Record what was done by hand in the run folder, build the report, and seal the manifest."""
    folder = RUNS_DIR / run_id
    run = Run.load(target, run_id)
    if run.status != "manual" or run.data.get("ended_at"):
        raise BadParameter(name="--finish", reason=f"run {run_id} is not a hand-stepped run still open")
    with runner.private_files():
        log_path = folder / cells.LOG
        if log_path.exists():
            runner.scan_for_secrets(log_path, target.secrets)
            log_path.chmod(0o600)
            run.data["cell_log"] = {"path": shown(log_path), "sha256": manifest.sha256_file(log_path)}
        log = cells.read(folder)
        with db.connect(target, autocommit=True, application_name=f"kbmigrate finish {run_id}"[:63]) as conn:
            made = ledger.for_run(conn, run_id)
            run.steps = [e for step in plan.STEPS if (e := _entry(
                folder, step, log, sum(1 for r in made if r["step"] == step and r["outcome"] in ("applied", "started")),
                target)) is not None]
            run.finish(conn, "manual")
            run.seal(conn)
    return run.as_dict()


def begun(target: Target) -> dict[str, Any] | None:
    """The migration's first change in effect on the target (None: it has not begun there)."""
    with db.connect(target, autocommit=True, application_name="kbmigrate lab") as conn:
        return gates.first_change(conn)


# How JupyterLab exits when it was shut down: File > Shut Down (0), Ctrl-C twice in its terminal (130)
SHUT_DOWN = (0, 130, -signal.SIGINT)


def open_lab(target: Target, folder: Path, *, allow_root: bool = False, lab_args: Sequence[str] = ()) -> None:
    """JupyterLab on the run folder, its kernels pointed at the target; returns when it is shut
    down. Ctrl-C goes to JupyterLab alone (it asks, then shuts down), so the run is still finished;
    a SIGTERM or SIGHUP to kbmigrate is passed on to JupyterLab, which ends its kernels.
    JupyterLab ending with an error raises LabFailed: the run stays open, nothing is sealed."""
    with runner.kernel_environment(target):
        env = dict(os.environ)
    env[db.SESSION_LOG] = str(folder / "sessions.jsonl")  # the kernels list their sessions there, as in a headless run
    argv = [str(Path(sys.executable).parent / "jupyter"), "lab", f"--ServerApp.root_dir={folder}",
            *(["--allow-root"] if allow_root else []), *lab_args]
    proc = subprocess.Popen(argv, env=env, cwd=folder, preexec_fn=_default_sigint)

    def pass_on(signum: int, frame: Any) -> None:  # a kbmigrate stopped stops its JupyterLab (and so its kernels)
        proc.send_signal(signum)

    before = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, pass_on), (signal.SIGHUP, pass_on))}
    try:
        code = proc.wait()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if code not in SHUT_DOWN:
        raise LabFailed(code=code, run=folder.name, folder=shown(folder))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
