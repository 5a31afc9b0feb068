"""The runbook notebooks: MyST text files, one per step, no outputs in the sources, a parameters
cell that is exactly RunParams (names and defaults), no secrets, and runnable by hand."""

from __future__ import annotations

import ast
import dataclasses
import subprocess

import pytest

from kbmigrate.run import notebooks
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import NOTEBOOK_DIR, REPO_ROOT
from kbmigrate.engine.plan import STEPS

from conftest import run_cli

ALL = [*STEPS, "07_rollback"]
EXTRAS = {"00_preflight": {"long_tx_seconds"}, "06_smoke_tests": {"smoke_all_up_to", "smoke_seed", "smoke_sample"},
          "07_rollback": {"rollback_of", "accept_loss"}}


def test_one_text_notebook_per_step_and_no_outputs_tracked() -> None:
    tracked = subprocess.run(["git", "ls-files", "notebooks"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    notebook_files = [t for t in tracked if t.endswith((".md", ".ipynb")) and t != "notebooks/README.md"]
    assert sorted(notebook_files) == sorted(f"notebooks/{s}.md" for s in ALL)
    for step in ALL:
        text = notebooks.path(step).read_text(encoding="utf-8")
        assert "format_name: myst" in text and "outputs" not in text.split("---", 2)[1]
        nb = notebooks.read(step)
        assert all(not c.get("outputs") for c in nb.cells)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {step[:2]} · ")


@pytest.mark.parametrize("step", ALL)
def test_the_parameters_cell_is_runparams(step: str) -> None:
    """One source of truth: every notebook's parameters are RunParams' names with RunParams'
    defaults (plus run_id and the step's own), each with a help comment; none is a secret."""
    found = {p["name"]: p for p in notebooks.parameters(step)}
    defaults = {f.name: f.default for f in dataclasses.fields(RunParams) if f.name != "extra"}
    assert set(found) == {"run_id", *defaults, *EXTRAS.get(step, set())}
    for name, value in defaults.items():
        assert ast.literal_eval(found[name]["default"]) == value, f"{step}: {name} defaults differ from RunParams"
    assert all(p["help"].strip() for p in found.values()), "every parameter has a help comment"
    cell = notebooks.parameters_cell(notebooks.read(step)).source.lower()
    assert not any(word in cell.split("#")[0] for word in ("password", "secret", "dsn ="))


def test_the_cli_documents_the_parameters() -> None:
    done = run_cli("params", "02")
    assert done.returncode == 0, done.stderr
    assert "lock_timeout: str (default \"1s\")" in done.stdout and "the longest any one statement may run" in done.stdout


def test_a_notebook_runs_by_hand_without_parameters(small_demo, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in JupyterLab: the source notebook as is, the connection from the libpq environment."""
    from nbclient import NotebookClient

    p = small_demo.params
    for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname")):
        monkeypatch.setenv(var, p[key])
    nb = notebooks.read("00_preflight")
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "GO: every check passed" in text
    assert "manual-" in "\n".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells for o in c.get("outputs", []))
