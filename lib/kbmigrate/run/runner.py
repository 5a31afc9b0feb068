"""``kbmigrate run``: execute the runbook notebooks in order with papermill, and archive them.

Each executed notebook goes to runs/<run_id>/, with runs/<run_id>/manifest.json describing the
run. The connection reaches the notebook kernels through libpq environment variables only, so
no secret is ever a notebook parameter. The first failed step stops the run.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets as pysecrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from kbmigrate import db, errors
from kbmigrate.checks import pooler
from kbmigrate.engine import blockers, failpoint, gates, ledger, plan
from kbmigrate.run import approval, interrupt, manifest, notebooks, saving
from kbmigrate.run.kernel import IpcKernelManager, RunKernel
from kbmigrate.run.record import Run, StepEntry
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.errors import BadParameter, GateClosed, Interrupted, NoGo, NotApproved, RunFailed, SecretInArtifact
from kbmigrate.engine.lock import run_lock
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import NOTEBOOK_DIR, RUNS_DIR, WAITS_LOG, from_evidence, shown

LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGSERVICE",
              "PGSERVICEFILE", "PGSSLMODE", "PGOPTIONS", "PGAPPNAME", "PGCONNECT_TIMEOUT")


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{pysecrets.token_hex(2)}"


def resolve_step(name: str) -> str:
    """A step named by its number (02), its name (backfill) or a prefix of it (smoke)."""
    matches = ([s for s in plan.STEPS if s == name or s.split("_", 1)[0] == name.zfill(2) or s.split("_", 1)[1] == name]
               or [s for s in plan.STEPS if s.split("_", 1)[1].startswith(name)]) if name else []
    if len(matches) != 1:
        raise BadParameter(name="step", reason=f"{name!r} is not one of {', '.join(plan.STEPS)}")
    return matches[0]


def select_steps(only: list[str] | None, backup_of: str | None = None) -> list[str]:
    """The steps of a new run: all, or ``only`` those. A run that relies on another run's backup
    takes none of its own. A changing step needs the run's gates (``engine/gates.py``): the
    engine refuses it without them, and a run that could never hold them is refused here, before
    it starts."""
    steps = [s for s in plan.STEPS if s in {resolve_step(n) for n in only}] if only else list(plan.STEPS)
    if backup_of:
        steps = [s for s in steps if s != "01_backup"]
    changing = [s for s in steps if s in plan.CHANGING]
    if changing:
        missing = [why for why, ok in (("its GO (add 00)", "00_preflight" in steps),
                                       ("a proven backup (add 01, or --backup-of RUN)", "01_backup" in steps or backup_of))
                   if not ok]
        if missing:
            raise BadParameter(name="--only", reason=f"{', '.join(changing)} would change the database without "
                               f"{' and '.join(missing)}; a changing step runs only in a run that holds its gates")
    return steps


@contextmanager
def kernel_environment(target: Target) -> Iterator[None]:
    """The kernels inherit this process's environment, with the target's own settings on top:
    they connect exactly as this process does (a setting the target leaves out, such as
    PGPASSFILE, PGSSLMODE or PGSERVICEFILE, comes from the environment for both)."""
    settings = {**libpq_env(target), failpoint.RUNNER_PID: str(os.getpid())}  # a failpoint's crash takes the run too
    saved = {k: os.environ.get(k) for k in {*LIBPQ_VARS, *settings}}
    try:
        os.environ.update(settings)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def kernel_chatter_to(path: Path, target: Target) -> Iterator[None]:
    """What the kernel machinery (tornado, zmq, traitlets) logs while a run goes on is written to
    the run folder, not to the terminal: a kernel shutting down after a failed step can log a
    stray callback traceback, and an expected failure must end in one line. Secrets are redacted."""
    class Redacting(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return target.redact(super().format(record))

    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(Redacting("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("tornado", "traitlets", "asyncio")]
    saved = [(lg.propagate, list(lg.handlers)) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    try:
        yield
    finally:
        for lg, (propagate, handlers) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
        handler.close()


def tidy_log(path: Path, target: Target) -> None:
    """The kernels' own log: removed when empty, else kept with any secret redacted."""
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        path.unlink()
        return
    path.write_text(target.redact(text), encoding="utf-8")


