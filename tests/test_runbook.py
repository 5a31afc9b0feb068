"""The runbook end to end on real databases: effects against independent expectations,
the no-op re-run, a failing check, and a database that differs from the demo."""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from kbmigrate import db
from kbmigrate.dev import demo
from kbmigrate.run import runner
from kbmigrate.conninfo import Target, known_secrets
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT, RUNS_DIR, SQL_DIR

from conftest import drop, new_demo, run_cli
from oracle import classify_kb, fetch, first_joined_workspace, matches_shared_rule

QUIET = {"progress": False, "echo": lambda *a: None, "approve": "auto"}  # automation: a self-approval, recorded


def snapshot(target: Target) -> dict[str, Any]:
    with db.connect(target) as conn:
        out = {t: fetch(conn, f"select * from public.{t}") for t in
               ("workspaces", "users", "knowledge_base", *demo.LEGACY_TABLES)}
        if db.scalar(conn, "select to_regclass('public.workspace_members') is not null"):
            out["members"] = fetch(conn, "select user_id, workspace_id, joined_at from workspace_members")
        if db.scalar(conn, "select to_regclass('public.knowledge_base_sections') is not null"):
            out["sections"] = fetch(conn, "select * from public.knowledge_base_sections")
        return out


def checksums(target: Target) -> dict[str, str]:
    with db.connect(target) as conn:
        tables = [r["t"] for r in db.rows(conn, "select tablename as t from pg_tables where schemaname = 'public' order by 1")]
        return {t: db.scalar(conn, sql.SQL("select md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from {} x")
                             .format(sql.Identifier("public", t))) for t in tables}


def assert_untouched(target: Target, before: dict[str, str]) -> None:
    """A refusal changed nothing: every public table as it was, and no trace of the tool (not even its ledger)."""
    assert checksums(target) == before
    with db.connect(target) as conn:
        assert db.scalar(conn, "select to_regnamespace('kbmigrate') is null")


@pytest.fixture(scope="module")
def migrated(server: Target) -> Any:
    target = new_demo(server, "kbt_run")
    before = snapshot(target)
    manifest = runner.run(target, RunParams(), run_id=f"t-{uuid.uuid4().hex[:8]}", **QUIET)
    yield target, before, manifest
    drop(server, target)


def test_manifest_and_evidence(migrated: Any) -> None:
    target, _, manifest = migrated
    assert manifest["status"] == "succeeded"
    assert [Path(s["notebook"]).stem for s in manifest["steps"]] == list(runner.plan.STEPS)
    for step in manifest["steps"]:
        path = Path(step["notebook"]) if Path(step["notebook"]).is_absolute() else REPO_ROOT / step["notebook"]
        assert step["status"] == "succeeded" and step["seconds"] >= 0
        assert hashlib.sha256(path.read_bytes()).hexdigest() == step["sha256"]
    on_disk = json.loads((runner.RUNS_DIR / manifest["run_id"] / "manifest.json").read_text())
    assert on_disk["status"] == "succeeded" and on_disk["ended_at"] >= on_disk["started_at"]
    assert set(on_disk["target"]) >= {"host", "port", "database", "user"}
    secrets = known_secrets()  # the test logins' passwords, from this session's pgpass file
    assert secrets and not any(s in json.dumps(on_disk) for s in secrets)
    assert on_disk["parameters"]["batch_size"] == RunParams().batch_size
    for rel, digest in on_disk["sql_files"].items():
        assert hashlib.sha256((SQL_DIR / rel).read_bytes()).hexdigest() == digest
    assert {"deploy/backfill_workspace_ids.sql", "verify/rls_policies.sql"} <= set(on_disk["sql_files"])
    assert on_disk["backup"]["bytes"] > 0 and on_disk["backup"]["row_counts"]["public.knowledge_base"] == demo.SIZES["small"].kb_rows


