"""Naming a target: --dsn, libpq environment, service file; and no password in any message."""

from __future__ import annotations

import socket

import pytest

from kbmigrate import db
from kbmigrate.conninfo import Target, redact, resolve
from kbmigrate.errors import BadParameter, DatabaseMissing, ServerUnreachable

from conftest import run_cli

SECRET = "s3cr3t-Pa55"


def uri(host: str, port: int | str, db: str = "app", user: str = "bob") -> str:
    """A postgresql:// URI carrying the test password (built, so no literal credential sits in the source)."""
    return "postgresql://" + user + ":" + SECRET + "@" + f"{host}:{port}/{db}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redact_removes_passwords() -> None:
    assert SECRET not in redact(uri("db.example", 5432))
    assert SECRET not in redact(f"host=h password={SECRET} user=bob")
    assert SECRET not in redact(f"host=h password='{SECRET} x' user=bob")
    assert redact(f"error near {SECRET}!", {SECRET}) == "error near ***!"


def test_label_has_no_password() -> None:
    target = resolve(uri("db.example", 6543))
    assert target.label == "bob@db.example:6543/app"
    assert SECRET in target.secrets


def test_bad_dsn_is_refused() -> None:
    with pytest.raises(BadParameter):
        resolve("this is = not a 'dsn")
    with pytest.raises(BadParameter):
        resolve("host=x", embedded=True)


def test_libpq_environment(server: Target, fresh_db: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    p = fresh_db.params
    for var, key in (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGDATABASE", "dbname")):
        monkeypatch.setenv(var, p[key])
    target = resolve()
    assert target.source == "libpq" and target.conninfo == ""
    with db.connect(target) as conn:
        assert db.scalar(conn, "select current_database()") == p["dbname"]


def test_service_file(fresh_db: Target, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = fresh_db.params
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[kbtest]\nhost={p['host']}\nport={p['port']}\nuser={p['user']}\ndbname={p['dbname']}\n")
    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGSERVICE", "kbtest")
    target = resolve()
    assert target.label.startswith("service kbtest") or "kbtest" in target.label
    with db.connect(target) as conn:
        assert db.scalar(conn, "select current_database()") == p["dbname"]


def test_unreachable_and_missing_database(server: Target) -> None:
    with pytest.raises(ServerUnreachable) as exc:
        db.connect(resolve(uri("127.0.0.1", _closed_port())), connect_timeout=3)
    assert SECRET not in exc.value.message and "refused" in exc.value.message.lower()
    with pytest.raises(DatabaseMissing):
        db.connect(server.with_database("kbt_there_is_no_such_db"))


def test_cli_error_is_one_clean_line() -> None:
    done = run_cli("demo-db", "--dsn", uri("127.0.0.1", _closed_port()), "--no-progress",
                   env={"PGPASSWORD": SECRET, "PGCONNECT_TIMEOUT": "3"})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kbmigrate: Cannot connect to bob@127.0.0.1:")


def test_libpq_settings_reach_the_kernels_and_pg_dump_untouched(small_demo: Target) -> None:
    """sslmode in the DSN wins over PGSSLMODE in the environment, in this process, in every
    notebook kernel and in pg_dump alike: the test server has no SSL, so any of them still
    following PGSSLMODE=require would fail."""
    plain = f"{small_demo.conninfo} sslmode=disable"
    done = run_cli("run", "--dsn", plain, "--only", "00", "01", "--no-progress", env={"PGSSLMODE": "require"})
    assert done.returncode == 0, done.stderr
    refused = run_cli("run", "--dsn", f"{small_demo.conninfo} sslmode=require", "--only", "00", "--no-progress")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "SSL" in refused.stderr and refused.stderr.startswith("kbmigrate: Cannot connect"), refused.stderr
