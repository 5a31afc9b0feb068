"""The runbook's API: what a notebook's cells call, in the kernel, to connect, apply a step,
query into tables and check.

A notebook stays thin: its parameters cell, then ``kb = runbook.start("02_schema", globals())``,
then one cell per action. The connection comes from the environment (the libpq settings that
``kbmigrate run`` or ``make lab`` set), never from a parameter, so no secret is ever written
into a notebook.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from kbmigrate import cells, conninfo, db, errors, ipysql
from kbmigrate.engine import blockers, failpoint, gates, held, ledger, lock
from kbmigrate.errors import Blocked, CheckFailed, ConnectionLost, KbError, SqlFailed, StepStopped, TooSlow
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import RUNS_DIR, WAITS_LOG, append_line, read_sql
from kbmigrate.engine.steps import apply_step

PARAM_NAMES = tuple(RunParams().as_dict())


def default_run_id() -> str:
    """For hand-stepping in JupyterLab: one id per person per day."""
    return f"manual-{dt.datetime.now(dt.UTC):%Y%m%d}-{getpass.getuser()}"


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A query's rows as a table, with its columns even when it returned no row: an empty result
    reads as an empty table (``found.empty``), and a cell that uses a column still finds it."""
    return pd.DataFrame(rows, columns=getattr(rows, "columns", None) or None)


