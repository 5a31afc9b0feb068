"""The kernel's own record of the cells it ran: ``runs/<run_id>/cells.jsonl``.

A hand-stepped run is recorded from what its kernels ran, not from which notebook file was saved.
``runbook.start`` installs a hook in the kernel: every cell it runs after that is one line here
(its step, the cell's id when the front end sends one, its source, when it ran, how long it took,
and its error in one line); the cells that ran before ``start`` in that kernel (the parameters)
are taken from the kernel's history. ``kbmigrate lab`` reads the log when JupyterLab closes
(``ran``): a notebook's cell counts as run when its last execution succeeded; an empty cell does
not count; cells the saved notebook does not show as run are counted, and said (``unsaved``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbmigrate.paths import append_json_line

LOG = "cells.jsonl"
_installed: dict[str, Any] = {}


def sha(source: str) -> str:
    return hashlib.sha256(source.strip().encode()).hexdigest()


def _write(folder: Path, line: dict[str, Any]) -> None:
    append_json_line(folder / LOG, line)


def _line(step: str, source: str, *, ok: bool, error: str | None, cell_id: str | None, count: int | None,
          seconds: float | None, redact: Callable[[str], str], **more: Any) -> dict[str, Any]:
    return {"step": step, "cell_id": cell_id, "sha256": sha(source), "source": redact(source), "count": count,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "seconds": seconds, "ok": ok, "error": redact(error) if error else None, **more}


def error_line(exc: BaseException) -> str:
    """An exception in one line: an expected failure's message, else its type and first line."""
    message = getattr(exc, "message", None) or (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {message}"


def install(ip: Any, step: str, folder: Path, redact: Callable[[str], str]) -> None:
    """Log every cell this kernel runs from now on into ``folder``, and the ones it ran before."""
    first = not _installed
    _installed.update(step=step, folder=folder, redact=redact)
    if not first:
        return
    history = list(getattr(ip.history_manager, "input_hist_raw", []))
    for count, source in enumerate(history[1:-1], start=1):  # the last one is the cell running now
        if source.strip():
            _write(folder, _line(step, source, ok=True, error=None, cell_id=None, count=count, seconds=None,
                                 redact=redact, before_start=True))
    started: dict[str, float] = {"at": time.monotonic()}

    def pre(info: Any) -> None:
        started["at"] = time.monotonic()

    def post(result: Any) -> None:
        info = result.info
        if info is None or info.silent or not (info.raw_cell or "").strip():
            return
        exc = result.error_before_exec or result.error_in_exec
        _write(_installed["folder"], _line(
            _installed["step"], info.raw_cell, ok=exc is None, error=error_line(exc) if exc else None,
            cell_id=getattr(info, "cell_id", None), count=result.execution_count,
            seconds=round(time.monotonic() - started["at"], 3), redact=_installed["redact"]))

    ip.events.register("pre_run_cell", pre)
    ip.events.register("post_run_cell", post)


def read(folder: Path) -> list[dict[str, Any]]:
    path = folder / LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class Ran:
    """What a step's kernels ran of its notebook."""

    step: str
    cells: int = 0  # the notebook's code cells that are not empty
    run: int = 0  # of them, those whose last execution succeeded
    errors: list[str] = field(default_factory=list)  # the errors of those whose last execution failed
    seconds: float = 0.0  # the time its cells took to run
    unsaved: int = 0  # run cells that the saved notebook does not show as run
    own: int = 0  # cells run that are not in the notebook (typed by hand, or edited)

    @property
    def status(self) -> str:
        if self.errors:
            return "failed"
        if not self.run:
            return "not run"
        return "succeeded" if self.run == self.cells else "partly run"


def ran(notebook: Path, step: str, log: list[dict[str, Any]]) -> Ran:
    """What ``log`` says of ``notebook``'s code cells (see the module's docstring)."""
    import nbformat  # here, not at the top: the kernels import this module, and nbformat costs them seconds

    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    mine = [e for e in log if e.get("step") == step]
    out = Ran(step, cells=len(code), seconds=round(sum(e.get("seconds") or 0 for e in mine), 2))
    matched: set[int] = set()
    for cell in code:
        cid, digest = cell.get("id"), sha(cell.source)
        hits = [i for i, e in enumerate(mine) if (cid and e.get("cell_id") == cid) or e["sha256"] == digest]
        matched.update(hits)
        if not hits:
            continue
        last = mine[hits[-1]]
        if not last["ok"]:
            out.errors.append(last["error"] or "error")
            continue
        out.run += 1
        if not cell.get("execution_count"):
            out.unsaved += 1
    out.own = len({mine[i]["sha256"] for i in range(len(mine)) if i not in matched})
    return out
