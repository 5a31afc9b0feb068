"""NO-GO before anything changes, for two things the real Supabase layout showed: a transaction-mode
pooler between kbmigrate and the server, and the auth.uid() of older projects that ignores the
claims the API sets today. Both on a database with Supabase's layout, as its postgres."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kbmigrate import db
from kbmigrate.checks import pooler, preflight
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT

import supabase_server
from conftest import drop, new_demo, run_cli
from test_runbook import assert_untouched, checksums


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo(server: Target) -> Iterator[Target]:
    target = new_demo(server, "kbt_nogo")
    yield target
    drop(server, target)


@contextmanager
def pgbouncer(demo: Target, mode: str) -> Iterator[Target]:
    """PgBouncer in front of the test server, in ``mode`` (transaction: as Supabase's pooler on
    port 6543; session: as on its port 5432). As root it runs as nobody, from a folder nobody can read."""
    exe = shutil.which("pgbouncer")
    if exe is None:
        pytest.skip("pgbouncer is not installed (.ci/run installs it: apt install pgbouncer)")
    folder = Path(tempfile.mkdtemp(prefix="kbt-pgbouncer-"))
    folder.chmod(0o755)
    port, p = _free_port(), demo.params
    password = supabase_server.PASSWORDS[supabase_server.APP_USER]
    (folder / "userlist.txt").write_text(f'"{supabase_server.APP_USER}" "{password}"\n')
    (folder / "pgbouncer.ini").write_text(f"""[databases]
* = host={p['host']} port={p['port']}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {folder}/userlist.txt
pool_mode = {mode}
default_pool_size = 4
ignore_startup_parameters = extra_float_digits, options
""")
    for f in folder.iterdir():
        f.chmod(0o644)
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    log = (folder / "pgbouncer.log").open("w")
    proc = subprocess.Popen([exe, *as_user, str(folder / "pgbouncer.ini")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"pgbouncer did not start: {(folder / 'pgbouncer.log').read_text()}")
    yield Target(f"host=127.0.0.1 port={port} user={p['user']} dbname={p['dbname']}", "dsn")
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_a_direct_connection_is_a_session_of_its_own(demo: Target) -> None:
    ok, detail = pooler.own_session(demo)
    assert ok, detail


@pytest.fixture(scope="module")
def transaction_pooler(demo: Target) -> Iterator[Target]:
    with pgbouncer(demo, "transaction") as target:
        yield target


def test_a_session_mode_pooler_is_a_session(demo: Target) -> None:
    with pgbouncer(demo, "session") as target:
        ok, detail = pooler.own_session(target)
    assert ok, detail


def test_a_transaction_mode_pooler_is_a_no_go_before_anything_changes(demo: Target, transaction_pooler: Target) -> None:
    ok, detail = pooler.own_session(transaction_pooler)
    assert not ok and "transaction-mode pooler" in detail and "session mode" in detail
    before = checksums(demo)
    done = run_cli("run", "--dsn", transaction_pooler.conninfo, "--no-progress", "--run-id", f"t-pool-{uuid.uuid4().hex[:6]}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("kbmigrate: NO-GO on ") and "transaction-mode pooler" in done.stderr, done.stderr
    assert_untouched(demo, before)


def test_an_auth_uid_that_ignores_the_apis_claims_is_a_no_go(server: Target) -> None:
    target = new_demo(server, "kbt_olduid", auth_uid="claim_sub_only")
    try:
        with db.connect(target) as conn:
            rows = {r["check"]: r for r in preflight.checks(conn, target, RunParams())}
        row = rows["auth.uid() and the API's claims"]
        assert row["status"] == "NO-GO" and "request.jwt.claim.sub" in row["detail"], row
        before = checksums(target)
        done = run_cli("run", "--dsn", target.conninfo, "--no-progress", "--run-id", f"t-uid-{uuid.uuid4().hex[:6]}")
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "preflight says NO-GO" in done.stderr and "auth.uid()" in done.stderr, done.stderr
        assert_untouched(target, before)
    finally:
        drop(server, target)


def test_the_current_auth_uid_passes(demo: Target) -> None:
    with db.connect(demo) as conn:
        ok, detail = preflight.auth_uid_reads_claims(conn)
    assert ok, detail


def test_no_client_of_the_servers_version_is_a_no_go_naming_what_to_install(demo: Target) -> None:
    """Where no pg_dump/pg_restore of the server's major is installed (PostgreSQL 17 on Debian,
    whose archive has none, unless KBMIGRATE_PG_BINDIR names some), preflight says NO-GO and
    names the programs and how to install them, before anything changes."""
    with db.connect(demo) as conn:
        major = int(db.scalar(conn, "show server_version_num")) // 10000
    env = {k: v for k, v in os.environ.items() if k != "KBMIGRATE_PG_BINDIR"}
    saved = os.environ.pop("KBMIGRATE_PG_BINDIR", None)
    try:
        from kbmigrate.checks import clients
        elsewhere = [p for p in clients.candidates("pg_dump") if clients.major_of(str(p)) == major]
    finally:
        if saved is not None:
            os.environ["KBMIGRATE_PG_BINDIR"] = saved
    if elsewhere:
        pytest.skip(f"PostgreSQL {major}'s pg_dump is installed here ({elsewhere[0]}); the CI leg on 17 "
                    "has its clients only through KBMIGRATE_PG_BINDIR")
    before = checksums(demo)
    done = subprocess.run([str(Path(sys.executable).parent / "kbmigrate"), "run", "--dsn", demo.conninfo,
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    for words in ("NO-GO", f"No pg_dump of PostgreSQL {major}", f"postgresql-client-{major}",
                  f"postgresql@{major}", "KBMIGRATE_PG_BINDIR"):
        assert words in done.stdout + done.stderr, (words, done.stdout[-1500:], done.stderr)
    assert_untouched(demo, before)
