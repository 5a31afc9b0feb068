"""Hand-stepped runs are runs: `kbmigrate lab` makes a run folder with the notebooks ready; a DBA
(here a test, through those notebooks) steps through them; finishing leaves a verified report, a
backup that `kbmigrate rollback` restores, and the sources untouched. An open kernel is named, with
what to do, when a headless run is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine import lock, plan
from kbmigrate.paths import REPO_ROOT, RUNS_DIR

from conftest import drop, gated, new_demo, run_cli
from test_rollback import schema_dump
from test_runbook import checksums


def _sources_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", "notebooks", "sql"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True).stdout


def _run_cells(path: Any, folder: Any, *, first: int | None = None, save: bool = False) -> Any:
    """Run a notebook's code cells (the first ``first`` of them) in a kernel, as a DBA would;
    JupyterLab writes the file only when saved."""
    nb = nbformat.read(path, as_version=4)
    todo = nbformat.from_dict(nb)
    if first is not None:
        code = [i for i, c in enumerate(todo.cells) if c.cell_type == "code"]
        todo.cells = todo.cells[:code[first - 1] + 1]
    NotebookClient(todo, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    if save:
        nbformat.write(todo, path)
    return todo


def _code_cells(path: Any) -> int:
    return sum(1 for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and c.source.strip())


def test_a_hand_stepped_run_is_a_run(server: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record comes from what the kernels ran (cells.jsonl), not from which file was saved: a
    trailing empty cell does not count, an unsaved notebook is counted and said, a step stopped
    half-way is partly run, and a step the ledger shows changing the database is never "not run"."""
    target = new_demo(server, "kbt_lab")
    before = {"schema": schema_dump(target), "data": checksums(target)}
    sources = _sources_status()
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    try:
        done = run_cli("lab", "--dsn", target.conninfo, "--run-id", run_id, "--prepare-only", "--auto-approve")
        assert done.returncode == 0, done.stderr
        folder = RUNS_DIR / run_id
        record = json.loads((folder / "manifest.json").read_text())
        assert record["status"] == "manual" and record["steps"] == []
        assert sorted(p.name for p in folder.glob("*.ipynb")) == [f"{s}.ipynb" for s in plan.STEPS]
        assert f"on database {target.label}" in done.stdout

        p = target.params
        for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname")):
            monkeypatch.setenv(var, p[key])
        nb = nbformat.read(folder / "00_preflight.ipynb", as_version=4)
        assert any(f'run_id = "{run_id}"' in c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
        # 00: every cell, saved, with the empty cell Shift+Enter leaves at the end
        ran = _run_cells(folder / "00_preflight.ipynb", folder, save=True)
        ran.cells.append(nbformat.v4.new_code_cell(""))
        nbformat.write(ran, folder / "00_preflight.ipynb")
        _run_cells(folder / "01_backup.ipynb", folder)  # every cell; JupyterLab closed without saving
        _run_cells(folder / "02_schema.ipynb", folder, save=True)
        _run_cells(folder / "03_backfill.ipynb", folder, first=4)  # parameters, start, apply: it stopped there, unsaved
        _run_cells(folder / "04_seed_sections.ipynb", folder, first=5)  # up to its apply
        log = (folder / "cells.jsonl").read_text().splitlines()  # 04's kernel died before it could log
        (folder / "cells.jsonl").write_text("".join(line + "\n" for line in log if '"04_seed_sections"' not in line))

        finished = run_cli("lab", "--finish", run_id, "--dsn", target.conninfo)
        assert finished.returncode == 0, finished.stderr
        record = json.loads((folder / "manifest.json").read_text())
        steps = {s["step"]: s for s in record["steps"]}
        assert [steps[s]["status"] for s in plan.STEPS] == \
            ["succeeded", "succeeded", "succeeded", "partly run", "partly run", "not run", "not run"]
        assert steps["03_backfill"]["cells"] == {"run": 4, "of": _code_cells(folder / "03_backfill.ipynb"), "own": 0}
        for step in ("00_preflight", "02_schema"):
            assert steps[step]["cells"]["run"] == _code_cells(folder / f"{step}.ipynb") and "warning" not in steps[step]
        assert "closed without saving" in steps["01_backup"]["warning"] and "closed without saving" in steps["03_backfill"]["warning"]
        assert "the ledger holds" in steps["04_seed_sections"]["warning"], steps["04_seed_sections"]
        assert "warning: 01_backup: closed without saving" in finished.stdout
        assert steps["02_schema"]["seconds"] > 0 and steps["05_import_legacy"].get("seconds") is None
        assert (folder / "report.html").is_file() and record["backup"]["sha256"] and record["cell_log"]["sha256"]
        assert run_cli("verify", run_id, "--dsn", target.conninfo).returncode == 0
        with db.connect(target) as conn:
            assert db.scalar(conn, "select count(*) from kbmigrate.ledger where run_id = %s and outcome = 'applied'", (run_id,)) > 0

        again = run_cli("lab", "--dsn", target.conninfo, "--run-id", f"{run_id}-b", "--prepare-only")
        assert again.returncode == 0 and "the migration already began" in again.stdout, again.stdout + again.stderr
        assert f"by run {run_id}" in again.stdout and "kbmigrate demo-db --embedded" in again.stdout
        assert "already began" not in done.stdout

        rolled = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--no-progress")
        assert rolled.returncode == 0, rolled.stderr
        assert schema_dump(target) == before["schema"] and checksums(target) == before["data"]
        assert _sources_status() == sources  # the sources were never written
        (folder / "cells.jsonl").write_text("edited\n")
        assert run_cli("verify", run_id, "--dsn", target.conninfo).returncode != 0  # the log is evidence too
    finally:
        drop(server, target)


def test_an_open_kernel_is_named_with_what_to_do(small_demo: Target) -> None:
    with db.connect(small_demo, autocommit=True, application_name="kbmigrate 02_schema manual-x") as kernel:
        lock.hold_for_kernel(kernel)
        done = run_cli("run", "--dsn", small_demo.conninfo, "--only", "00", "--no-progress")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "kbmigrate 02_schema manual-x" in done.stderr and "Shut Down Kernel" in done.stderr, done.stderr


def test_lab_never_seals_a_run_jupyterlab_did_not_run(small_demo: Target) -> None:
    """As root without --allow-root, nothing is prepared (JupyterLab would refuse, saying so only in
    its log); when JupyterLab fails, the run stays open and unsealed, and the exit is not 0."""
    before = set(RUNS_DIR.glob("manual-*"))
    if os.geteuid() == 0:
        refused = run_cli("lab", "--dsn", small_demo.conninfo, "--no-browser")
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--allow-root" in refused.stderr, refused.stderr
        assert set(RUNS_DIR.glob("manual-*")) == before
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    failed = run_cli("lab", "--dsn", small_demo.conninfo, "--run-id", run_id, "--allow-root", "--no-browser",
                     env={"JUPYTER_PORT": "not-a-port"})  # JupyterLab cannot start
    assert failed.returncode == 1 and "Traceback" not in failed.stderr.splitlines()[-1], failed.stderr
    assert failed.stderr.splitlines()[-1].startswith(f"kbmigrate: JupyterLab exited with code 1 before it was shut down; run {run_id}")
    assert f"on database {small_demo.label}" in failed.stdout
    record = json.loads((RUNS_DIR / run_id / "manifest.json").read_text())
    assert record["status"] == "manual" and not record.get("ended_at")
    with db.connect(small_demo) as conn:
        assert not db.scalar(conn, "select to_regclass('kbmigrate.seals') is not null") or \
            not db.scalar(conn, "select count(*) from kbmigrate.seals where run_id = %s", (run_id,))
    assert run_cli("lab", "--finish", run_id, "--dsn", small_demo.conninfo).returncode == 0  # kept open: it can be finished


def _lab_up(small_demo: Target, run_id: str) -> tuple[subprocess.Popen[str], str]:
    from test_lab import _free_port

    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "kbmigrate"), "lab", "--dsn", small_demo.conninfo,
                             "--run-id", run_id, "--no-browser", "--allow-root"], text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "JUPYTER_PORT": str(port), "JUPYTER_TOKEN": "t0ken"})
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=t0ken", timeout=5)
            return proc, str(RUNS_DIR / run_id)
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.3)


