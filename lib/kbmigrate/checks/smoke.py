"""Smoke tests: isolation proved by acting as real users, against sets computed as the admin.

The expected sets are computed straight from the app's own tables (the membership table named
by the parameters, knowledge_base.is_shared/workspace_id) with plain queries, independent of the
policies and of the kb_private helper they call.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.engine.params import RunParams
from kbmigrate.checks.rls import acting_as, attempt


@dataclass(frozen=True)
class Subject:
    label: str
    user_id: uuid.UUID | None
    role: str = "authenticated"


def memberships(conn: psycopg.Connection[Any], params: RunParams) -> dict[uuid.UUID, set[uuid.UUID]]:
    schema, table = params.membership_split
    q = sql.SQL("select {u} as user_id, {w} as workspace_id from {t}").format(
        u=sql.Identifier(params.membership_user_column), w=sql.Identifier(params.membership_workspace_column),
        t=sql.Identifier(schema, table))
    out: dict[uuid.UUID, set[uuid.UUID]] = {}
    for r in db.rows(conn, q):
        out.setdefault(r["user_id"], set()).add(r["workspace_id"])
    return out


def subjects(conn: psycopg.Connection[Any], params: RunParams, *, all_up_to: int = 50, sample: int = 25,
             seed: int = 1, member_map: dict[uuid.UUID, set[uuid.UUID]] | None = None) -> list[Subject]:
    """A member of every workspace (all of them up to ``all_up_to``, else a seeded sample), the user
    with the most workspaces, a signed-in user with none, and anon."""
    member_of = member_map if member_map is not None else memberships(conn, params)
    by_ws: dict[uuid.UUID, uuid.UUID] = {}
    for user, wss in sorted(member_of.items()):
        for ws in wss:
            by_ws.setdefault(ws, user)
    workspaces = sorted(by_ws)
    if len(workspaces) > all_up_to:
        workspaces = sorted(random.Random(seed).sample(workspaces, sample))
    out = [Subject(f"member of {str(ws)[:8]}", by_ws[ws]) for ws in workspaces]
    if member_of:
        most = max(sorted(member_of), key=lambda u: len(member_of[u]))
        out.append(Subject(f"member of {len(member_of[most])} workspaces", most))
    loner = db.scalar(conn, "select id from auth.users where id <> all(%s) order by id limit 1", (list(member_of),))
    out.append(Subject("signed in, no workspace", loner or uuid.uuid4()))
    out.append(Subject("anon", None, "anon"))
    return out


def readable(conn: psycopg.Connection[Any], query: str, params: Any = None) -> set[uuid.UUID]:
    """The ``id`` column of what a read returns; a read refused outright (no privilege, e.g. anon)
    returns nothing."""
    try:
        with conn.transaction():
            return {x["id"] for x in db.rows(conn, query, params)}
    except psycopg.errors.InsufficientPrivilege:
        return set()


# A set of entries as figures: its size and the sum of a 64-bit hash of each id (order-independent,
# additive over disjoint parts). Equal sets give equal figures; when they differ, the full sets
# are fetched to list exactly which entries leak or are missing.
_HASH = "uuid_hash_extended(id, 0)::numeric"
_SET_FIGURES = (f"select count(*) as n, coalesce(sum({_HASH}), 0)::text as h, "
                "count(*) filter (where workspace_id is null and not is_shared) as quarantined, "
                "count(*) filter (where is_shared) as shared "
                "from public.knowledge_base")

SHARED_TRIED = 200  # shared rows each user tries to edit and delete

Figures = tuple[int, int]  # (entries, hash sum)


@dataclass(frozen=True)
class Expected:
    """What the rule lets each reader see, computed once as the admin straight from the table's
    columns (one scan): the shared entries, and each workspace's own. Workspaces partition the
    non-shared entries, so a member's set is the shared one plus their workspaces' (sums add)."""
    shared: Figures
    by_workspace: dict[uuid.UUID, Figures]

    def of(self, workspaces: set[uuid.UUID]) -> Figures:
        parts = [self.shared] + [self.by_workspace.get(ws, (0, 0)) for ws in workspaces]
        return sum(n for n, _ in parts), sum(h for _, h in parts)


def expected_figures(conn: psycopg.Connection[Any], *, existed_only: bool = False) -> Expected:
    """``existed_only``: only the entries that existed before the migration (not the legacy import's)."""
    existed = " and not exists (select 1 from kbmigrate.legacy_imports li where li.entry_id = kb.id)" if existed_only else ""
    rows = db.rows(conn, f"select is_shared, workspace_id, count(*) as n, coalesce(sum({_HASH}), 0)::text as h "
                         f"from public.knowledge_base kb where (is_shared or workspace_id is not null){existed} group by 1, 2")
    shared = (sum(int(r["n"]) for r in rows if r["is_shared"]), sum(int(r["h"]) for r in rows if r["is_shared"]))
    return Expected(shared, {r["workspace_id"]: (int(r["n"]), int(r["h"])) for r in rows if not r["is_shared"]})


def probe(conn: psycopg.Connection[Any], params: RunParams, who: Subject,
          member_map: dict[uuid.UUID, set[uuid.UUID]] | None = None, expected: Expected | None = None) -> dict[str, Any]:
    """What ``who`` can read and write, against what they should."""
    member_map = member_map if member_map is not None else memberships(conn, params)
    expected = expected if expected is not None else expected_figures(conn)
    member_of = member_map.get(who.user_id, set()) if who.user_id and who.role == "authenticated" else set()
    visible_rule = "is_shared or workspace_id = any(%(ws)s)"
    should_see = expected.of(member_of) if who.role == "authenticated" else (0, 0)
    expected_sections = {r["id"] for r in db.rows(conn, "select id from public.knowledge_base_sections where workspace_id = any(%s)",
                                                   (list(member_of),))} if who.role == "authenticated" else set()
    other_ws = db.scalar(conn, "select id from public.workspaces where id <> all(%s) order by id limit 1", (list(member_of),))
    own_ws = min(member_of) if member_of else None
    own_section = db.scalar(conn, "select id from public.knowledge_base_sections where workspace_id = %s order by id limit 1",
                            (own_ws,)) if own_ws else None
    # shared rows are tried by key: a write over every shared row scans the table, per user
    shared_ids = [x["id"] for x in db.rows(conn, "select id from public.knowledge_base where is_shared order by id limit %s",
                                           (SHARED_TRIED,))]

    r: dict[str, Any] = {"user": who.label, "role": who.role, "workspaces": len(member_of)}
    with acting_as(conn, who.user_id, who.role):
        try:
            with conn.transaction():
                actual = db.rows(conn, _SET_FIGURES)[0]
        except psycopg.errors.InsufficientPrivilege:
            actual = {"n": 0, "h": "0", "quarantined": 0, "shared": 0}
        reads = (int(actual["n"]), int(actual["h"]))
        r["reads"], r["expected"] = reads[0], should_see[0]
        if reads != should_see:
            seen = readable(conn, "select id from public.knowledge_base")
        seen_sections = readable(conn, "select id from public.knowledge_base_sections")
        view_ws = readable(conn, "select workspace_id as id from public.vw_workspace_sections")
        r["sections_ok"] = seen_sections == expected_sections
        r["view_ok"] = view_ws <= member_of
        r["quarantine_hidden"] = actual["quarantined"] == 0
        r["shared_readable"] = who.role != "authenticated" or not shared_ids or actual["shared"] > 0
        if own_ws:
            created = attempt(conn, "insert into public.knowledge_base (title, content, workspace_id, section_id) "
                                    "values ('smoke test', 'x', %s, %s)", (own_ws, own_section))
            own_row = db.scalar(conn, "select id from public.knowledge_base where workspace_id = %s order by id limit 1", (own_ws,))
            r["create_own"] = created == 1
            r["edit_own"] = attempt(conn, "update public.knowledge_base set title = title || ' (edited)' where id = %s", (own_row,)) == 1
            r["move_out_refused"] = attempt(conn, "update public.knowledge_base set workspace_id = %s, section_id = null where id = %s",
                                            (other_ws, own_row)) in ("refused", 0)
        else:
            r["create_own"] = r["edit_own"] = r["move_out_refused"] = None
        r["insert_other_refused"] = attempt(conn, "insert into public.knowledge_base (title, workspace_id) values ('x', %s)",
                                            (other_ws,)) == "refused"
        r["insert_shared_refused"] = attempt(conn, "insert into public.knowledge_base (title, is_shared) values ('x', true)") == "refused"
        r["update_other_0"] = attempt(conn, "update public.knowledge_base set title = 'x' where workspace_id = %s", (other_ws,)) in (0, "refused")
        r["delete_other_0"] = attempt(conn, "delete from public.knowledge_base where workspace_id = %s", (other_ws,)) in (0, "refused")
        r["shared_readonly"] = (attempt(conn, "update public.knowledge_base set title = 'x' where id = any(%s)",
                                        (shared_ids,)) in (0, "refused")
                                and attempt(conn, "delete from public.knowledge_base where id = any(%s)", (shared_ids,)) in (0, "refused"))
        r["section_other_refused"] = attempt(conn, "insert into public.knowledge_base_sections (workspace_id, name) values (%s, 'smoke')",
                                             (other_ws,)) == "refused"
    if reads != should_see:
        should = {x["id"] for x in db.rows(conn, f"select id from public.knowledge_base where {visible_rule}",
                                           {"ws": list(member_of)})} if who.role == "authenticated" else set()
        r["leaked"], r["missing"] = sorted(seen - should), sorted(should - seen)
        if not r["leaked"] and not r["missing"]:  # equal sets, unequal figures: the figures are wrong, not the policy
            raise RuntimeError(f"set figures disagree for {who.label} although the sets are equal")
    else:
        r["leaked"], r["missing"] = [], []
    checks = [k for k, v in r.items() if isinstance(v, bool)]
    r["pass"] = not r["leaked"] and not r["missing"] and all(r[k] for k in checks)
    return r


def can_read_any(conn: psycopg.Connection[Any], user_id: uuid.UUID, ids: list[uuid.UUID]) -> bool:
    """Whether ``user_id``, acting through the API, can read any of ``ids``."""
    with acting_as(conn, user_id, "authenticated"):
        return bool(db.scalar(conn, "select exists (select 1 from public.knowledge_base where id = any(%s))", (ids,)))


def still_readable(conn: psycopg.Connection[Any], subjects: list[Subject],
                   member_map: dict[uuid.UUID, set[uuid.UUID]]) -> list[int]:
    """Per subject: how many of the entries that existed before the migration they can read now,
    from the rule, in one scan. The isolation matrix has proved, by acting as each of them, that
    what they read is exactly the rule's set."""
    existed = expected_figures(conn, existed_only=True)
    return [existed.of(member_map.get(s.user_id, set()))[0] if s.role == "authenticated" else 0 for s in subjects]


def app_queries(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The app's existing queries and an insert that names none of the new columns, as the table
    owner and as service_role; all rolled back."""
    out = []
    for role in (None, "service_role"):
        with conn.transaction(force_rollback=True):
            if role:
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
            listed = len(db.rows(conn, "select id, title, content, metadata, created_by, created_at, updated_at "
                                       "from public.knowledge_base order by created_at desc limit 20"))
            inserted = attempt(conn, "insert into public.knowledge_base (title, content, metadata) values ('app insert', 'x', '{}')")
            updated = attempt(conn, "update public.knowledge_base set content = content where id = "
                                    "(select id from public.knowledge_base order by created_at desc limit 1)")
            out.append({"as": role or "table owner", "list newest 20": listed, "insert without new columns": inserted,
                        "update": updated, "pass": listed > 0 and inserted == 1 and updated == 1})
    return out