class Step:
    def __init__(self, step: str, run_id: str, params: RunParams) -> None:
        self.step = step
        self.run_id = run_id or default_run_id()
        self.params = params
        self.target = conninfo.resolve()
        # In the round trip that sets the session's bounds: the kernels' shared lock (engine/lock.py),
        # and what the step shows and checks of the server.
        self.conn: psycopg.Connection[Any]
        self.conn, found = db.connect_reading(self.target, [lock.HOLD_FOR_KERNEL, (
            "select current_setting('server_version') as server, current_user as usr, " + gates.SYSTEM_IDENTIFIER,
            None)], limits=params.limits("read"), autocommit=True,
            application_name=f"kbmigrate {step} {self.run_id}"[:63])
        self.server = found[1][0]
        if self.server["system_identifier"]:
            gates.knew(self.conn, self.server["system_identifier"])
        # While a statement of this step waits for a lock, the cell's output says for whom.
        self.waits: list[str] = []
        self.stopped: dict[str, Any] | None = None  # the cell an expected failure stopped this step at
        self.watcher = blockers.Watcher(self.target, self.run_id, self._waiting, first_look=min(
            blockers.FIRST_LOOK, params.seconds("lock_timeout") / 3)).__enter__()
        in_the_kernel(self)

    def close(self) -> None:
        """End the step's watcher and session (``leave``)."""
        self.watcher.__exit__(None, None, None)
        self.conn.close()

    def going_on(self) -> None:
        """Refuse to go on past a cell that stopped the step (it may run again itself)."""
        if self.stopped and not _same_cell(self.stopped, _current.get("cell")):
            raise StepStopped(step=self.step, count=self.stopped["count"], name=self.stopped["name"])

    def _waiting(self, line: str) -> None:
        self.waits.append(line)
        print(line, flush=True)
        folder = RUNS_DIR / self.run_id
        if folder.is_dir():  # a headless run's terminal shows it too (blockers.relayed)
            append_line(folder / WAITS_LOG, f"{self.step}: {line}")

    def __repr__(self) -> str:
        return f"<step {self.step} of run {self.run_id} on {self.target.label}>"

    def info(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "step": self.step, "run_id": self.run_id, "database": self.target.label,
            "server": self.server["server"], "as user": self.server["usr"],
            "utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }])

    def apply(self, *, progress: bool = True) -> pd.DataFrame:
        """Apply every change of this step (sql/plan.txt) and show what happened to each (``held
        (s)``: how long its transaction held its locks on the server)."""
        self.going_on()
        done = apply_step(self.conn, self.step, self.params, self.run_id, progress=progress)
        return pd.DataFrame([{"change": o.change, "outcome": o.outcome, "rows": o.rows_affected,
                              "seconds": round(o.seconds, 3), "locks held at commit": locks_text(o.detail),
                              "held (s)": o.detail.get("held_seconds"), "budget (s)": o.detail.get("budget_seconds"),
                              "note": "; ".join(filter(None, [
                                  o.detail.get("skipped") or o.detail.get("already"),
                                  f"one round trip with {o.detail['sent_with']} changes (seconds: theirs together)"
                                  if o.detail.get("sent_with") else None,
                                  f"paused_after {o.detail['paused_after']} s: the application is there (work_share)"
                                  if o.detail.get("paused_after") else None]))} for o in done])

    def query(self, source: str | sql.Composable, params: Any = None) -> pd.DataFrame:
        """A query (or ``report/x.sql`` under sql/) as a table."""
        self.going_on()
        text = read_sql(source) if isinstance(source, str) and source.endswith(".sql") else source
        return table(db.rows(self.conn, text, params))  # db.rows marks it in flight

    def batch(self, queries: list[tuple[str | sql.Composable, Any]]) -> list[pd.DataFrame]:
        """Several queries (each with its bound values) in one round trip; a table for each."""
        self.going_on()
        return [table(rows) for rows in db.batch(self.conn, list(queries))]

    def execute(self, query: str, params: Any = None) -> int:
        """A statement that returns no rows (e.g. a temporary table of this step's own); its row count."""
        self.going_on()
        with blockers.in_flight():
            return self.conn.execute(query, params).rowcount

    def scalar(self, query: str, params: Any = None) -> Any:
        self.going_on()
        return db.scalar(self.conn, query, params)

    def sql_magic(self) -> str:
        """Connect ipython-sql's ``%sql``/``%%sql`` to this step's database, for the queries a DBA
        re-runs by hand: on this step's own session (``ipysql.Lent``), under its read timeouts.
        A session of its own would cost the run 3 round trips per step to set up, and the
        database one more of its connection slots."""
        from IPython import get_ipython

        ip = get_ipython()
        if ip is None:
            raise RuntimeError("%sql needs an IPython kernel")
        ip.run_line_magic("load_ext", "sql")
        for setting in ("SqlMagic.displaycon = False", "SqlMagic.feedback = False", "SqlMagic.autopandas = True",
                        "SqlMagic.short_errors = False"):
            ip.run_line_magic("config", setting)
        sql_fails_plainly(self, ip)
        limits = self.params.limits("read")
        if self.conn.closed or self.conn.broken:
            raise ConnectionLost(step=self.step, what="%sql has no session: this step's is gone", run=self.run_id)
        ipysql.current_on(lambda: ipysql.Lent(self.conn), self.target.label)
        return f"%sql connected to {self.target.label} on this step's session (pid {self.conn.info.backend_pid}; " \
               f"lock_timeout {limits.lock_timeout}, statement_timeout {limits.statement_timeout})"

    def ledger(self) -> pd.DataFrame:
        return pd.DataFrame(ledger.for_run(self.conn, self.run_id, self.step))

    def approval(self, wait: float = 1800.0) -> pd.DataFrame:
        """The approval gate, in 01's last cell. Headless, ``kbmigrate run`` asks for the approval
        after this step (``run/approval.py``); by hand, the cell records a self-approval when the
        run was opened with ``kbmigrate lab --auto-approve``, else it waits, at most ``wait``
        seconds, for ``kbmigrate approve RUN`` from a terminal (JupyterLab's own: File > New >
        Terminal). The engine refuses production's changes without it, whatever this cell did."""
        rehearsed = gates.to_approve(self.run_id)
        try:
            given = gates.approved(self.run_id)
        except errors.GateClosed as exc:
            if exc.details.get("gate") != "approval":
                raise
            recorded = gates.read(self.run_id)
            if os.environ.get(failpoint.RUNNER_PID):
                return pd.DataFrame([{"approval": "asked for by kbmigrate run after this step", "evidence": rehearsed["path"],
                                      "sha256": rehearsed["sha256"]}])
            if recorded.get("auto_approve"):
                given = gates.approve(self.run_id, by=getpass.getuser(), how="auto (kbmigrate lab --auto-approve)")
            else:
                given = self._wait_for_approval(rehearsed, wait, four_eyes=bool(recorded.get("four_eyes")))
        return pd.DataFrame([{"approved by": given["by"], "at": given["at"], "how": given["how"],
                              "self-approval": given.get("self"), "sha256 approved": given["sha256"],
                              "evidence": rehearsed["path"]}])

    def _wait_for_approval(self, rehearsed: dict[str, Any], wait: float, *, four_eyes: bool) -> dict[str, Any]:
        print(f"⏸ waiting for approval of {rehearsed['path']} (sha256 {rehearsed['sha256']}): in a terminal, "
              f"kbmigrate approve {self.run_id}{' (four eyes: by someone other than ' + getpass.getuser() + ')' if four_eyes else ''}",
              flush=True)
        given = gates.wait_approved(self.run_id, wait, say=lambda line: print(line, flush=True))
        if given is not None:
            return given
        raise errors.NotApproved(run=self.run_id, why=f"nobody approved its rehearsal within {wait:g} s",
                                 evidence=rehearsed["path"])


def locks_text(detail: dict[str, Any]) -> str:
    """A change's locks on the application's relations (``change.sql``), e.g. "public.knowledge_base
    AccessExclusiveLock"; a relation's weaker modes beside its strongest are left out."""
    return held.text(detail.get("locks"))


_current: dict[str, Any] = {}  # the kernel's current step, and the cell running now
_hooked: list[bool] = []  # the cell hooks are in place in this kernel


def _same_cell(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    return b is not None and ((a["id"] is not None and a["id"] == b["id"]) or a["sha"] == b["sha"])


def _cell_begins(info: Any) -> None:
    _current["cell"] = {"id": getattr(info, "cell_id", None), "sha": cells.sha(info.raw_cell or "")}
    if "step" in _current:
        _current["step"].waits.clear()


def _cell_ends(result: Any) -> None:
    step, cell = _current.get("step"), _current.get("cell")
    if step is None:
        return
    if result.success and step.stopped and _same_cell(step.stopped, cell):
        step.stopped = None  # the cell that stopped the step ran again, and went through

# The SQLSTATE classes of a connection that went away: 08 connection exception, 57P0x shutdown
LOST_CONNECTION = ("08", "57P01", "57P02", "57P03")


def expected(step: Step, exc: BaseException) -> KbError | None:
    """The expected failure ``exc`` is, as the terminal would name it (None: a bug, shown with its
    traceback). A statement stopped by a timeout names the blocker or the limit; a lost connection
    says so."""
    if isinstance(exc, KbError):
        return exc
    if isinstance(exc, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
        try:
            limits = f"({step.params.statement_timeout} in a change, {step.params.read_timeout} in a read)"
            with blockers.named(step.step, step.run_id, step.params.lock_timeout, limits):
                raise exc
        except KbError as named:
            return named
        except BaseException:
            return None
    if isinstance(exc, psycopg.OperationalError) and (
            step.conn.broken or step.conn.closed or (exc.sqlstate or "08").startswith(LOST_CONNECTION)):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ConnectionLost(step=step.step, what=step.target.redact(first), run=step.run_id)
    return None


def show_failures_plainly(step: Step) -> None:
    """An expected failure ends its cell as one block: the message and its advice, no traceback
    (papermill and the run's record still see the cell fail, by the error's name). For a lock wait,
    the block comes first and the waits it saw follow it. A bug keeps its traceback."""
    from IPython import get_ipython
    from IPython.display import clear_output

    ip = get_ipython()
    if ip is None:
        return
    if not _hooked:  # once per kernel; a later start() makes its step the current one
        ip.events.register("pre_run_cell", _cell_begins)
        ip.events.register("post_run_cell", _cell_ends)
        _hooked.append(True)
    _current["step"] = step

    def handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
        named = expected(step, value)
        if named is None:
            stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
            shell._showtraceback(etype, value, stb)
            return stb
        block = [f"{type(named).__name__}: {named.message}"]
        if not isinstance(named, (StepStopped, SqlFailed)) and _current.get("cell"):  # a failed look stops nothing
            step.stopped = {**_current["cell"], "count": shell.execution_count, "name": type(named).__name__}
        if isinstance(named, (Blocked, TooSlow)) and step.waits:
            clear_output()  # the waits printed so far come again below the message
            block += ["", "While it waited:", *(f"  {w}" for w in step.waits[-3:])]
        shell._showtraceback(type(named), named, ["\n".join(block)])
        return block

    ip.set_custom_exc((Exception,), handler)


def sql_fails_plainly(step: Step, ip: Any) -> None:
    """``%sql``/``%%sql`` as ipython-sql runs them, except that a failed query raises (ipython-sql
    prints it and goes on, so a run would not stop nor record it): as ``SqlFailed``, or as the lock
    wait or lost connection it was, shown like any expected failure. ipython-sql's own traceback
    print is dropped."""
    import contextlib
    import io
    import sys

    from IPython.core.magic import needs_local_scope
    from sqlalchemy.exc import DBAPIError

    original = ip.magics_manager.magics["cell"]["sql"]
    if getattr(original, "kbmigrate", False):
        original = original.original

    @needs_local_scope
    def sql(line: str = "", cell: str = "", local_ns: Any = None) -> Any:
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                result = original(line, cell, local_ns=local_ns)
        except DBAPIError as exc:
            orig = exc.orig
            if isinstance(orig, psycopg.Error) and expected(step, orig) is not None:
                raise orig from None
            diag = getattr(orig, "diag", None)
            reason = (diag.message_primary if diag else None) or str(orig or exc).strip().splitlines()[0]
            raise SqlFailed(step=step.step, reason=step.target.redact(reason),
                            sqlstate=getattr(orig, "sqlstate", None) or "none") from None
        if result is None and "Traceback" in said.getvalue():  # ipython-sql could not connect
            raise ConnectionLost(step=step.step, what="%sql could not connect", run=step.run_id)
        sys.stdout.write(said.getvalue())
        return result

    sql.kbmigrate, sql.original = True, original  # type: ignore[attr-defined]
    ip.register_magic_function(sql, magic_kind="line_cell", magic_name="sql")


def in_the_kernel(step: Step) -> None:
    """The kernel of a run logs the cells it runs (``cells.py``), shows expected failures plainly,
    and, in a hand-stepped run, advises on cells rather than commands."""
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        return
    folder = RUNS_DIR / step.run_id
    manifest = folder / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text(encoding="utf-8")).get("status") == "manual":
        errors.advise_by_hand()
    if folder.is_dir():
        cells.install(ip, step.step, folder, step.target.redact)
    show_failures_plainly(step)


def readable_tables() -> None:
    """Tables as evidence: every value whole (hashes, reasons, details), every row of what a cell
    chose to show, and SQL NULL shown as NULL, never as None or NaN."""
    pd.set_option("display.max_colwidth", None)
    from IPython import get_ipython

    ip = get_ipython()
    if ip is not None:
        ip.display_formatter.formatters["text/html"].for_type(
            pd.DataFrame, lambda df: _nulls(df).to_html(na_rep="NULL", notebook=True, border=0))
        ip.display_formatter.formatters["text/plain"].for_type(
            pd.DataFrame, lambda df, printer, cycle: printer.text(_nulls(df).to_string(na_rep="NULL")))


def _nulls(df: pd.DataFrame) -> pd.DataFrame:
    """pandas writes ``na_rep`` for a missing number, and "None" for a missing text or uuid: NULL for both."""
    return df.apply(lambda col: col.where(col.notna(), "NULL") if col.dtype == object else col)


SHOWN = 50  # rows of a long list a notebook shows; the list itself stays in its table


def first_rows(query: str) -> str:
    """``query`` (one statement, in its own order) cut to its first ``SHOWN`` rows, each with
    ``of``: how many rows the whole list has. The server counts; only what is shown is sent."""
    return f"select q.*, count(*) over () as of from ({query.rstrip().rstrip(';')}) q limit {SHOWN}"


def shown(rows: pd.DataFrame, what: str) -> pd.DataFrame:
    """Print how many ``what`` there are (and that only the first are below), and return the rows
    without their ``of`` column (``first_rows``)."""
    total = int(rows["of"].iloc[0]) if len(rows) else 0
    print(f"{total} {what}" + (f", the first {len(rows)} below" if total > len(rows) else ""))
    return rows.drop(columns="of")


def chart_label(text: str, fallback: str) -> str:
    """A chart label the chart's font can draw: the text itself, its Latin letters, or ``fallback``
    (a label with a glyph the font lacks prints a warning and a box instead of the character)."""
    import unicodedata

    from matplotlib import font_manager, ft2font, rcParams

    font = ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"])))
    drawable = font.get_charmap()
    if all(ord(ch) in drawable for ch in text):
        return text
    latin = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().strip()
    return latin if latin and all(ord(ch) in drawable for ch in latin) else fallback


def start(step: str, namespace: dict[str, Any]) -> Step:
    """Open a step from the notebook's parameters (taken from its globals)."""
    readable_tables()
    values = {k: namespace[k] for k in PARAM_NAMES if k in namespace}
    return Step(step, str(namespace.get("run_id") or ""), RunParams.from_mapping(values))


def check(ok: bool, what: str, offending: pd.DataFrame | None = None, *, show: int = 10) -> None:
    """Stop the run when ``ok`` is false: raise CheckFailed naming the check and the first rows at fault."""
    if "step" in _current:
        _current["step"].going_on()
    if ok:
        return
    if offending is not None and len(offending):
        lines = [" | ".join(str(v) for v in row)[:500] for row in offending.head(show).itertuples(index=False)]
        more = f" (first {show} of {len(offending)})" if len(offending) > show else ""
        what = f"{what}{more}:\n  " + "\n  ".join(lines)
    raise CheckFailed(what=what)


def leave() -> None:
    """End this kernel's step before the next notebook of the run runs in it (``run/kernel.py``):
    the step's sessions closed (its own, ``%sql``'s) and its lock watcher stopped; the namespace,
    the history and the cell count new; the per-process memories of a step (failpoints reached,
    backup hashes) forgotten. As in a kernel of its own, except that imports stay."""
    from IPython import get_ipython

    step = _current.pop("step", None)
    _current.pop("cell", None)
    if step is not None:
        step.close()
    ipysql.disconnect()
    failpoint.forget()
    gates.forget()
    import sys

    if "matplotlib.pyplot" in sys.modules:  # the step drew charts: their figures go with it
        sys.modules["matplotlib.pyplot"].close("all")
    ip = get_ipython()
    if ip is not None:
        ip.custom_exceptions = ()  # a fresh kernel shows every failure as it comes until start()
        ip.reset(new_session=True)
