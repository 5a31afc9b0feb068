"""One run's record, ``runs/<run_id>/manifest.json``, and the only code that writes it.

A ``Run`` is opened (a new run, a resumed one, a hand-stepped one), records each step it runs
(``begin``, then ``end``), takes what the engine's gates hold for it (its preflight verdict, its
backup and drill, the backup it relies on: ``engine/gates.py``, no side file), and is finished
(what changed, the report) and sealed (the manifest's sha256 in ``kbmigrate.seals``). ``run``,
``lab``, ``rollback`` (a run of 07_rollback) and ``revert`` all go through it. What the manifest
holds is described in ``manifest.py``; readers (report, summary, verify, runs) read the JSON.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from kbmigrate.conninfo import Target
from kbmigrate.engine import gates, ledger, plan
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import BadParameter
from kbmigrate.paths import RUNS_DIR, from_evidence, shown
from kbmigrate.run import compare, manifest, report, summary


@dataclass
class StepEntry:
    """One attempt at one step: its notebook, status and times (as the manifest lists it)."""

    step: str
    attempt: int
    notebook: str
    status: str = "running"
    start: str | None = field(default_factory=manifest.utc_now)
    end: str | None = None
    seconds: float | None = None
    error: str | None = None
    sha256: str | None = None
    superseded: bool = False
    cells: dict[str, int] | None = None  # a hand-stepped step: its code cells run, of how many (cells.py)
    warning: str | None = None  # what the record of a hand-stepped step could not see for itself
    started: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepEntry":
        step = d.get("step") or Path(d["notebook"]).stem  # older manifests name only the notebook
        return cls(step=step, attempt=int(d.get("attempt", 1)), notebook=d["notebook"], status=d["status"],
                   start=d.get("start"), end=d.get("end"), seconds=d.get("seconds"), error=d.get("error"),
                   sha256=d.get("sha256"), superseded=bool(d.get("superseded")), cells=d.get("cells"),
                   warning=d.get("warning"))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("started")
        return {k: v for k, v in d.items() if v is not None and (k != "superseded" or v)}


class Run:
    """A run's record (see the module's docstring)."""

    def __init__(self, target: Target, data: dict[str, Any]) -> None:
        self.target = target
        self.steps = [StepEntry.from_dict(s) for s in data.pop("steps", [])]
        self.data = data

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, target: Target, conn: psycopg.Connection[Any], run_id: str, params: RunParams, *,
             steps: list[str], extra: dict[str, Any] | None = None, status: str = "running",
             backup_of: str | None = None) -> "Run":
        """A new run on ``conn``'s database: its folder, the SQL as it is now, and its manifest."""
        run = cls(target, manifest.new(run_id, conn, target, params, extra or {}, status=status))
        run.data["plan"] = steps
        run.data["sql_files"] = plan.sql_files_used()
        run.folder.mkdir(parents=True, exist_ok=True)
        manifest.keep_sql(run.folder, run.data["sql_files"])
        if backup_of:
            gates.link_backup(run_id, backup_of)
        run.take_gates()
        run.save()
        return run

    @classmethod
    def load(cls, target: Target, run_id: str) -> "Run":
        return cls(target, manifest.load(run_id))

    @classmethod
    def for_resume(cls, target: Target, run_id: str, *, more: bool = False) -> "Run":
        return cls(target, manifest.load_for_resume(run_id, more=more))

    # -- what it is -------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    @property
    def folder(self) -> Path:
        return RUNS_DIR / self.run_id

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def as_dict(self) -> dict[str, Any]:
        return {**self.data, "steps": [s.as_dict() for s in self.steps]}

    def save(self) -> None:
        manifest.write(self.folder, self.as_dict(), self.target)

    def done_steps(self) -> set[str]:
        return {s.step for s in self.steps if s.status == "succeeded"}

    def remaining(self) -> list[str]:
        """The steps of the run not yet succeeded, in its order: none when the run was stopped after
        its last step and before it was closed (its report, its seal), which resuming then does."""
        order = self.data.get("plan") or (["07_rollback"] if "rollback_of" in self.data.get("parameters", {})
                                          else list(plan.STEPS))
        return [s for s in order if s not in self.done_steps()]

    def extend_plan(self, steps: list[str]) -> None:
        """Steps named to run inside this run (``--resume RUN --only STEP``) join its plan."""
        self.data["plan"] = [s for s in plan.STEPS if s in {*(self.data.get("plan") or []), *steps}]

    # -- a resumed run ----------------------------------------------------------------------
    def reopen(self, params: RunParams, steps: list[str]) -> None:
        """Continue a failed or interrupted run in its folder: its finished steps (and its backup)
        are kept; the notebook of a step that runs again is kept as ``<step>.attempt<n>.ipynb``.
        The SQL must be the SQL the run kept, or the evidence would not hold the code that ran."""
        now = plan.sql_files_used()
        kept = self.data.get("sql_files") or {}
        if now != kept:
            changed = sorted(k for k in {*now, *kept} if now.get(k) != kept.get(k))
            raise BadParameter(name="--resume", reason=f"the SQL changed since run {self.run_id} began "
                               f"({', '.join(changed[:5])}); start a new run with --backup-of {self.run_id} so "
                               "its evidence holds the SQL it runs")
        for entry in self.steps:  # every earlier attempt of a step that runs again is kept beside it
            if entry.step in steps and not entry.superseded:
                old = from_evidence(entry.notebook)
                moved = old.with_name(f"{entry.step}.attempt{entry.attempt}.ipynb")
                if old.exists() and old.name == f"{entry.step}.ipynb":
                    old.replace(moved)
                    entry.notebook = shown(moved)
                entry.superseded = True
        if "01_backup" in steps:
            self.data.pop("backup", None)  # this attempt takes the backup again
        self.data.setdefault("resumed", []).append({
            "at": manifest.utc_now(), "status_before": self.status, "operator": manifest.operator(),
            "code": manifest.code(), "steps": steps, "interrupted_before": self.data.pop("interrupted", None),
            "parameters_changed": {k: v for k, v in params.as_dict().items() if self.data["parameters"].get(k) != v}})
        self.data["parameters"].update(params.as_dict())
        self.data["status"], self.data["ended_at"] = "running", None
        self.save()

    # -- its steps --------------------------------------------------------------------------
    def begin(self, step: str) -> StepEntry:
        entry = StepEntry(step, 1 + sum(1 for e in self.steps if e.step == step), shown(self.folder / f"{step}.ipynb"))
        self.steps.append(entry)
        self.save()
        return entry

    def end(self, entry: StepEntry, status: str, error: str | None = None) -> None:
        """Record how a step ended: its status, time, notebook hash, and what the gates now hold."""
        entry.status, entry.error = status, error
        entry.end = manifest.utc_now()
        entry.seconds = round(time.monotonic() - entry.started, 2)
        path = from_evidence(entry.notebook)
        if path.exists():
            entry.sha256 = manifest.sha256_file(path)
        self.take_gates()
        self.save()

    def take_gates(self) -> None:
        """The manifest shows what the engine's gates hold for the run: its backup (with its
        drill's verdict), the run whose backup it relies on, its preflight verdict, its rehearsal and
        the approval of it."""
        held = gates.read(self.run_id)
        for key, name in (("backup", "backup"), ("backup_of", "backup_of"), ("preflight", "preflight_verdict"),
                          ("rehearsal", "rehearsal"), ("approval", "approval"), ("operator", "operator_recorded"),
                          ("four_eyes", "four_eyes")):
            if key in held:
                self.data[name] = held[key]

    # -- its end ----------------------------------------------------------------------------
    def finish(self, conn: psycopg.Connection[Any], status: str, *, interrupted: dict[str, Any] | None = None) -> None:
        """The run's end: its status, what it changed in numbers, its report."""
        self.take_gates()
        if interrupted:
            self.data["interrupted"] = interrupted
        rows = ledger.for_run(conn, self.run_id)  # read once for both
        self.data["changed"] = summary.numbers(conn, self.run_id, rows)
        self.data["changes_by_change"] = compare.per_change(conn, self.run_id, rows)  # beside its rehearsal in the report
        self.data["ended_at"] = manifest.utc_now()
        self.data["status"] = status
        # The manifest on disk takes its final status in one write, with its report: a run killed
        # before it is still "running", and --resume closes it (``remaining`` may then be empty).
        self.data["report"] = report.build(self.run_id, self.as_dict())
        self.save()

    def seal(self, conn: psycopg.Connection[Any]) -> str | None:
        """The final manifest's sha256 into the database's seals (when it has them)."""
        return manifest.seal(conn, self.folder, self.as_dict())