def test_backfill_matches_the_rules(migrated: Any) -> None:
    target, before, _ = migrated
    after = {e["id"]: e for e in snapshot(target)["knowledge_base"]}
    classes = classify_kb(before["knowledge_base"], before["members"])
    first = first_joined_workspace(before["members"])
    original = {e["id"]: e for e in before["knowledge_base"]}
    for eid in classes["shared"]:
        assert after[eid]["is_shared"] and after[eid]["workspace_id"] is None
    for eid in classes["assigned"]:
        assert after[eid]["workspace_id"] == original[eid]["workspace_id"] and not after[eid]["is_shared"]
    for eid in classes["backfill_from_creator"]:
        assert after[eid]["workspace_id"] == first[original[eid]["created_by"]] and not after[eid]["is_shared"]
    quarantined = classes["quarantine_no_creator"] + classes["quarantine_creator_without_workspace"]
    for eid in quarantined:
        assert after[eid]["workspace_id"] is None and not after[eid]["is_shared"]
    for eid, e in original.items():
        assert (after[eid]["created_at"], after[eid]["updated_at"]) == (e["created_at"], e["updated_at"])
    with db.connect(target) as conn:
        listed = {r["entry_id"] for r in fetch(conn, "select entry_id from kbmigrate.quarantine")}
        review = {r["id"] for r in fetch(conn, open(SQL_DIR / "report/review_shared_assigned.sql").read())}
    assert listed == set(quarantined)
    assert review == set(classes["assigned_matching_shared"])


def test_sections_seeded_from_the_file(migrated: Any) -> None:
    target, before, _ = migrated
    with open(SQL_DIR / "data/default_sections.csv", newline="", encoding="utf-8") as fh:
        defaults = [r["name"] for r in csv.DictReader(fh)]
    assert len(defaults) == 9
    sections = snapshot(target)["sections"]
    active = {w["id"] for w in before["workspaces"] if w["is_active"]}
    per_ws: dict[Any, list[tuple[int, str]]] = {}
    for s in sections:
        per_ws.setdefault(s["workspace_id"], []).append((s["display_order"], s["name"]))
    assert set(per_ws) == active
    assert all([n for _, n in sorted(v)] == defaults for v in per_ws.values())


LEGACY = {  # source -> (section, name field(s), title prefix, labels)
    "legacy_icp_data": ("ICP", ["company_name"], "ICP: ", ["Industry", "Company size", "Revenue range", "Pain points"]),
    "legacy_product_data": ("Products", ["product_name"], "", ["Price", "Features", "Benefits"]),
    "legacy_competitor_data": ("Competitors", ["competitor_name", "company_name"], "", ["Strengths", "Weaknesses", "Market share", "Pricing"]),
    "legacy_persona_data": ("Personas", ["persona_name"], "", ["Job title", "Goals", "Challenges", "Demographics"]),
}


def test_legacy_import_matches_the_rules(migrated: Any) -> None:
    target, before, _ = migrated
    active = {w["id"] for w in before["workspaces"] if w["is_active"]}
    after = snapshot(target)
    section_of = {(s["workspace_id"], s["name"]): s["id"] for s in after["sections"]}
    imported = [e for e in after["knowledge_base"] if "imported_from" in e["metadata"]]
    for source, (section, names, prefix, labels) in LEGACY.items():
        rows = before[source]
        landing = [r for r in rows if r["workspace_id"] in active]
        entries = {e["metadata"]["original_id"]: e for e in imported if e["metadata"]["imported_from"] == source}
        assert set(entries) == {str(r["id"]) for r in landing}, source
        assert len(rows) > len(landing)  # some rows could not land, and did not
        for r in landing:
            e = entries[str(r["id"])]
            name = next((r[n] for n in names if r.get(n)), None)
            assert e["title"] == (r["title"] or (prefix + name if name else f"{section} entry {r['id']}"))
            assert e["workspace_id"] == r["workspace_id"] and e["section_id"] == section_of[(r["workspace_id"], section)]
            assert e["created_by"] == (r.get("created_by") or r.get("user_id"))
            assert e["created_at"] == r["created_at"] and not e["is_shared"]
            lines = (e["content"] or "").split("\n")
            if r["description"]:
                assert lines[0] == r["description"]
            present = [lab for lab, field in zip(labels, _fields(source)) if r[field] not in (None, [], "")]
            assert [ln.split(":", 1)[0] for ln in lines if ln.split(":", 1)[0] in labels] == present
            assert e["metadata"].get("legacy_metadata") == r["metadata"]


def _fields(source: str) -> list[str]:
    return {"legacy_icp_data": ["industry", "company_size", "revenue_range", "pain_points"],
            "legacy_product_data": ["price", "features", "benefits"],
            "legacy_competitor_data": ["strengths", "weaknesses", "market_share", "pricing"],
            "legacy_persona_data": ["job_title", "goals", "challenges", "demographics"]}[source]


