"""Preflight names each kind of drift from the expected schema as a NO-GO, and changes nothing."""

from __future__ import annotations

import pytest

from kbmigrate import db, preflight
from kbmigrate.conninfo import Target
from kbmigrate.params import RunParams

from conftest import drop, new_demo
from test_runbook import checksums

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
        assert checksums(target) == before
        with db.connect(target) as conn:
            assert db.scalar(conn, "select to_regnamespace('kbmigrate') is null")
    finally:
        drop(server, target)
