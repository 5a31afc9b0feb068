"""The runbook notebooks: generated from tools/build_notebooks.py, parameters documented, no secrets."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kbmigrate.params import RunParams
from kbmigrate.paths import NOTEBOOK_DIR, REPO_ROOT
from kbmigrate.plan import STEPS


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", REPO_ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_notebook_per_step_and_in_sync_with_the_builder() -> None:
    built = _builder().build()
    assert set(STEPS) < set(built) and "07_rollback" in built
    for name, nb in built.items():
        on_disk = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        assert [c.source for c in on_disk.cells] == [c.source for c in nb.cells], f"{name}: run `make notebooks`"


@pytest.mark.parametrize("step", STEPS)
def test_parameters_are_documented_and_hold_no_secret(step: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{step}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert not any(word in tagged[0].source.lower().split("#")[0] for word in ("password", "secret", "dsn ="))
    out = subprocess.run([str(Path(sys.executable).parent / "papermill"), "--help-notebook", str(NOTEBOOK_DIR / f"{step}.ipynb")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("run_id", *RunParams().as_dict()):
        line = next((ln for ln in out.stdout.splitlines() if ln.strip().startswith(name + ":")), "")
        assert line and "(" in line, f"{name} is not documented by papermill --help-notebook"
    assert "lock_timeout" in out.stdout and "the longest any one statement may run" in out.stdout
    extra = {"00_preflight": "long_tx_seconds", "06_smoke_tests": "smoke_all_up_to"}.get(step)
    if extra:
        assert any(ln.strip().startswith(extra + ":") for ln in out.stdout.splitlines())


def test_a_notebook_runs_by_hand_without_parameters(small_demo, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in JupyterLab: the source notebook as is, the connection from the libpq environment."""
    from nbclient import NotebookClient

    p = small_demo.params
    for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname")):
        monkeypatch.setenv(var, p[key])
    nb = nbformat.read(NOTEBOOK_DIR / "00_preflight.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "GO: every check passed" in text
    assert "manual-" in "\n".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells for o in c.get("outputs", []))
