"""No password in any file a run writes; bad input gets a few clear lines, exit != 0, and the
database unchanged."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from psycopg import sql

from kbmigrate import db, runner
from kbmigrate.backup import BACKUP_ROOT
from kbmigrate.conninfo import Target
from kbmigrate.embedded import EmbeddedServer
from kbmigrate.paths import STATE_DIR

from conftest import drop, new_demo, run_cli
from test_runbook import checksums

SECRET = "Kb-S3cret-" + uuid.uuid4().hex[:10]
ROLE = "kbt_secret_user"


@pytest.fixture(scope="module")
def password_server(server: Target) -> Target:
    """The test server, made to require a password (scram) for ROLE over TCP."""
    if server.source != "embedded":
        pytest.skip("needs the embedded test server, whose pg_hba.conf the test can edit")
    hba = EmbeddedServer(STATE_DIR / "test-server").pgdata / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + original)
    with db.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(ROLE)))
        admin.execute(sql.SQL("create role {} login superuser password {}").format(sql.Identifier(ROLE), sql.Literal(SECRET)))
        admin.execute("select pg_reload_conf()")
    yield server
    hba.write_text(original)
    with db.connect(server, autocommit=True) as admin:
        admin.execute("select pg_reload_conf()")
        admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(ROLE)))


def _as_role(target: Target, password: str | None) -> str:
    p = target.params
    dsn = f"host={p['host']} port={p['port']} dbname={p['dbname']} user={ROLE}"
    return dsn + (f" password={password}" if password else "")


def test_no_password_lands_anywhere(server: Target, password_server: Target) -> None:
    target = new_demo(server, "kbt_secret")
    try:
        no_pw = run_cli("run", "--dsn", _as_role(target, None), "--only", "00", "--no-progress", env={"PGPASSWORD": ""})
        assert no_pw.returncode != 0 and "refused the login" in no_pw.stderr  # the server does require it
        run_id = f"t-secret-{uuid.uuid4().hex[:6]}"
        done = run_cli("run", "--dsn", _as_role(target, SECRET), "--run-id", run_id, "--no-progress",
                       env={"PGPASSWORD": SECRET})
        assert done.returncode == 0, done.stderr
        written = [p for folder in (runner.RUNS_DIR / run_id, BACKUP_ROOT / run_id) for p in folder.rglob("*") if p.is_file()]
        assert len(written) >= 9  # 7 notebooks, the manifest, the dump, ...
        for path in written:
            assert SECRET.encode() not in path.read_bytes(), f"the password is in {path}"
        assert SECRET not in done.stdout + done.stderr
        html = subprocess.run([str(Path(os.sys.executable).parent / "jupyter"), "nbconvert", "--to", "html", "--stdout",
                               str(runner.RUNS_DIR / run_id / "01_backup.ipynb")], capture_output=True, text=True)
        assert html.returncode == 0 and SECRET not in html.stdout
    finally:
        drop(server, target)


def test_an_artifact_holding_a_secret_is_refused(tmp_path: Path) -> None:
    leaky = tmp_path / "x.ipynb"
    leaky.write_text(f'{{"outputs": "{SECRET}"}}')
    with pytest.raises(runner.SecretInArtifact):
        runner.scan_for_secrets(leaky, frozenset({SECRET}))
    assert not leaky.exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_SECTIONS = "name;description\nICP;only two columns, wrong separator\n"


@pytest.mark.parametrize("case, args, expect", [
    ("unreachable host", ["--dsn", "host=127.0.0.1 port={closed} user=x dbname=y"], "Cannot connect"),
    ("wrong password", ["--dsn", "{role_wrong}"], "refused the login"),
    ("missing database", ["--dsn", "{missing_db}"], "does not exist"),
    ("missing membership table", ["-p", "membership_table=public.no_such_members"], "membership table public.no_such_members"),
    ("unknown parameter", ["-p", "colour=blue"], "colour"),
    ("invalid batch size", ["-p", "batch_size=-5"], "batch_size"),
    ("batch size not a number", ["-p", "batch_size=lots"], "not a whole number"),
    ("unknown backfill strategy", ["-p", "backfill_strategy=newest_first"], "backfill_strategy"),
    ("malformed sections file", ["-p", "sections_file={bad_sections}"], "sections_file"),
    ("run id that already exists", ["--run-id", "{existing}"], "already exists"),
    ("unknown step", ["--only", "99_party"], "is not one of"),
])
def test_bad_input(case: str, args: list[str], expect: str, small_demo: Target, password_server: Target,
                   tmp_path: Path) -> None:
    bad_sections = tmp_path / "sections.csv"
    bad_sections.write_text(BAD_SECTIONS)
    existing = f"t-exists-{uuid.uuid4().hex[:6]}"
    (runner.RUNS_DIR / existing).mkdir(parents=True)
    values = {"closed": _closed_port(), "role_wrong": _as_role(small_demo, "not-" + SECRET),
              "missing_db": small_demo.with_database("kbt_no_such_db").conninfo, "bad_sections": bad_sections,
              "existing": existing}
    argv = [a.format(**values) for a in args]
    if "--dsn" not in argv:
        argv = ["--dsn", small_demo.conninfo, *argv]
    before = checksums(small_demo)
    done = run_cli("run", *argv, "--no-progress", env={"PGPASSWORD": "", "PGCONNECT_TIMEOUT": "3"})
    assert done.returncode != 0, case
    assert "Traceback" not in done.stderr and expect in done.stderr, (case, done.stderr)
    assert len([ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("▶")]) <= 8, done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert checksums(small_demo) == before
    with db.connect(small_demo) as conn:
        assert db.scalar(conn, "select to_regnamespace('kbmigrate') is null")


def test_no_room_for_the_backup(small_demo: Target, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here to stand for a full disk")
    try:
        before = checksums(small_demo)
        done = run_cli("run", "--dsn", small_demo.conninfo, "--no-progress", env={"KBMIGRATE_BACKUPS_DIR": str(tiny)})
        assert done.returncode != 0 and "disk room for the backup" in done.stderr and "NO-GO" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert checksums(small_demo) == before
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)