def scan_for_secrets(path: Path, secrets: frozenset[str]) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    if any(s and len(s) >= 4 and s in text for s in secrets):
        path.unlink()
        raise SecretInArtifact(path=shown(path))


# What psycopg raises when the server went away under a statement (a restart, a cut network)
CONNECTION_LOST = {"OperationalError", "AdminShutdown", "CrashShutdown", "CannotConnectNow", "ConnectionFailure",
                   "ConnectionException", "ConnectionDoesNotExist"}


def _failure_reason(exc: PapermillExecutionError, run_id: str = "RUN_ID") -> str:
    value = (exc.evalue or exc.ename or "error").strip()
    value = value.removeprefix("Check failed: ")
    if exc.ename in CONNECTION_LOST:
        first = value.splitlines()[0] if value else exc.ename
        return (f"the database connection was lost ({first}); what the step was changing was rolled back. "
                f"Once the server answers, continue with 'kbmigrate run --resume {run_id}'")
    return value if exc.ename in errors.names() else f"{exc.ename}: {value}"


def run(target: Target, params: RunParams, *, run_id: str | None = None, backup_of: str | None = None,
        only: list[str] | None = None, progress: bool = True, echo: Any = print,
        notebooks: list[str] | None = None, extra: dict[str, Any] | None = None,
        resume: bool = False, new_backup: bool = False, approve: str | None = None, four_eyes: bool = False,
        approval_wait: float = 1800.0) -> dict[str, Any]:
    """Run the plan's notebooks (or ``notebooks``, e.g. ["07_rollback"], with ``extra`` parameters).
    With ``resume``, continue run ``run_id`` in its own folder (see ``Run.reopen``). Before the first
    changing step, the run gets its rehearsal approved (``run/approval.py``: ``approve`` is
    ``"auto"``, a sha256 trusted up front, or None: ask at a terminal, else wait ``approval_wait``
    seconds for ``kbmigrate approve``); ``four_eyes``: the operator may not approve it."""
    params.validate()
    run_id = run_id or new_run_id()
    if not run_id.replace("-", "").replace("_", "").isalnum():
        raise BadParameter(name="--run-id", reason="use letters, digits, - and _ only")
    folder = RUNS_DIR / run_id
    resumed: Run | None = None
    if resume:
        resumed = Run.for_resume(target, run_id, more=bool(only))
        if only:  # steps run inside this run, under its gates, as their next attempts
            steps = [s for s in plan.STEPS if s in {resolve_step(n) for n in only}]
            resumed.extend_plan(steps)
        else:
            steps = resumed.remaining()
            if not steps:
                echo(f"Every step of run {run_id} has succeeded; it was stopped before it was closed: "
                     "writing its report and sealing it.")
        if new_backup and "01_backup" not in steps:
            order = resumed.data.get("plan") or list(plan.STEPS)
            steps = [s for s in order if s in {*steps, "01_backup"}]
    else:
        if folder.exists():
            raise BadParameter(name="--run-id", reason=f"runs/{run_id} already exists; a run id is used once")
        steps = notebooks or select_steps(only, backup_of)
        if backup_of:
            gates.proven_backup(backup_of)  # refused before anything starts; checked against the database at each change
    with private_files(), session_log(folder, fresh=not resume):
        try:
            # one session probes for a pooler (before the run lock, which a transaction pooler would
            # strand), then holds that lock and opens the run: each session set up is 3 round trips
            with db.connect(target, autocommit=True, application_name=f"kbmigrate lock run {run_id}"[:63]) as session:
                ok, detail = pooler.own_session(target, session)
                if not ok:
                    raise NoGo(target=target.label, reason=detail)
                with run_lock(target, f"run {run_id}", session):
                    if resumed is not None:
                        _may_resume(session, resumed, new_backup)
                        resumed.reopen(params, steps)
                        run = resumed
                    else:
                        run = Run.open(target, session, run_id, params, steps=steps, extra=extra, backup_of=backup_of)
                    gates.record_session(run_id, gates.identity(session), detail)  # preflight's "connection"
                    gates.record_operator(run_id, approval.who(), four_eyes=four_eyes)
                    asked = Approval(approve, approval_wait)
                    with Closing(target, params, run_id) as closing:
                        try:
                            failure = _execute(target, params, run, steps, progress, echo, extra or {}, asked, closing)
                        finally:
                            run.seal(closing())
                    if failure:
                        raise failure
                    return run.as_dict()
        except BaseException:
            if not resume and not (folder / "manifest.json").exists():  # refused before it began: nothing to keep
                shutil.rmtree(folder, ignore_errors=True)
            raise


