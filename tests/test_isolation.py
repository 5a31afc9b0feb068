"""Isolation proved by acting as users; a deliberately leaky policy is caught; preflight flags
lockouts and leaks; the lost-access list matches an independent computation."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from kbmigrate import db
from kbmigrate.checks import preflight, smoke
from kbmigrate.run import runner
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import read_sql
from kbmigrate.checks.rls import acting_as
from kbmigrate.engine.steps import apply_step

from conftest import drop, new_demo, gated
from oracle import fetch, readable_ids
from test_runbook import QUIET

PARAMS = RunParams()


@pytest.fixture(scope="module")
def migrated(server: Target) -> Any:
    target = new_demo(server, "kbt_iso")
    gated(target, "iso")
    with db.connect(target, autocommit=True) as conn:
        for step in ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy"):
            apply_step(conn, step, PARAMS, "iso", progress=False)
    yield target
    drop(server, target)


def test_isolation_matrix_on_the_small_demo(migrated: Target) -> None:
    with db.connect(migrated, autocommit=True) as conn:
        subjects = smoke.subjects(conn, PARAMS)
        workspaces_with_members = db.scalar(conn, "select count(distinct workspace_id) from workspace_members")
        matrix = smoke.matrix(conn, PARAMS, subjects)  # as the notebook does: many users per round trip
    labels = [s.label for s in subjects]
    assert sum(label.startswith("member of ") and "workspaces" not in label for label in labels) == workspaces_with_members
    assert any(label.endswith("workspaces") for label in labels)
    assert "signed in, no workspace" in labels and "anon" in labels
    # each subject's reads, acting as them with raw SQL, against the oracle's set from raw rows
    with db.connect(migrated, autocommit=True) as conn:
        entries = fetch(conn, "select id, workspace_id, is_shared from knowledge_base")
        members: dict[Any, set[Any]] = {}
        for m in fetch(conn, "select user_id, workspace_id from workspace_members"):
            members.setdefault(m["user_id"], set()).add(m["workspace_id"])
        for subject, row in zip(subjects, matrix):
            should = readable_ids(entries, members.get(subject.user_id, set()), subject.role)
            with conn.transaction(force_rollback=True):
                conn.execute("select set_config('request.jwt.claims', %s, true)",
                             (json.dumps({"role": subject.role, **({"sub": str(subject.user_id)} if subject.user_id else {})}),))
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(subject.role)))
                try:
                    seen = {r["id"] for r in fetch(conn, "select id from knowledge_base")}
                except psycopg.errors.InsufficientPrivilege:
                    seen = set()
            assert seen == should, f"{subject.label}: reads {len(seen)} entries, the SPEC allows {len(should)}"
            assert row["reads"] == row["expected"] == len(should), (subject.label, row)
            # the writes each subject tried: refused outside their workspaces, allowed inside
            observed = {k: row[k] for k in ("insert_other_refused", "insert_shared_refused", "update_other_0",
                                            "delete_other_0", "shared_readonly", "section_other_refused",
                                            "quarantine_hidden", "view_ok", "sections_ok", "shared_readable")}
            if subject.role == "authenticated" and members.get(subject.user_id):
                observed.update({k: row[k] for k in ("create_own", "edit_own", "move_out_refused")})
            assert all(v is True for v in observed.values()), (subject.label, observed)
            assert row["pass"] is True, row
    anon = next(r for r in matrix if r["role"] == "anon")
    assert anon["reads"] == 0
    loner = next(r for r in matrix if r["user"] == "signed in, no workspace")
    with db.connect(migrated) as conn:
        assert loner["reads"] == db.scalar(conn, "select count(*) from knowledge_base where is_shared") > 0


def test_a_leaky_policy_fails_the_smoke_tests(server: Target) -> None:
    target = new_demo(server, "kbt_leaky")
    try:
        gated(target, "leaky")  # migrated by the engine; the headless run of 06 below is what is tested
        with db.connect(target, autocommit=True) as conn:
            for step in ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy"):
                apply_step(conn, step, PARAMS, "leaky", progress=False)
        with db.connect(target, autocommit=True) as conn:
            victim = db.scalar(conn, "select id from workspaces where is_active order by id desc limit 1")
            # same name, still mentions is_shared and the helper: only the isolation matrix can tell
            conn.execute("drop policy kb_select on knowledge_base")
            conn.execute(sql.SQL("""create policy kb_select on knowledge_base for select to authenticated
                                    using (is_shared or workspace_id in (select kb_private.my_workspace_ids())
                                           or workspace_id = {}::uuid)""").format(sql.Literal(str(victim))))
            leaked = {r["id"] for r in db.rows(conn, "select id from knowledge_base where workspace_id = %s", (victim,))}
            outsider = db.scalar(conn, "select user_id from workspace_members group by user_id "
                                       "having not bool_or(workspace_id = %s) order by user_id limit 1", (victim,))
            probe = smoke.probe(conn, PARAMS, smoke.Subject("member elsewhere", outsider))
        assert probe["leaked"] and set(probe["leaked"]) <= leaked and not probe["pass"]
        with pytest.raises(runner.RunFailed) as exc:
            runner.run(target, PARAMS, only=["06"], run_id=f"t-{uuid.uuid4().hex[:8]}", **QUIET)
        message = exc.value.message
        assert "06_smoke_tests" in message and "RLS LEAK" in message
        assert any(str(i) in message for i in leaked)  # the offending rows are listed
    finally:
        drop(server, target)


def test_preflight_flags_lockout_and_leak(small_demo: Target) -> None:
    def rls_rows() -> list[dict[str, str]]:
        with db.connect(small_demo) as conn:
            return [r for r in preflight.checks(conn, small_demo, PARAMS) if r["check"] == "RLS on knowledge_base"]

    assert rls_rows()[0]["status"] == "INFO"
    with db.connect(small_demo, autocommit=True) as conn:
        conn.execute("alter table knowledge_base enable row level security")
    try:
        row = rls_rows()[0]
        assert row["status"] == "NO-GO" and "LOCKOUT" in row["detail"]
        with db.connect(small_demo, autocommit=True) as conn:
            conn.execute("alter table knowledge_base disable row level security")
            conn.execute("create policy everyone on knowledge_base for select to authenticated using (true)")
        row = rls_rows()[0]
        assert row["status"] == "NO-GO" and "LEAK" in row["detail"]
    finally:
        with db.connect(small_demo, autocommit=True) as conn:
            conn.execute("drop policy if exists everyone on knowledge_base")
            conn.execute("alter table knowledge_base disable row level security")


def test_lost_access_list_matches_an_independent_computation(migrated: Target) -> None:
    with db.connect(migrated) as conn:
        entries = fetch(conn, "select id, created_by, workspace_id, is_shared from knowledge_base")
        members = {(m["user_id"], m["workspace_id"]) for m in fetch(conn, "select user_id, workspace_id from workspace_members")}
        report = fetch(conn, read_sql("report/lost_own_entries.sql"))
    expected: dict[Any, int] = {}
    for e in entries:
        if e["created_by"] and not e["is_shared"] and (e["created_by"], e["workspace_id"]) not in members:
            expected[e["created_by"]] = expected.get(e["created_by"], 0) + 1
    assert {r["user_id"]: r["entries_lost"] for r in report} == expected and expected


def test_api_roles_cannot_execute_the_migrations_functions(migrated: Target) -> None:
    with db.connect(migrated, autocommit=True) as conn:
        rows = fetch(conn, read_sql("report/function_privileges.sql"))
        assert rows and not any(r["anon_can_execute"] for r in rows)
        assert [r["function"] for r in rows if r["authenticated_can_execute"]] == ["kb_private.my_workspace_ids()"]
        with conn.transaction(force_rollback=True):
            conn.execute("grant execute on function kbmigrate.legacy_text(jsonb) to anon")
            assert any(r["anon_can_execute"] for r in fetch(conn, read_sql("report/function_privileges.sql")))


def test_the_policies_work_without_the_tools_schema(server: Target) -> None:
    """The application's RLS reads the membership table itself: dropping the tool's kbmigrate
    schema (its ledger and bookkeeping) leaves every member seeing exactly their own."""
    target = new_demo(server, "kbt_nokbm")
    try:
        gated(target, "nokbm")
        with db.connect(target, autocommit=True) as conn:
            for step in ("02_schema", "03_backfill"):
                apply_step(conn, step, PARAMS, "nokbm", progress=False)
            members = fetch(conn, "select user_id, workspace_id from workspace_members")
            entries = fetch(conn, "select id, workspace_id, is_shared from knowledge_base")
            conn.execute("drop schema kbmigrate cascade")
            assert db.scalar(conn, "select count(*) from pg_policies where tablename = 'knowledge_base'") == 4
            users = sorted({m["user_id"] for m in members})[:10]
            own_seen = 0
            for user in users:
                mine = {m["workspace_id"] for m in members if m["user_id"] == user}
                expected = {e["id"] for e in entries if e["is_shared"] or e["workspace_id"] in mine}
                with acting_as(conn, user):
                    seen = {r["id"] for r in db.rows(conn, "select id from public.knowledge_base")}
                assert seen == expected, user
                own_seen += sum(1 for e in entries if e["id"] in seen and not e["is_shared"])
            assert own_seen > 0  # the members did see their workspaces' entries, not only the shared ones
    finally:
        drop(server, target)


@pytest.mark.parametrize("policy,check", [
    # shared rows made editable: every user must find the shared rows they try refusing the edit
    ("create policy kb_update on knowledge_base for update to authenticated "
     "using (is_shared or workspace_id in (select kb_private.my_workspace_ids())) with check (true)", "shared_readonly"),
    # quarantined rows (no workspace, not shared) made readable
    ("create policy kb_select on knowledge_base for select to authenticated "
     "using (is_shared or workspace_id is null or workspace_id in (select kb_private.my_workspace_ids()))", "quarantine_hidden"),
])
def test_each_probe_check_can_fail(migrated: Target, policy: str, check: str) -> None:
    name = policy.split()[2]
    with db.connect(migrated, autocommit=True) as conn:
        original = db.scalar(conn, "select format('create policy %%I on public.knowledge_base for %%s to %%s using (%%s)%%s', "
                                   "policyname, lower(cmd), array_to_string(roles, ','), qual, "
                                   "coalesce(' with check (' || with_check || ')', '')) "
                                   "from pg_policies where tablename = 'knowledge_base' and policyname = %s", (name,))
        member = db.scalar(conn, "select user_id from workspace_members order by user_id limit 1")
        before = smoke.probe(conn, PARAMS, smoke.Subject("member", member))
        conn.execute(sql.SQL("drop policy {} on knowledge_base").format(sql.Identifier(name)))
        conn.execute(policy)
        try:
            after = smoke.probe(conn, PARAMS, smoke.Subject("member", member))
        finally:
            conn.execute(sql.SQL("drop policy {} on knowledge_base").format(sql.Identifier(name)))
            conn.execute(original)
        assert before["pass"] and before[check] is True
        assert after[check] is False and not after["pass"]
        assert smoke.probe(conn, PARAMS, smoke.Subject("member", member))["pass"]  # restored
