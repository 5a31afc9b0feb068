"""The demo generator, checked against counts computed independently from the raw rows."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from psycopg import sql

from kbmigrate import db
from kbmigrate.dev import demo
from kbmigrate.conninfo import Target
from kbmigrate.errors import BadParameter, NotADemoDatabase

from conftest import run_cli
from oracle import classify_kb, fetch, first_joined_workspace

SMALL = demo.SIZES["small"]


@pytest.fixture(scope="module")
def raw(small_demo: Target) -> dict[str, Any]:
    with db.connect(small_demo) as conn:
        return {
            "workspaces": fetch(conn, "select * from workspaces"),
            "auth_users": fetch(conn, "select * from auth.users"),
            "users": fetch(conn, "select * from users"),
            "members": fetch(conn, "select * from workspace_members"),
            "kb": fetch(conn, "select * from knowledge_base"),
            **{t: fetch(conn, f"select * from {t}") for t in demo.LEGACY_TABLES},
        }


def test_sizes_meet_the_issue() -> None:
    large = demo.SIZES["large"]
    assert large.kb_rows >= 1_000_000 and large.workspaces >= 10_000 and large.users >= 50_000
    assert all(s.users % 10 == 0 for s in demo.SIZES.values())


def test_table_sizes(raw: dict[str, Any]) -> None:
    assert len(raw["workspaces"]) == SMALL.workspaces
    assert len(raw["auth_users"]) == len(raw["users"]) == SMALL.users
    assert {u["id"] for u in raw["users"]} == {u["id"] for u in raw["auth_users"]}
    assert len(raw["kb"]) == SMALL.kb_rows
    for table in demo.LEGACY_TABLES:
        assert len(raw[table]) == SMALL.legacy_rows


def test_workspaces_and_memberships(raw: dict[str, Any]) -> None:
    expected = demo.design(SMALL)
    inactive = [w for w in raw["workspaces"] if not w["is_active"]]
    assert len(inactive) == expected["inactive_workspaces"] > 0
    per_user = Counter(m["user_id"] for m in raw["members"])
    assert len(raw["members"]) == expected["memberships"]
    assert sum(1 for u in raw["users"] if u["id"] not in per_user) == expected["users_without_workspace"] > 0
    assert sum(1 for n in per_user.values() if n > 1) == expected["users_with_several_workspaces"] > 0
    # equal join times: a user's two earliest memberships share joined_at
    joins: dict[Any, list[Any]] = {}
    for m in raw["members"]:
        joins.setdefault(m["user_id"], []).append(m["joined_at"])
    tied = sum(1 for ts in joins.values() if len(ts) > 1 and sorted(ts)[0] == sorted(ts)[1])
    assert tied == expected["users_with_tied_first_join"] > 0
    # current_workspace_id is one of the user's own workspaces, and differs from the first
    # joined one for some users (so the two backfill strategies give different answers)
    mine = {(m["user_id"], m["workspace_id"]) for m in raw["members"]}
    first = first_joined_workspace(raw["members"])
    current = {u["id"]: u["current_workspace_id"] for u in raw["users"] if u["current_workspace_id"]}
    assert all((u, w) in mine for u, w in current.items())
    assert any(first[u] != w for u, w in current.items())
    assert any(u["current_workspace_id"] is None and u["id"] in per_user for u in raw["users"])


def test_kb_entries_cover_every_rule(raw: dict[str, Any]) -> None:
    expected = demo.design(SMALL)
    got = {k: len(v) for k, v in classify_kb(raw["kb"], raw["members"]).items()}
    assert got == {
        "shared": expected["kb_shared_unassigned"],
        "assigned": expected["kb_assigned"],
        "assigned_matching_shared": expected["kb_assigned_matching_shared"],
        "quarantine_no_creator": expected["kb_quarantine_no_creator"],
        "quarantine_creator_without_workspace": expected["kb_quarantine_creator_without_workspace"],
        "backfill_from_creator": expected["kb_backfill_from_creator"],
    }
    unassigned = [e for e in raw["kb"] if e["workspace_id"] is None]
    # each of the three shared rules is used on its own
    by_rule = Counter()
    for e in unassigned:
        m = e["metadata"]
        by_rule["is_shared"] += m.get("is_shared") in (True, "true")
        by_rule["visibility"] += m.get("visibility") == "global"
        by_rule["title"] += "[global]" in e["title"].lower()
    assert min(by_rule.values()) > 0
    # decoys that must not count as shared exist
    assert any(e["metadata"].get("is_shared") is False for e in unassigned)
    assert any("global" in e["title"].lower() and "[global]" not in e["title"].lower() for e in unassigned)
    # entries whose creator's first workspace is inactive exist (they land in inactive workspaces)
    inactive = {w["id"] for w in raw["workspaces"] if not w["is_active"]}
    first = first_joined_workspace(raw["members"])
    assert any(first.get(e["created_by"]) in inactive for e in unassigned if e["created_by"])


def test_text_is_awkward_on_purpose(raw: dict[str, Any]) -> None:
    titles = [e["title"] for e in raw["kb"]]
    contents = [e["content"] for e in raw["kb"]]
    assert any("'" in t for t in titles) and any('"' in t for t in titles)
    assert any(any(ord(ch) > 0x2000 for ch in t) for t in titles)
    assert any(c is None for c in contents)
    assert max(len(c) for c in contents if c) > 5_000
    assert any(ord(ch) > 0x400 for c in contents if c for ch in c)


def test_legacy_tables_have_gaps(raw: dict[str, Any]) -> None:
    inactive = {w["id"] for w in raw["workspaces"] if not w["is_active"]}
    name_field = {"legacy_icp_data": "company_name", "legacy_product_data": "product_name",
                  "legacy_competitor_data": "competitor_name", "legacy_persona_data": "persona_name"}
    for table, name in name_field.items():
        rows = raw[table]
        n = len(rows)
        assert sum(r["workspace_id"] is None for r in rows) == n // 25
        assert sum(r["title"] is None for r in rows) == n // 4
        assert any(r["title"] is None and r[name] is None for r in rows)
        assert any(r["workspace_id"] in inactive for r in rows)
        assert any(r["description"] is None for r in rows)
        assert any(r["metadata"] is None for r in rows)
    # creator columns differ between tables, as in the real legacy schema
    assert "created_by" not in raw["legacy_product_data"][0] and "user_id" in raw["legacy_product_data"][0]
    assert "user_id" not in raw["legacy_competitor_data"][0]
    icp = raw["legacy_icp_data"]
    assert any(r["created_by"] is None and r["user_id"] is not None for r in icp)
    assert any(r["created_by"] is None and r["user_id"] is None for r in icp)


def _checksums(target: Target) -> dict[str, str]:
    with db.connect(target) as conn:
        out = {}
        for schema, table in [("public", "workspaces"), ("auth", "users"), ("public", "users"),
                              ("public", "knowledge_base"), *[("public", t) for t in demo.LEGACY_TABLES]]:
            out[table] = db.scalar(conn, sql.SQL("select md5(string_agg(t::text, '|' order by t.id)) from {} t")
                                   .format(sql.Identifier(schema, table)))
        out["workspace_members"] = db.scalar(
            conn, "select md5(string_agg((workspace_id, user_id, role, joined_at)::text, '|' "
                  "order by workspace_id, user_id)) from workspace_members")
        return out


def test_same_seed_same_data_other_seed_other_data(server: Target, small_demo: Target) -> None:
    names = ["kbt_seed_same", "kbt_seed_other"]
    try:
        demo.build(server, names[0], "small", 42, progress=False)
        demo.build(server, names[1], "small", 7, progress=False)
        base = _checksums(small_demo)
        assert _checksums(server.with_database(names[0])) == base
        other = _checksums(server.with_database(names[1]))
        assert all(other[t] != base[t] for t in base)
    finally:
        with db.connect(server, autocommit=True) as admin:
            for n in names:
                db.drop_database(admin, n)


def test_replaces_only_its_own_databases(server: Target) -> None:
    name = "kbt_not_a_demo"
    with db.connect(server, autocommit=True) as admin:
        db.drop_database(admin, name)
        db.create_database(admin, name)
    try:
        with db.connect(server.with_database(name)) as conn:
            conn.execute("create table precious (x int)")
            conn.commit()
        with pytest.raises(NotADemoDatabase):
            demo.build(server, name, "small", 1, progress=False)
        with db.connect(server.with_database(name)) as conn:
            assert db.scalar(conn, "select to_regclass('public.precious') is not null")
        # a demo database is replaced without fuss
        demo_name = "kbt_rebuild"
        demo.build(server, demo_name, "small", 1, progress=False)
        report = demo.build(server, demo_name, "small", 2, progress=False)
        assert report["counts"]["public.knowledge_base"] == SMALL.kb_rows
    finally:
        with db.connect(server, autocommit=True) as admin:
            db.drop_database(admin, name)
            db.drop_database(admin, "kbt_rebuild")


def test_bad_size_is_refused(server: Target) -> None:
    with pytest.raises(BadParameter):
        demo.build(server, "kbt_never", "huge", 1, progress=False)


def test_medium_matches_its_design(server: Target) -> None:
    name = "kbt_medium"
    try:
        report = demo.build(server, name, "medium", 3, progress=False)
        size = demo.SIZES["medium"]
        expected = demo.design(size)
        assert report["counts"]["public.knowledge_base"] == size.kb_rows
        with db.connect(server.with_database(name)) as conn:
            got = db.rows(conn, """
                select count(*) filter (where workspace_id is not null) as assigned,
                       count(*) filter (where workspace_id is null and created_by is null
                                        and (metadata->>'is_shared' = 'true' or metadata->>'visibility' = 'global'
                                             or title ilike '%[global]%') is not true) as no_creator
                from knowledge_base""")[0]
            members = db.scalar(conn, "select count(*) from workspace_members")
        assert got == {"assigned": expected["kb_assigned"], "no_creator": expected["kb_quarantine_no_creator"]}
        assert members == expected["memberships"]
    finally:
        with db.connect(server, autocommit=True) as admin:
            db.drop_database(admin, name)


def test_cli_builds_a_demo_database(server: Target) -> None:
    name = "kbt_cli_demo"
    try:
        done = run_cli("demo-db", "--dsn", server.conninfo, "--name", name, "--no-progress", "--json")
        assert done.returncode == 0, done.stderr
        import json

        report = json.loads(done.stdout)
        assert report["counts"]["public.knowledge_base"] == SMALL.kb_rows
        assert report["counts"]["public.workspace_members"] == demo.design(SMALL)["memberships"]
    finally:
        with db.connect(server, autocommit=True) as admin:
            db.drop_database(admin, name)