def test_the_rehearsal_foretold_production(migrated: Any) -> None:
    """01 rehearsed 02-05 on the restored copy: the same changes as production then made, each with
    the locks its transaction held, and the entries where production has them now."""
    target, _, manifest = migrated
    record = manifest["rehearsal"]
    path = REPO_ROOT / record["path"]
    assert record["ok"] and hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    rehearsed = json.loads(path.read_text())
    with db.connect(target) as conn:
        done = db.rows(conn, """select step, change from kbmigrate.ledger where run_id = %s
                              and step in ('02_schema', '03_backfill', '04_seed_sections', '05_import_legacy')
                              and outcome in ('applied', 'noop', 'skipped') group by step, change order by min(id)""",
                     (manifest["run_id"],))
        now = fetch(conn, """select count(*) as total, count(*) filter (where is_shared) as shared,
                                    count(*) filter (where workspace_id is not null) as in_a_workspace,
                                    count(*) filter (where workspace_id is null and not is_shared) as without_workspace
                             from public.knowledge_base""")[0]
    assert [(c["step"], c["change"]) for c in rehearsed["changes"]] == [(d["step"], d["change"]) for d in done]
    by_name = {c["change"]: c for c in rehearsed["changes"]}
    # ALTER TABLE ... ADD COLUMN takes ACCESS EXCLUSIVE (PostgreSQL's documentation of ALTER TABLE)
    assert {"relation": "public.knowledge_base", "mode": "AccessExclusiveLock"} in by_name["kb_columns"]["locks"]
    assert 0 <= by_name["kb_columns"]["held_seconds"] <= by_name["kb_columns"]["seconds"] + 0.5
    totals = rehearsed["entries"]["totals"]
    assert {k: int(totals[k]) for k in now} == {k: int(v) for k, v in now.items()}
    assert sum(int(w["entries"]) for w in rehearsed["entries"]["per_workspace"]) == int(now["in_a_workspace"])
    # each user's access: who loses entries they created, as production's rules now say (read here
    # as the admin from the tables: created_by outside the creator's memberships, not shared)
    with db.connect(target) as conn:
        losing = {str(r["user_id"]): int(r["n"]) for r in fetch(conn, """
            select kb.created_by as user_id, count(*) as n from public.knowledge_base kb
            where kb.created_by is not null and not kb.is_shared and not exists (
                select 1 from public.workspace_members m where m.user_id = kb.created_by and m.workspace_id = kb.workspace_id)
            group by kb.created_by""")}
    access = rehearsed["access"]
    assert {r["user_id"]: r["entries_lost"] for r in access["lost"]} == losing and losing
    assert access["failed"] == [] and access["passed"] == access["users_probed"] >= 3
    assert f"{len(losing)} users lost access to {sum(losing.values())} entries" in manifest["changed"]["access lost"]
    from kbmigrate.backup import drill

    with db.connect(drill.local_server().with_database("postgres")) as conn:
        assert not db.scalar(conn, "select count(*) from pg_database where datname = %s", (rehearsed["database"],)), \
            "the rehearsal's copy was not dropped"


def test_rerun_changes_nothing(migrated: Any) -> None:
    target, _, _ = migrated
    first = checksums(target)
    # a new run on a migrated database: its own backup would not hold the database as it was, so it
    # relies on the first run's (a new backup of its own is a NO-GO)
    manifest = runner.run(target, RunParams(), run_id=f"t-{uuid.uuid4().hex[:8]}", backup_of=migrated[2]["run_id"], **QUIET)
    assert manifest["status"] == "succeeded" and manifest["backup_of"] == migrated[2]["run_id"]
    assert "01_backup" not in [s["step"] for s in manifest["steps"]]
    assert checksums(target) == first
    with db.connect(target) as conn:
        outcomes = {r["outcome"] for r in fetch(conn, f"select outcome from kbmigrate.ledger where run_id = '{manifest['run_id']}'")}
    assert outcomes == {"noop"}


def test_the_app_keeps_working(migrated: Any) -> None:
    target, _, _ = migrated
    with db.connect(target, autocommit=True) as conn:
        for role in (None, "service_role"):
            with conn.transaction(force_rollback=True):
                if role:
                    conn.execute("set local role service_role")
                cur = conn.execute("insert into knowledge_base (title, content, metadata) values ('app', 'x', '{}') returning is_shared, workspace_id")
                assert cur.fetchone() == (False, None)
                assert db.scalar(conn, "select count(*) from knowledge_base where title = 'app'") == 1