def _jupyter_of(folder: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", f"root_dir={folder}"], capture_output=True, text=True).stdout.split()


def test_ctrl_c_in_the_terminal_shuts_jupyterlab_down_and_finishes_the_run(small_demo: Target) -> None:
    """Ctrl-C reaches the terminal's whole process group: JupyterLab asks, the second shuts it down
    (exit 130), and kbmigrate, which let it, finishes the run. A SIGTERM to kbmigrate stops its
    JupyterLab too, never leaving it (and its kernels) behind."""
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    proc, folder = _lab_up(small_demo, run_id)
    try:
        for _ in range(3):  # once more than needed: a Ctrl-C after JupyterLab is gone must not cut the finish short
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.5)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "JupyterLab was shut down" in out and f"run {run_id} finished" in out, out + err
        assert json.loads((RUNS_DIR / run_id / "manifest.json").read_text())["ended_at"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    proc, folder = _lab_up(small_demo, run_id)
    try:
        assert _jupyter_of(folder)
        proc.terminate()  # kbmigrate alone
        proc.communicate(timeout=120)
        deadline = time.monotonic() + 30
        while _jupyter_of(folder) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not _jupyter_of(folder), "JupyterLab outlived the kbmigrate lab that started it"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _jupyter_of(folder):
            os.kill(int(pid), signal.SIGKILL)


def test_finishing_twice_is_refused(server: Target) -> None:
    target = new_demo(server, "kbt_lab2")
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    try:
        assert run_cli("lab", "--dsn", target.conninfo, "--run-id", run_id, "--prepare-only").returncode == 0
        assert run_cli("lab", "--finish", run_id, "--dsn", target.conninfo).returncode == 0
        again = run_cli("lab", "--finish", run_id, "--dsn", target.conninfo)
        assert again.returncode != 0 and "not a hand-stepped run still open" in again.stderr
        record: dict[str, Any] = json.loads((RUNS_DIR / run_id / "manifest.json").read_text())
        assert [s["status"] for s in record["steps"]] == ["not run"] * len(plan.STEPS)
        assert os.stat(RUNS_DIR / run_id).st_mode & 0o077 == 0
    finally:
        drop(server, target)


def _outputs(cell: Any) -> tuple[list[Any], str]:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    return errors, json.dumps(cell.outputs)


def test_a_stopped_cell_reads_as_in_the_terminal(server: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a hand-stepped kernel an expected failure is one block with advice that works there (run
    this cell again), never a traceback; the cells after it do not run on; a failing %%sql cell is
    an error, shown the same way and recorded; a lost connection says so."""
    target = new_demo(server, "kbt_lab3")
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    try:
        assert run_cli("lab", "--dsn", target.conninfo, "--run-id", run_id, "--prepare-only", "-p", "lock_retries=0").returncode == 0
        gated(target, run_id)
        folder = RUNS_DIR / run_id
        for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname")):
            monkeypatch.setenv(var, target.params[key])
        path = folder / "02_schema.ipynb"
        nb = nbformat.read(path, as_version=4)
        magic = next(c for c in nb.cells if c.source.startswith("%%sql"))
        magic.source = "%%sql\nselect no_such_column from knowledge_base"
        nbformat.write(nb, path)
        at = {name: next(i for i, c in enumerate(nb.cells) if marker in c.source) for name, marker in
              (("apply", "kb.apply()"), ("next", "format_type(a.atttypid"), ("magic", "no_such_column"))}
        client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(folder)}})
        with client.setup_kernel():
            with db.connect(target) as holder:
                holder.execute("lock table knowledge_base in access share mode")
                for i, cell in enumerate(nb.cells[:at["next"] + 1]):
                    if cell.cell_type == "code":
                        client.execute_cell(cell, i)
            errors, text = _outputs(nb.cells[at["apply"]])
            assert [e.ename for e in errors] == ["Blocked"] and len(errors[0].traceback) == 1, text
            assert "run this cell again" in errors[0].traceback[0] and "--resume" not in text, text
            assert "Traceback" not in text and "While it waited" in errors[0].traceback[0]
            assert text.index('"error"') < text.index("While it waited")  # the block first, the waits in it
            errors, text = _outputs(nb.cells[at["next"]])  # the check after it does not run on
            assert [e.ename for e in errors] == ["StepStopped"] and "Run that cell again first" in text, text

            for i, cell in enumerate(nb.cells[at["apply"]:], start=at["apply"]):  # the session ended; again from there
                if cell.cell_type == "code":
                    client.execute_cell(cell, i)
            assert not _outputs(nb.cells[at["apply"]])[0] and not _outputs(nb.cells[at["next"]])[0]
            errors, text = _outputs(nb.cells[at["magic"]])
            assert [e.ename for e in errors] == ["SqlFailed"] and "no_such_column" in text and "Traceback" not in text, text

            with db.connect(target, autocommit=True) as other:  # the server ends the kernel's session
                other.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
                              (f"kbmigrate 02_schema {run_id}"[:63],))
            lost = nbformat.v4.new_code_cell("kb.query('select 1 as one')")
            client.execute_cell(lost, 0)
            errors, text = _outputs(lost)
            assert [e.ename for e in errors] == ["ConnectionLost"] and "runbook.start again" in text, text
            assert "Traceback" not in text

        logged = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
        assert any(e["error"] and e["error"].startswith("SqlFailed") for e in logged)
        finished = run_cli("lab", "--finish", run_id, "--dsn", target.conninfo)
        assert finished.returncode == 0, finished.stderr
        step = next(s for s in json.loads((folder / "manifest.json").read_text())["steps"] if s["step"] == "02_schema")
        assert step["status"] == "failed" and step["error"].startswith("SqlFailed"), step
    finally:
        drop(server, target)


def test_by_hand_the_gate_waits_for_approval_and_the_budget_holds(server: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-stepped run (issue 23): 01's approval cell waits until someone runs `kbmigrate approve`,
    and meanwhile the engine refuses 02's change; approved, 02's slow change (planted) is stopped by
    its lock budget in its cell, one block with advice for that cell, its work rolled back."""
    import threading

    from kbmigrate.engine import gates
    from kbmigrate.errors import GateClosed

    target = new_demo(server, "kbt_lab_gate")
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    try:
        assert run_cli("lab", "--dsn", target.conninfo, "--run-id", run_id, "--prepare-only",
                       "-p", "lock_budget_floor=1s", "-p", "lock_timeout=500ms").returncode == 0
        folder = RUNS_DIR / run_id
        for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname")):
            monkeypatch.setenv(var, target.params[key])
        monkeypatch.setenv("KBMIGRATE_FAILPOINT_SLOW", "kb_constraints=5")  # production's, not the rehearsal's
        _run_cells(folder / "00_preflight.ipynb", folder)
        stepped: dict[str, Any] = {}
        backup = threading.Thread(target=lambda: stepped.update(nb=_run_cells(folder / "01_backup.ipynb", folder)))
        backup.start()
        deadline = time.monotonic() + 180
        while not gates.read(run_id).get("rehearsal"):  # written by the cell before the approval cell
            assert time.monotonic() < deadline and backup.is_alive(), "01 never reached its approval cell"
            time.sleep(0.2)
        time.sleep(2.0)
        assert backup.is_alive(), "01's approval cell did not wait"
        with db.connect(target) as conn, pytest.raises(GateClosed, match="nobody has approved"):
            gates.require(conn, run_id, "02_schema (kb_columns)")
        sha = gates.read(run_id)["rehearsal"]["sha256"]
        assert run_cli("approve", run_id, "--hash", sha).returncode == 0
        backup.join(60)
        assert not backup.is_alive() and "nb" in stepped
        shown = json.dumps(stepped["nb"].cells[-1].outputs)
        assert "kbmigrate approve" in shown and sha in shown  # the cell shows who approved what

        nb = nbformat.read(folder / "02_schema.ipynb", as_version=4)
        client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(folder)}})
        apply_at = next(i for i, c in enumerate(nb.cells) if "kb.apply()" in c.source)
        with client.setup_kernel():
            for i, cell in enumerate(nb.cells[:apply_at + 1]):
                if cell.cell_type == "code":
                    client.execute_cell(cell, i)
        errors, text = _outputs(nb.cells[apply_at])
        assert [e.ename for e in errors] == ["OverBudget"] and "Traceback" not in text, text
        assert "kb_constraints ran past its lock budget" in text and "its budget is 1.000 s" in text, text
        assert "set it in the parameters cell" in text and "--resume" not in text, text
        with db.connect(target, autocommit=True) as conn:
            assert not db.scalar(conn, "select count(*) from pg_constraint where conrelid = 'public.knowledge_base'::regclass "
                                       "and conname = 'knowledge_base_workspace_id_fkey'"), "the slow change was not rolled back"
            assert db.scalar(conn, "select count(*) from kbmigrate.ledger where run_id = %s and change = 'kb_columns' "
                                   "and outcome = 'applied'", (run_id,)) == 1
    finally:
        drop(server, target)
