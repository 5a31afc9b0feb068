"""The safety gates live in the library (issue 20), shown on real databases as Supabase's postgres:

- a changing step refuses to start without its run's GO and proven backup of *this* database,
  whatever the notebook or the command line skipped: ``--only 02``, a GO of another database, a
  backup whose drill failed or never ran, a dump changed since, a backup of a migration begun;
- verify scripts fail by raising, whatever ``plpgsql.check_asserts`` the database carries;
- settings a database or role can carry that change what the migration does are a NO-GO;
- bounds cannot be lifted from the command line;
- the rollback counts the application's writes under its own locks, inside its transaction.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from kbmigrate import db
from kbmigrate.backup import drill, dump, restore
from kbmigrate.checks import preflight
from kbmigrate.conninfo import Target
from kbmigrate.engine import apply, gates
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import load
from kbmigrate.engine.steps import apply_step
from kbmigrate.errors import BadParameter, GateClosed, NoGo, RollbackRefused
from kbmigrate.paths import SQL_DIR, from_evidence

from conftest import drop, gated, new_demo, run_cli

PARAMS = RunParams()


def untouched(target: Target) -> bool:
    """Nothing of the migration is there: no tool schema, no new column, RLS off."""
    with db.connect(target) as conn:
        return bool(db.scalar(conn, """select to_regnamespace('kbmigrate') is null
            and not exists (select 1 from pg_attribute where attrelid = 'public.knowledge_base'::regclass
                            and attname = 'is_shared' and not attisdropped)
            and not (select relrowsecurity from pg_class where oid = 'public.knowledge_base'::regclass)"""))


def refused(target: Target, run_id: str, step: str = "02_schema") -> str:
    with db.connect(target, autocommit=True) as conn, pytest.raises(GateClosed) as exc:
        apply_step(conn, step, PARAMS, run_id, progress=False)
    return exc.value.message


def test_only_02_on_an_unmigrated_database_is_refused_and_nothing_changes(server: Target) -> None:
    target = new_demo(server, "kbt_gate_only")
    try:
        for only in (["02"], ["00", "02"], ["01", "02"]):
            done = run_cli("run", "--dsn", target.conninfo, "--only", *only, "--no-progress")
            assert done.returncode == 2 and "would change the database without" in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        # the engine itself, as a notebook cell of 02 run before 00 and 01 calls it (a hand-stepped run)
        assert "preflight (00_preflight) has not run in it" in refused(target, "manual-20261202-dba")
        assert untouched(target)
    finally:
        drop(server, target)


def test_a_go_of_another_database_or_an_unproven_backup_keeps_the_gate_closed(server: Target) -> None:
    here, there = new_demo(server, "kbt_gate_here"), new_demo(server, "kbt_gate_there")
    try:
        with db.connect(there, autocommit=True) as conn:
            assert preflight.go(preflight.verdict(conn, there, PARAMS, "elsewhere"))
        message = refused(here, "elsewhere")
        assert "its GO is for kbt_gate_there" in message and "not kbt_gate_here" in message, message

        with db.connect(here, autocommit=True) as conn:
            assert preflight.go(preflight.verdict(conn, here, PARAMS, "unproven"))
        assert "holds no backup" in refused(here, "unproven")
        info = dump.dump(here, "unproven", PARAMS)
        assert "restore drill never ran" in refused(here, "unproven")
        wrong = {**info, "checksums": {**info["checksums"], "public.knowledge_base": {"rows": 0, "checksum": "x"}}}
        assert not drill.run(wrong, "unproven")["ok"]  # a real drill, against figures it cannot match
        assert "restore drill failed" in refused(here, "unproven")
        assert untouched(here) and untouched(there)
    finally:
        drop(server, here)
        drop(server, there)


def test_a_changed_dump_or_a_backup_of_a_migration_begun_keeps_the_gate_closed(server: Target) -> None:
    target = new_demo(server, "kbt_gate_begun")
    try:
        taken = gated(target, "first")
        archive = from_evidence(taken["path"])
        original = archive.read_bytes()
        archive.write_bytes(original + b"\0")
        assert "no longer has the sha256 recorded" in refused(target, "first")
        archive.write_bytes(original)
        with db.connect(target, autocommit=True) as conn:
            apply_step(conn, "02_schema", PARAMS, "first", progress=False)

        # a new run with a backup of its own, now: its preflight says NO-GO, naming the way on
        with pytest.raises(NoGo) as exc:
            gated(target, "late")
        assert "begun by run first" in exc.value.message and "--backup-of first" in exc.value.message
        assert "its preflight said NO-GO" in refused(target, "late", "03_backfill")
        # relying on that late backup: it holds a half-migrated database
        late = dump.dump(target, "late", PARAMS)
        assert late["changed_before"]["run_id"] == "first"
        drill.run(late, "late")
        gated(target, "later", backup_of="late")
        assert "taken after the migration had begun" in refused(target, "later", "03_backfill")
        # relying on the backup from before the first change: it goes on
        gated(target, "on", backup_of="first")
        with db.connect(target, autocommit=True) as conn:
            done = apply_step(conn, "03_backfill", PARAMS, "on", progress=False)
        assert done and done[0].outcome == "applied"
    finally:
        drop(server, target)


def test_verify_scripts_fail_by_raising_whatever_check_asserts_says(server: Target, admin: Target) -> None:
    target = new_demo(server, "kbt_gate_asserts")
    try:
        with db.connect(admin.with_database(target.params["dbname"]), autocommit=True) as conn:
            conn.execute(sql.SQL("alter database {} set plpgsql.check_asserts = off").format(
                sql.Identifier(target.params["dbname"])))
        with db.connect(target, autocommit=True) as conn:
            assert db.scalar(conn, "show plpgsql.check_asserts") == "off"
            conn.execute("do $$ begin assert false, 'an ASSERT'; end $$")  # in force: an ASSERT no longer fails
            for change in load(PARAMS):  # nothing is applied yet: every verify must say so
                settings = {**PARAMS.settings("v"), **change.settings()}
                ok, why = apply.verify_passes(conn, change, PARAMS, settings)
                assert not ok, f"{change.name}: its verify passed on an unmigrated database"
    finally:
        drop(server, target)


def test_no_verify_or_revert_script_relies_on_assert() -> None:
    uses = [str(p.relative_to(SQL_DIR)) for p in [*SQL_DIR.glob("verify/*.sql"), *SQL_DIR.glob("revert/*.sql")]
            if re.search(r"^\s*assert\b", p.read_text(), re.IGNORECASE | re.MULTILINE)]
    assert not uses, f"these fail only while plpgsql.check_asserts is on: {uses}"


@pytest.mark.parametrize("setting, value, check", [
    ("session_replication_role", "replica", "setting session_replication_role"),
    ("default_transaction_read_only", "on", "setting default_transaction_read_only"),
    ("search_path", "extensions", "setting search_path"),
    ("search_path", "extensions, public", "setting search_path"),
])
def test_a_setting_that_changes_what_the_migration_does_is_a_no_go(server: Target, admin: Target, setting: str,
                                                                   value: str, check: str) -> None:
    target = new_demo(server, "kbt_gate_setting")
    try:
        with db.connect(target, autocommit=True) as conn:
            before = {r["check"]: r["status"] for r in preflight.checks(conn, target, PARAMS)}
        assert before[check] == "GO"
        name = target.params["dbname"]
        # at the database level; search_path for the role in this database, since Supabase's postgres carries
        # a search_path of its own, which overrides the database's
        scope = sql.SQL("role {} in database {}" if setting == "search_path" else "database {1}").format(
            sql.Identifier(target.params["user"]), sql.Identifier(name))
        with db.connect(admin.with_database(name), autocommit=True) as conn:
            conn.execute(sql.SQL("alter {} set {} = {}").format(
                scope, sql.Identifier(setting), sql.SQL(", ").join(sql.Literal(v.strip()) for v in value.split(","))))
        with db.connect(target, autocommit=True) as conn:
            rows = preflight.checks(conn, target, PARAMS)
        row = next(r for r in rows if r["check"] == check)
        assert row["status"] == "NO-GO" and value.split(",")[0] in row["detail"], row
        assert not preflight.go(rows)
    finally:
        drop(server, target)


@pytest.mark.parametrize("name", ["lock_timeout", "statement_timeout", "read_timeout", "index_timeout",
                                  "backup_timeout", "batch_target"])
def test_a_bound_cannot_be_lifted(name: str) -> None:
    for value in ("0", "0ms", "0s", "0min"):
        with pytest.raises(BadParameter) as exc:
            RunParams(**{name: value}).validate()
        assert name in exc.value.message and "lift the bound" in exc.value.message
    RunParams(**{name: "1s"}).validate()


def test_negative_retries_and_a_zero_timeout_are_refused_in_one_line() -> None:
    for pair, name in (("lock_retries=-1", "lock_retries"), ("lock_timeout=0", "lock_timeout"),
                       ("statement_timeout=0", "statement_timeout")):
        done = run_cli("run", "--dsn", "host=127.0.0.1 port=1 dbname=x", "-p", pair)
        assert done.returncode == 2 and name in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def _write(target: Target, title: str) -> None:
    with db.connect(target, autocommit=True) as conn:
        conn.execute("set role service_role")
        conn.execute("insert into knowledge_base (title, content) values (%s, 'x')", (title,))


def test_the_rollback_counts_writes_under_its_own_locks(server: Target) -> None:
    target = new_demo(server, "kbt_gate_rollback")
    try:
        gated(target, "rb-of")
        with db.connect(target, autocommit=True) as conn:
            apply_step(conn, "02_schema", PARAMS, "rb-of", progress=False)
        record: dict[str, Any] = {"parameters": PARAMS.as_dict(), "backup": gates.backup_for("rb-of")[1]}
        with db.connect(target, autocommit=True) as conn:
            assert restore.lost_writes(restore.app_writes(conn, record)) == 0  # the notebook's check: nothing yet
        _write(target, "written after the check")  # ... and then the application writes
        with pytest.raises(RollbackRefused) as exc:
            restore.restore(target, "rb-of", record, PARAMS, "rb-1")
        assert "wrote 1 rows" in exc.value.message and "under the restore's locks" in exc.value.message
        with db.connect(target) as conn:  # refused before anything: the write and the migration are still there
            assert db.scalar(conn, "select count(*) from knowledge_base where title = 'written after the check'") == 1
            assert db.scalar(conn, "select to_regnamespace('kb_private') is not null")
        done = restore.restore(target, "rb-of", record, PARAMS, "rb-2", accept_loss=True)
        assert done["lost_rows_accepted"] == 1
        assert restored_to_the_backup(target)
    finally:
        drop(server, target)


def restored_to_the_backup(target: Target) -> bool:
    """The migration's column is gone and so is the write the rollback accepted to lose."""
    with db.connect(target) as conn:
        return bool(db.scalar(conn, """select not exists (select 1 from pg_attribute where attrelid =
            'public.knowledge_base'::regclass and attname = 'is_shared' and not attisdropped)
            and not exists (select 1 from knowledge_base where title = 'written after the check')"""))


def test_the_rollback_refuses_a_backup_whose_drill_did_not_pass(server: Target) -> None:
    target = new_demo(server, "kbt_gate_rb_drill")
    try:
        with db.connect(target, autocommit=True) as conn:
            preflight.verdict(conn, target, PARAMS, "undrilled")
        dump.dump(target, "undrilled", PARAMS)
        Path(gates.path("undrilled")).parent.joinpath("manifest.json").write_text('{"parameters": {}}')
        with pytest.raises(RollbackRefused) as exc:
            restore.load("undrilled")
        assert "restore drill never ran" in exc.value.message
        with pytest.raises(RollbackRefused) as exc:
            restore.restore(target, "undrilled", {"parameters": {}}, PARAMS, "rb-undrilled")
        assert "restore drill never ran" in exc.value.message
    finally:
        drop(server, target)