def test_no_go_stops_before_any_change(server: Target, fresh_db: Target) -> None:
    with db.connect(fresh_db, autocommit=True) as conn:
        conn.execute("create table knowledge_base_content (id uuid primary key, title text)")
    run_id = f"t-nogo-{uuid.uuid4().hex[:6]}"
    done = run_cli("run", "--dsn", fresh_db.conninfo, "--no-progress", "--run-id", run_id)
    assert done.returncode != 0
    err = done.stderr.strip()
    assert err.startswith("kbmigrate: Step 00_preflight failed: preflight says NO-GO") and "Traceback" not in err
    assert "knowledge_base_content" in err and "00_preflight.ipynb" in err
    # the report picks out the reason, with no traceback, and does not call isolation proved
    report = (RUNS_DIR / run_id / "report.html").read_text(encoding="utf-8")
    no_go = report[report.index('<div class="no-go">'):]
    assert "knowledge_base_content" in no_go[:no_go.index("</div>")]
    assert "Traceback" not in report and "File \"" not in report
    assert '<span class="verdict-neutral">not tested in this run' in report and "1 of 7 steps run" in report
    with db.connect(fresh_db) as conn:
        assert db.scalar(conn, "select to_regnamespace('kbmigrate') is null")


def test_a_failing_smoke_check_stops_the_run(server: Target) -> None:
    target = new_demo(server, "kbt_leak")
    try:
        runner.run(target, RunParams(), only=["00", "01", "02_schema"], run_id=f"t-{uuid.uuid4().hex[:8]}", **QUIET)
        with db.connect(target, autocommit=True) as conn:
            conn.execute("create policy leak on knowledge_base for select to authenticated using (true)")
        with pytest.raises(runner.RunFailed) as exc:
            runner.run(target, RunParams(), only=["06"], run_id=f"t-{uuid.uuid4().hex[:8]}", **QUIET)
        assert "06_smoke_tests" in exc.value.message and "06_smoke_tests.ipynb" in exc.value.message
        evidence = REPO_ROOT / exc.value.details["evidence"]  # an absolute path stays as it is
        manifest = json.loads((evidence.parent / "manifest.json").read_text())
        assert manifest["status"] == "failed" and manifest["steps"][-1]["status"] == "failed"
    finally:
        drop(server, target)


def test_a_database_that_differs_from_the_demo(server: Target) -> None:
    """No workspace_id column yet, a sections table that already holds some sections, and the
    membership table of another deployment: workspace_accounts(user_id, workspace_id, created_at)."""
    target = new_demo(server, "kbt_other", seed=5)
    try:
        with db.connect(target, autocommit=True) as conn:
            conn.execute("alter table knowledge_base drop column workspace_id")
            conn.execute("alter table workspace_members rename to workspace_accounts")
            conn.execute("alter table workspace_accounts rename column joined_at to created_at")
            conn.execute("alter table workspace_accounts drop column role")
            conn.execute("""create table knowledge_base_sections (
                id uuid primary key default gen_random_uuid(), workspace_id uuid not null references workspaces on delete cascade,
                name text not null, description text, display_order integer not null default 0, icon text,
                is_active boolean not null default true, created_at timestamptz not null default now(),
                updated_at timestamptz not null default now(), unique (workspace_id, name))""")
            conn.execute("""insert into knowledge_base_sections (workspace_id, name, description, display_order)
                            select id, v.name, 'kept', v.o from workspaces, (values ('ICP', 1), ('Custom notes', 20)) v(name, o)
                            where is_active""")
        from test_rollback import schema_dump

        before = snapshot(target)
        before_schema, before_data = schema_dump(target), checksums(target)
        before_members = [{"user_id": m["user_id"], "workspace_id": m["workspace_id"], "joined_at": m["created_at"]}
                          for m in fetch_all(target, "select * from workspace_accounts")]
        params = RunParams(membership_table="public.workspace_accounts", membership_joined_column="created_at")
        run_id = f"t-{uuid.uuid4().hex[:8]}"
        manifest = runner.run(target, params, run_id=run_id, **QUIET)
        assert manifest["status"] == "succeeded"
        after = snapshot(target)
        kept = {(s["id"], s["name"], s["description"]) for s in before["sections"]}
        assert kept <= {(s["id"], s["name"], s["description"]) for s in after["sections"]}
        active = {w["id"] for w in before["workspaces"] if w["is_active"]}
        names = {}
        for s in after["sections"]:
            names.setdefault(s["workspace_id"], set()).add(s["name"])
        assert all(len(names[w]) == 10 and "Custom notes" in names[w] for w in active)
        entries = [dict(e, workspace_id=None) for e in before["knowledge_base"]]
        classes = classify_kb(entries, before_members)
        first = first_joined_workspace(before_members)
        got = {e["id"]: e for e in after["knowledge_base"]}
        assert all(got[i]["is_shared"] for i in classes["shared"])
        assert all(got[i]["workspace_id"] == first[got[i]["created_by"]] for i in classes["backfill_from_creator"])
        assert not classes["assigned"]
        # its rollback: both KB tables restored, the sections table with its own sections only (the
        # migration's key from the entries to their sections must not stop it)
        done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--no-progress")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        assert schema_dump(target) == before_schema and checksums(target) == before_data
    finally:
        drop(server, target)


