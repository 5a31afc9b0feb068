"""Preflight names each kind of drift from the expected schema as a NO-GO, and changes nothing."""

from __future__ import annotations

import hashlib

import pytest

from kbmigrate import db
from kbmigrate.checks import preflight
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import SQL_DIR
from kbmigrate.engine.steps import apply_step

from conftest import drop, new_demo, gated
from test_runbook import assert_untouched, checksums

DRIFT = [
    ("kb without created_by", "alter table knowledge_base drop column created_by", RunParams(),
     "table public.knowledge_base", "created_by missing"),
    ("kb without metadata", "alter table knowledge_base drop column metadata", RunParams(),
     "table public.knowledge_base", "metadata missing"),
    ("metadata is json, not jsonb", "alter table knowledge_base alter column metadata type json using metadata::json",
     RunParams(), "table public.knowledge_base", "metadata is json"),
    ("KB under another name", "alter table knowledge_base rename to knowledge_base_content", RunParams(),
     "table public.knowledge_base", "found instead: knowledge_base_content"),
    ("sections with other columns", "create table knowledge_base_sections (id uuid primary key, workspace_id uuid, "
     "title text, sort integer)", RunParams(), "table public.knowledge_base_sections", "name missing"),
    ("membership table missing", "alter table workspace_members rename to members_old", RunParams(),
     "membership table public.workspace_members", "table missing"),
    ("membership column missing", "select 1", RunParams(membership_joined_column="created_at"),
     "membership table public.workspace_members", "created_at missing"),
    ("an updated_at trigger", "create function touch() returns trigger language plpgsql as $$ begin "
     "new.updated_at = now(); return new; end $$; create trigger kb_touch before update on knowledge_base "
     "for each row execute function touch()", RunParams(), "update triggers on knowledge_base", "kb_touch fire on UPDATE"),
    ("workspace_id of another type", "alter table knowledge_base alter column workspace_id type text", RunParams(),
     "knowledge_base new columns", "workspace_id is text"),
]


@pytest.mark.parametrize("case, ddl, params, check, detail", DRIFT, ids=[d[0] for d in DRIFT])
def test_drift_is_a_no_go(server: Target, case: str, ddl: str, params: RunParams, check: str, detail: str) -> None:
    target = new_demo(server, "kbt_drift")
    try:
        with db.connect(target, autocommit=True) as conn:
            conn.execute(ddl)
        before = checksums(target)
        with db.connect(target) as conn:
            rows = preflight.checks(conn, target, params)
        row = next(r for r in rows if r["check"] == check)
        assert row["status"] == "NO-GO" and detail in row["detail"], row
        assert not preflight.go(rows)
        assert_untouched(target, before)
    finally:
        drop(server, target)


def test_a_deploy_file_edited_after_it_was_applied_is_a_no_go_until_accepted(server: Target) -> None:
    target = new_demo(server, "kbt_edited")
    try:
        gated(target, "first")
        with db.connect(target, autocommit=True) as conn:
            apply_step(conn, "02_schema", RunParams(), "first", progress=False)
            now = hashlib.sha256((SQL_DIR / "deploy/kb_columns.sql").read_bytes()).hexdigest()
            # the ledger remembers other SQL than the file holds now: the file was edited since
            conn.execute("update kbmigrate.ledger set sql_sha256 = %s where change = 'kb_columns' and outcome = 'applied'",
                         ("0" * 64,))

            def row(params: RunParams) -> dict[str, str]:
                return next(r for r in preflight.checks(conn, target, params) if r["check"] == "ledger and the SQL files")

            refused = row(RunParams())
            assert refused["status"] == "NO-GO" and "kb_columns" in refused["detail"]
            assert "0" * 64 in refused["detail"] and now in refused["detail"]
            assert row(RunParams(accept_changed_sql=True))["status"] == "GO"
            gated(target, "second", RunParams(accept_changed_sql=True), backup_of="first")
            apply_step(conn, "02_schema", RunParams(accept_changed_sql=True), "second", progress=False)
            accepted = db.rows(conn, "select outcome, detail from kbmigrate.ledger where run_id = 'second' and change = 'kb_columns'")
            assert accepted[0]["outcome"] == "noop"
            assert accepted[0]["detail"]["accepted_sql_change"] == {"applied_with": "0" * 64, "file_now": now}
            assert row(RunParams())["status"] == "GO"  # accepted once, recorded: no longer a difference
    finally:
        drop(server, target)
