"""No password in any file a run writes; bad input gets a few clear lines, exit != 0, and the
database unchanged."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from kbmigrate.run import runner
from kbmigrate.paths import BACKUP_ROOT
from kbmigrate.conninfo import Target

import supabase_server
from conftest import drop, new_demo, run_cli
from test_runbook import assert_untouched, checksums


@pytest.fixture(scope="module")
def secret(server: Target) -> str:
    """The password of the postgres login (the suite's pgpass file holds it)."""
    return supabase_server.PASSWORDS[supabase_server.APP_USER]


def _with_password(target: Target, password: str) -> str:
    p = target.params
    return f"host={p['host']} port={p['port']} dbname={p['dbname']} user={p['user']} password={password}"


def test_no_password_lands_anywhere(server: Target, secret: str, tmp_path: Path) -> None:
    target = new_demo(server, "kbt_secret")
    empty = tmp_path / "empty.pgpass"
    empty.write_text("")
    empty.chmod(0o600)
    try:
        no_pw = run_cli("run", "--dsn", target.conninfo, "--only", "00", "--no-progress",
                        env={"PGPASSFILE": str(empty), "PGPASSWORD": ""})
        assert no_pw.returncode != 0 and "refused the login" in no_pw.stderr  # the server does require it
        run_id = f"t-secret-{uuid.uuid4().hex[:6]}"
        done = run_cli("run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                       env={"PGPASSFILE": str(empty), "PGPASSWORD": secret})
        assert done.returncode == 0, done.stderr
        written = [p for folder in (runner.RUNS_DIR / run_id, BACKUP_ROOT / run_id) for p in folder.rglob("*") if p.is_file()]
        assert len(written) >= 9  # 7 notebooks, the manifest, the dump, ...
        for path in written:
            assert secret.encode() not in path.read_bytes(), f"the password is in {path}"
        assert secret not in done.stdout + done.stderr
        html = subprocess.run([str(Path(os.sys.executable).parent / "jupyter"), "nbconvert", "--to", "html", "--stdout",
                               str(runner.RUNS_DIR / run_id / "01_backup.ipynb")], capture_output=True, text=True)
        assert html.returncode == 0 and secret not in html.stdout
    finally:
        drop(server, target)


def test_an_artifact_holding_a_secret_is_refused(tmp_path: Path, secret: str) -> None:
    leaky = tmp_path / "x.ipynb"
    leaky.write_text(f'{{"outputs": "{secret}"}}')
    with pytest.raises(runner.SecretInArtifact):
        runner.scan_for_secrets(leaky, frozenset({secret}))
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
    ("a parameter misspelt", ["-p", "batchsize=2000"], "no parameter 'batchsize'; did you mean batch_size?"),
    ("invalid batch size", ["-p", "batch_size=-5"], "batch_size"),
    ("batch size not a number", ["-p", "batch_size=lots"], "not a whole number"),
    ("unknown backfill strategy", ["-p", "backfill_strategy=newest_first"], "backfill_strategy"),
    ("malformed sections file", ["-p", "sections_file={bad_sections}"], "sections_file"),
    ("run id that already exists", ["--run-id", "{existing}"], "already exists"),
    ("unknown step", ["--only", "99_party"], "is not one of"),
])
def test_bad_input(case: str, args: list[str], expect: str, small_demo: Target, secret: str,
                   tmp_path: Path) -> None:
    bad_sections = tmp_path / "sections.csv"
    bad_sections.write_text(BAD_SECTIONS)
    existing = f"t-exists-{uuid.uuid4().hex[:6]}"
    (runner.RUNS_DIR / existing).mkdir(parents=True)
    values = {"closed": _closed_port(), "role_wrong": _with_password(small_demo, "not-" + secret),
              "missing_db": small_demo.with_database("kbt_no_such_db").conninfo, "bad_sections": bad_sections,
              "existing": existing}
    argv = [a.format(**values) for a in args]
    if "--dsn" not in argv:
        argv = ["--dsn", small_demo.conninfo, *argv]
    before = checksums(small_demo)
    done = run_cli("run", *argv, "--no-progress", env={"PGCONNECT_TIMEOUT": "3"})
    assert done.returncode != 0, case
    assert "Traceback" not in done.stderr and expect in done.stderr, (case, done.stderr)
    assert len([ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("▶")]) <= 8, done.stderr
    assert secret not in done.stderr + done.stdout
    assert_untouched(small_demo, before)


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