def _may_resume(conn: Any, run: Run, new_backup: bool) -> None:
    """A run is resumed on its own database, and takes a new backup only while it changed nothing."""
    where = (conn.info.dbname, str(conn.info.port))
    changed = new_backup and ledger.exists(conn) and db.scalar(conn, """
        select count(*) from kbmigrate.ledger where run_id = %s and outcome = 'applied'
        and step not in ('run', '00_preflight', '01_backup')""", (run.run_id,))
    if changed:
        raise BadParameter(name="--new-backup", reason=f"run {run.run_id} has already applied {changed} "
                           "change(s): a backup now would hold a half-migrated database, and the "
                           "rollback must restore the one from before; resume without --new-backup")
    made_on = run.data["target"]
    if where != (made_on["database"], str(made_on["port"])):
        raise BadParameter(name="--resume", reason=f"run {run.run_id} was made on database {made_on['database']} "
                           f"(port {made_on['port']}), not {where[0]} (port {where[1]}); name its database with --dsn")


def closing_limits(params: RunParams) -> db.Limits:
    """The bounds of a run's closing sessions (its summary, its seal): the run's own, but never
    longer than the tool's short reads. A run stopped by a lock, or interrupted, ends at once
    even when it was given a long lock_timeout."""
    short = RunParams(lock_timeout=db.READ.lock_timeout, read_timeout=db.READ.statement_timeout)
    lock = min(params, short, key=lambda p: p.seconds("lock_timeout")).lock_timeout
    statement = min(params, short, key=lambda p: p.seconds("read_timeout")).read_timeout
    return db.Limits(lock, statement)


class Closing:
    """The run's closing session, for its summary and then its seal: opened when first needed
    (after the last step, so an interrupt's ending of the run's sessions is over), once, under
    ``closing_limits``; closed with the block."""

    def __init__(self, target: Target, params: RunParams, run_id: str) -> None:
        self.target, self.limits, self.name = target, closing_limits(params), f"kbmigrate closing {run_id}"[:63]
        self.conn: Any = None

    def __call__(self) -> Any:
        if self.conn is None or self.conn.closed:
            self.conn = db.connect(self.target, autocommit=True, limits=self.limits, application_name=self.name)
        return self.conn

    def __enter__(self) -> "Closing":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()


def step_of(entry: dict[str, Any]) -> str:
    """The step a manifest entry ran (older manifests name only the notebook)."""
    return StepEntry.from_dict(entry).step


@contextmanager
def session_log(folder: Path, *, fresh: bool) -> Iterator[None]:
    """Every session the run opens (here and in its kernels) is listed in runs/<id>/sessions.jsonl
    with the bounds the server holds for it (see ``db.connect``)."""
    folder.mkdir(parents=True, exist_ok=not fresh)
    saved = os.environ.get(db.SESSION_LOG)
    os.environ[db.SESSION_LOG] = str(folder / "sessions.jsonl")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(db.SESSION_LOG, None)
        else:
            os.environ[db.SESSION_LOG] = saved


@contextmanager
def private_files() -> Iterator[None]:
    """Everything a run writes is its operator's only: folders 0700, files 0600 (the evidence
    holds titles and emails, as the dump does)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def mark_interrupted(path: Path, stop: interrupt.Stop) -> None:
    """Put a plain mark at the top of a step's notebook: what stopped it, and what was ended."""
    book = nbformat.read(path, as_version=4)
    note = (f"**Interrupted** by {stop.signal} at {stop.at}. kbmigrate cancelled this step's statements and "
            f"ended its database sessions (pids {', '.join(map(str, sorted(set(stop.sessions_ended)))) or 'none left'}); "
            "the transaction in progress was rolled back. The cells below show what ran before.")
    book.cells.insert(0, nbformat.v4.new_markdown_cell(note, metadata={"tags": ["kbmigrate-interrupted"]}))
    nbformat.write(book, path)


@dataclass(frozen=True)
class Approval:
    """How the run is to get its approval (``run/approval.py``)."""

    approve: str | None = None
    wait: float = 1800.0