def fetch_all(target: Target, query: str) -> list[dict[str, Any]]:
    with db.connect(target) as conn:
        return fetch(conn, query)


def test_bad_parameters_are_refused_before_anything_runs(small_demo: Target) -> None:
    for args, word in ((["-p", "batch_size=0"], "batch_size"), (["-p", "backfill_strategy=newest"], "backfill_strategy"),
                       (["-p", "colour=blue"], "colour")):
        done = run_cli("run", "--dsn", small_demo.conninfo, "--no-progress", *args)
        assert done.returncode != 0 and word in done.stderr and "Traceback" not in done.stderr


def test_current_workspace_strategy_and_no_legacy_import(server: Target) -> None:
    target = new_demo(server, "kbt_strategy", seed=11)
    try:
        before = snapshot(target)
        params = RunParams(backfill_strategy="current_workspace", import_legacy=False)
        manifest = runner.run(target, params, only=["00", "01", "02", "03", "04", "05"], run_id=f"t-{uuid.uuid4().hex[:8]}", **QUIET)
        assert [Path(s["notebook"]).stem for s in manifest["steps"]] == \
            ["00_preflight", "01_backup", "02_schema", "03_backfill", "04_seed_sections", "05_import_legacy"]
        current = {u["id"]: u["current_workspace_id"] for u in before["users"]}
        after = {e["id"]: e for e in snapshot(target)["knowledge_base"]}
        assert len(after) == len(before["knowledge_base"])  # nothing imported
        moved = differs = 0
        first = first_joined_workspace(before["members"])
        for e in before["knowledge_base"]:
            if e["workspace_id"] is None and not matches_shared_rule(e["title"], e["metadata"]):
                assert after[e["id"]]["workspace_id"] == current.get(e["created_by"])
                moved += after[e["id"]]["workspace_id"] is not None
                differs += current.get(e["created_by"]) != first.get(e["created_by"])
        assert moved > 0 and differs > 0  # the strategy mattered
        with db.connect(target) as conn:
            skipped = fetch(conn, f"select detail from kbmigrate.ledger where run_id = '{manifest['run_id']}' "
                                  "and change like 'import_legacy_%'")
        assert len(skipped) == 4 and all(r["detail"]["skipped"] == "import_legacy is false" for r in skipped)
    finally:
        drop(server, target)


def test_a_long_list_sends_only_what_is_shown_and_says_how_long_it_is(small_demo: Target, capsys) -> None:
    """runbook.first_rows / shown: the notebook's lists (03's quarantine and review lists) come
    back as their first rows, in the list's own order, each knowing the whole list's length."""
    from kbmigrate import runbook

    query = "select id, title from public.knowledge_base order by id desc;"
    with db.connect(small_demo) as conn:
        whole = fetch(conn, query)
        first, none = (runbook.table(t) for t in db.batch(conn, [(runbook.first_rows(query), None),
                                                                 (runbook.first_rows(query.replace("order", "where false order")), None)]))
    assert len(whole) > runbook.SHOWN  # else nothing is cut
    assert list(first.id) == [r["id"] for r in whole[:runbook.SHOWN]] and set(first.of) == {len(whole)}
    assert list(runbook.shown(first, "entries").columns) == ["id", "title"]
    assert capsys.readouterr().out == f"{len(whole)} entries, the first {runbook.SHOWN} below\n"
    assert runbook.shown(none, "entries").empty and capsys.readouterr().out == "0 entries\n"
