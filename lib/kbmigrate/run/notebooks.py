"""The runbook's notebooks: MyST Markdown text notebooks (jupytext) under ``notebooks/``.

The text file is the one source: a DBA edits it in JupyterLab (which jupytext opens as a
notebook), a reviewer reads it in a diff, and it never holds outputs. To run one, it is read
into a notebook here and handed to papermill; the executed ``.ipynb`` is the evidence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jupytext
import nbformat
from papermill.inspection import _infer_parameters

from kbmigrate.paths import NOTEBOOK_DIR

SUFFIX = ".md"


def path(step: str) -> Path:
    return NOTEBOOK_DIR / f"{step}{SUFFIX}"


def read(step: str) -> nbformat.NotebookNode:
    """The step's notebook, as papermill runs it."""
    nb = jupytext.read(path(step))
    nb.metadata.pop("jupytext", None)  # the executed copy is a plain notebook, not a paired text file
    for cell in nb.cells:  # as papermill's own loader leaves a notebook read from a file
        cell.metadata.setdefault("tags", [])
        cell.metadata.setdefault("papermill", {})
    return nb


def parameters_cell(nb: nbformat.NotebookNode) -> Any:
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"a runbook notebook needs exactly one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def parameters(step: str) -> list[dict[str, Any]]:
    """The step's parameters as papermill sees them: name, type, default and the help comment."""
    nb = read(step)
    parameters_cell(nb)
    return [{"name": p.name, "type": p.inferred_type_name, "default": p.default, "help": p.help}
            for p in _infer_parameters(nb)]


def declared(step: str) -> set[str]:
    """The names of the step's parameters: what ``kbmigrate run`` hands it (and nothing else)."""
    return {p["name"] for p in parameters(step)}


def own(step: str, values: dict[str, Any]) -> dict[str, Any]:
    """Of a run's parameter values, those the step declares."""
    names = declared(step)
    return {k: v for k, v in values.items() if k in names}
