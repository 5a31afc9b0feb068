"""The runbook notebooks: MyST text files, one per step, no outputs in the sources, a parameters
cell that is a part of RunParams (names and defaults), no secrets, and runnable by hand."""

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


# The steps that change the database read every parameter: each change's transaction carries the
# run's settings (sections, strategy, membership table, batch size ...) for its SQL to read.
CHANGING = ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy")


@pytest.mark.parametrize("step", ALL)
def test_the_parameters_cell_is_a_part_of_runparams(step: str) -> None:
    """One source of truth: each notebook declares only the parameters it uses, each one of
    RunParams with RunParams' default (or run_id, or the step's own), with a help comment; none is
    a secret. A changing step declares them all."""
    found = {p["name"]: p for p in notebooks.parameters(step)}
    defaults = {f.name: f.default for f in dataclasses.fields(RunParams) if f.name != "extra"}
    own = EXTRAS.get(step, set())
    assert "run_id" in found and set(found) <= {"run_id", *defaults, *own}, set(found) - {"run_id", *defaults, *own}
    assert own <= set(found)
    if step in CHANGING:
        assert set(defaults) <= set(found), f"{step} lacks {set(defaults) - set(found)}"
    for name in set(found) & set(defaults):
        assert ast.literal_eval(found[name]["default"]) == defaults[name], f"{step}: {name} defaults differ from RunParams"
    assert {"lock_timeout", "read_timeout"} <= set(found), "every step's session has the run's bounds"
    assert all(p["help"].strip() for p in found.values()), "every parameter has a help comment"
    cell = notebooks.parameters_cell(notebooks.read(step)).source.lower()
    assert not any(word in cell.split("#")[0] for word in ("password", "secret", "dsn ="))


def test_a_step_is_handed_only_its_own_parameters() -> None:
    values = {"run_id": "r", **RunParams(lock_timeout="2s").as_dict(), "rollback_of": "x", "accept_loss": True}
    assert notebooks.own("00_preflight", values)["lock_timeout"] == "2s"
    # 01 rehearses the changes on the restored copy: it is handed every run parameter, and nothing else
    assert notebooks.own("01_backup", values) == {"run_id": "r", **RunParams(lock_timeout="2s").as_dict()}
    assert notebooks.own("07_rollback", values)["rollback_of"] == "x"
    assert "rollback_of" not in notebooks.own("02_schema", values)


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