def _execute(target: Target, params: RunParams, run: Run, steps: list[str], progress: bool, echo: Any,
             extra: dict[str, Any], asked: Approval, closing: "Closing") -> Exception | None:
    """Run ``steps`` in ``run``, recording each; then finish the run. Returns what stopped it, if anything."""
    failure: Exception | None = None
    run_id, folder = run.run_id, run.folder
    kernels = type("RunKernelManager", (IpcKernelManager,), {"log_path": folder / "kernels.log"})
    parameters = {k: v for k, v in run.data["parameters"].items() if k not in ("run_id",)}
    with kernel_environment(target), kernel_chatter_to(folder / "kernels.log", target), \
            interrupt.stop_on_signals(target, run_id, lambda m: echo(m), manifest.utc_now) as stop, \
            blockers.relayed(folder / WAITS_LOG, lambda line: echo(f"  {line}")):
        kernel = RunKernel(kernels, NOTEBOOK_DIR)
        try:
            failure = _steps(target, run, steps, progress, echo, parameters, extra, stop, kernel, asked)
        finally:
            kernel.close()
        if stop.signal and failure is None:  # stopped between steps
            failure = Interrupted(run=run_id, signal=stop.signal, step="the pause between two steps", evidence=shown(folder))
        if stop.signal:
            stop.settle()
    tidy_log(folder / "kernels.log", target)
    status = "interrupted" if isinstance(failure, Interrupted) else "failed" if failure else "succeeded"
    run.finish(closing(), status, interrupted=stop.as_dict() if stop.signal else None)
    echo(f"  report → {run.data['report']['path']}")
    return failure


def _steps(target: Target, run: Run, steps: list[str], progress: bool, echo: Any, parameters: dict[str, Any],
           extra: dict[str, Any], stop: interrupt.Stop, kernel: RunKernel, asked: Approval) -> Exception | None:
    """Run each step in the run's kernel, recording it; returns what stopped the run, if anything.
    Before the first step that changes production, the approval gate (``run/approval.py``)."""
    failure: Exception | None = None
    run_id, folder = run.run_id, run.folder
    for step in steps:
        if stop.signal:
            break
        if step in plan.CHANGING:
            try:
                approval.obtain(run_id, approve=asked.approve, wait=asked.wait, echo=echo,
                                stopped=lambda: bool(stop.signal))
            except (NotApproved, GateClosed) as exc:
                failure = exc
                break
        entry = run.begin(step)
        out = from_evidence(entry.notebook)
        echo(f"▶ {step} …" if entry.attempt == 1 else f"▶ {step} (attempt {entry.attempt}) …")
        status, error = "succeeded", None
        try:
            papermill.execute_notebook(
                notebooks.read(step), str(out), parameters=notebooks.own(step, {"run_id": run_id, **parameters, **extra}),
                kernel_name="python3", progress_bar=progress, cwd=str(NOTEBOOK_DIR),
                request_save_on_cell_execute=True, engine_name=saving.NAME,  # saved as each code cell starts and ends
                km=kernel.for_step(),  # the run's kernel, made new (run/kernel.py)
            )
        except PapermillExecutionError as exc:
            status, error = "failed", target.redact(_failure_reason(exc, run_id)).rstrip(".")
            failure = RunFailed(step=step, reason=error, evidence=shown(out))
        except (RuntimeError, OSError, TimeoutError) as exc:  # the kernel did not start or answer
            status, error = "failed", target.redact(f"the notebook kernel failed: {exc}")
            failure = RunFailed(step=step, reason=error, evidence=shown(out))
        except KeyboardInterrupt:  # a second signal: stop at once, still leaving a true record
            status, error = "interrupted", f"stopped at once by a second {stop.signal}"
            failure = Interrupted(run=run_id, signal=stop.signal or "SIGINT", step=step, evidence=shown(folder))
        if stop.signal and not isinstance(failure, Interrupted):
            status, error = "interrupted", f"interrupted by {stop.signal}" + (f" ({error})" if error else "")
            failure = Interrupted(run=run_id, signal=stop.signal, step=step, evidence=shown(folder))
            if out.exists():
                mark_interrupted(out, stop)
        if out.exists():
            scan_for_secrets(out, target.secrets)
        run.end(entry, status, error)
        echo(f"  {entry.status} in {entry.seconds} s → {entry.notebook}")
        if failure:
            break
    return failure
