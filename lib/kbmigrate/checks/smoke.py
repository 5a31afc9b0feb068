"""Smoke tests: isolation proved by acting as real users, against sets computed as the admin.

The expected sets are computed straight from the app's own tables (the membership table named
by the parameters, knowledge_base.is_shared/workspace_id) with plain queries, independent of the
policies and of the kb_private helper they call.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.engine.params import RunParams
from kbmigrate.checks.rls import as_each
from kbmigrate.engine import transaction


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


# A set of entries as figures: its size and the sum of a 64-bit hash of each id (order-independent,
# additive over disjoint parts). Equal sets give equal figures; when they differ, the full sets
# are fetched to list exactly which entries leak or are missing.
_HASH = "uuid_hash_extended(id, 0)::numeric"
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


PROBES_PER_CALL = 10  # users probed per round trip: a progress bar that moves, few round trips


@dataclass(frozen=True)
class Layout:
    """What every probe needs from the admin's side, read once (3 queries) for all users: each
    workspace's sections, the workspaces in order, and the shared entries the users try to change."""
    sections: dict[uuid.UUID, list[uuid.UUID]]
    workspaces: list[uuid.UUID]
    shared_ids: list[uuid.UUID]

    @classmethod
    def read(cls, conn: psycopg.Connection[Any]) -> "Layout":
        found = db.batch(conn, [  # one round trip
            ("select workspace_id, id from public.knowledge_base_sections order by workspace_id, id", None),
            ("select id from public.workspaces order by id", None),
            # shared rows are tried by key: a write over every shared row scans the table, per user
            ("select id from public.knowledge_base where is_shared order by id limit %s", (SHARED_TRIED,))])
        sections: dict[uuid.UUID, list[uuid.UUID]] = {}
        for r in found[0]:
            sections.setdefault(r["workspace_id"], []).append(r["id"])
        return cls(sections, [r["id"] for r in found[1]], [r["id"] for r in found[2]])


def _subject(who: Subject, member_of: set[uuid.UUID], expected: Expected, layout: Layout) -> dict[str, Any]:
    """The probe's input for ``who``, from the admin's side."""
    own_ws = min(member_of) if member_of else None
    should = expected.of(member_of) if who.role == "authenticated" else (0, 0)
    return {"role": who.role, "user_id": str(who.user_id) if who.user_id else None,
            "own_ws": str(own_ws) if own_ws else None,
            "own_section": str(layout.sections[own_ws][0]) if own_ws and layout.sections.get(own_ws) else None,
            "other_ws": next((str(w) for w in layout.workspaces if w not in member_of), None),
            "shared_ids": [str(x) for x in layout.shared_ids], "should_n": str(should[0]), "should_h": str(should[1])}


def _verdict(conn: psycopg.Connection[Any], who: Subject, member_of: set[uuid.UUID], expected: Expected,
             layout: Layout, got: dict[str, Any]) -> dict[str, Any]:
    """The checks of one user's probe: what they did, against what they should."""
    authenticated = who.role == "authenticated"
    should_see = expected.of(member_of) if authenticated else (0, 0)
    expected_sections = {x for ws in member_of for x in layout.sections.get(ws, [])} if authenticated else set()
    refused_or_0 = ("refused", 0)
    r: dict[str, Any] = {"user": who.label, "role": who.role, "workspaces": len(member_of)}
    reads = (int(got["n"]), int(got["h"]))
    r["reads"], r["expected"] = reads[0], should_see[0]
    r["sections_ok"] = {uuid.UUID(x) for x in got["sections"]} == expected_sections
    r["view_ok"] = {uuid.UUID(x) for x in got["view_workspaces"]} <= member_of
    r["quarantine_hidden"] = int(got["quarantined"]) == 0
    r["shared_readable"] = not authenticated or not layout.shared_ids or int(got["shared"]) > 0
    if "create_own" in got:
        r["create_own"] = got["create_own"] == 1
        r["edit_own"] = got["edit_own"] == 1
        r["move_out_refused"] = got["move_out"] in refused_or_0
    else:
        r["create_own"] = r["edit_own"] = r["move_out_refused"] = None
    r["insert_other_refused"] = got["insert_other"] == "refused"
    r["insert_shared_refused"] = got["insert_shared"] == "refused"
    r["update_other_0"] = got["update_other"] in refused_or_0
    r["delete_other_0"] = got["delete_other"] in refused_or_0
    r["shared_readonly"] = got["update_shared"] in refused_or_0 and got["delete_shared"] in refused_or_0
    r["section_other_refused"] = got["section_other"] == "refused"
    if reads != should_see:
        seen = {uuid.UUID(x) for x in got.get("seen", [])}
        should = {x["id"] for x in db.rows(conn, "select id from public.knowledge_base where is_shared or workspace_id = any(%s)",
                                           (list(member_of),))} if authenticated else set()
        r["leaked"], r["missing"] = sorted(seen - should), sorted(should - seen)
        if not r["leaked"] and not r["missing"]:  # equal sets, unequal figures: the figures are wrong, not the policy
            raise RuntimeError(f"set figures disagree for {who.label} although the sets are equal")
    else:
        r["leaked"], r["missing"] = [], []
    checks = [k for k, v in r.items() if isinstance(v, bool)]
    r["pass"] = not r["leaked"] and not r["missing"] and all(r[k] for k in checks)
    return r


def matrix(conn: psycopg.Connection[Any], params: RunParams, subjects: list[Subject],
           member_map: dict[uuid.UUID, set[uuid.UUID]] | None = None, expected: Expected | None = None,
           *, progress: Any = None) -> list[dict[str, Any]]:
    """What each of ``subjects`` can read and write, against what they should: acting as each of
    them on the server (``sql/checks/probe.sql``), ``PROBES_PER_CALL`` users per round trip, in a
    transaction that is always rolled back. ``progress``: called with the users done after each call."""
    member_map = member_map if member_map is not None else memberships(conn, params)
    expected = expected if expected is not None else expected_figures(conn)
    layout = Layout.read(conn)
    member_of = [member_map.get(s.user_id, set()) if s.user_id and s.role == "authenticated" else set() for s in subjects]
    out: list[dict[str, Any]] = []
    for i in range(0, len(subjects), PROBES_PER_CALL):
        chunk = list(range(i, min(i + PROBES_PER_CALL, len(subjects))))
        given = [_subject(subjects[j], member_of[j], expected, layout) for j in chunk]
        cursor = transaction.one_round_trip(
            conn, params, None, "select pg_temp.kbmigrate_probe(s.subject) from jsonb_array_elements(%s::jsonb) "
                                "with ordinality as s(subject, n) order by s.n", (json.dumps(given),),
            rollback=True, functions=("checks/try_write.sql", "checks/probe.sql"), limits=params.limits("read"))
        for j, (got,) in zip(chunk, cursor.fetchall()):
            out.append(_verdict(conn, subjects[j], member_of[j], expected, layout, got))
        if progress:
            progress(len(chunk))
    return out


def probe(conn: psycopg.Connection[Any], params: RunParams, who: Subject,
          member_map: dict[uuid.UUID, set[uuid.UUID]] | None = None, expected: Expected | None = None) -> dict[str, Any]:
    """What ``who`` can read and write, against what they should (``matrix`` of one)."""
    return matrix(conn, params, [who], member_map, expected)[0]


def can_read_any(conn: psycopg.Connection[Any], user_id: uuid.UUID, ids: list[uuid.UUID]) -> bool:
    """Whether ``user_id``, acting through the API, can read any of ``ids``."""
    return can_read_any_of(conn, [(user_id, ids)])[0]


def can_read_any_of(conn: psycopg.Connection[Any], checks: list[tuple[uuid.UUID, list[uuid.UUID]]]) -> list[bool]:
    """For each (user, ids): whether the user, acting through the API, can read any of the ids; all
    of them in one round trip."""
    done = as_each(conn, [("authenticated", user_id, [("select exists (select 1 from public.knowledge_base "
                                                        "where id = any(%s))", (list(ids),))])
                          for user_id, ids in checks])
    return [bool(group[0][0][0]) for group in done]


def still_readable(conn: psycopg.Connection[Any], subjects: list[Subject],
                   member_map: dict[uuid.UUID, set[uuid.UUID]]) -> list[int]:
    """Per subject: how many of the entries that existed before the migration they can read now,
    from the rule, in one scan. The isolation matrix has proved, by acting as each of them, that
    what they read is exactly the rule's set."""
    existed = expected_figures(conn, existed_only=True)
    return [existed.of(member_map.get(s.user_id, set()))[0] if s.role == "authenticated" else 0 for s in subjects]


APP_STATEMENTS = [
    ("select id, title, content, metadata, created_by, created_at, updated_at "
     "from public.knowledge_base order by created_at desc limit 20", None),
    ("insert into public.knowledge_base (title, content, metadata) values ('app insert', 'x', '{}')", None),
    ("update public.knowledge_base set content = content where id = "
     "(select id from public.knowledge_base order by created_at desc limit 1)", None),
]


def app_queries(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The app's existing queries and an insert that names none of the new columns, as the table
    owner and as service_role; all rolled back, in one round trip."""
    roles = (None, "service_role")
    try:
        done = as_each(conn, [(role, None, APP_STATEMENTS) for role in roles])
    except psycopg.Error as exc:  # one of them failed: the app's queries do not all work
        why = (exc.diag.message_primary if exc.diag else None) or str(exc)
        return [{"as": role or "table owner", "list newest 20": None, "insert without new columns": None,
                 "update": None, "error": why, "pass": False} for role in roles]
    return [{"as": role or "table owner", "list newest 20": len(listed), "insert without new columns": inserted,
             "update": updated, "pass": len(listed) > 0 and inserted == 1 and updated == 1}
            for role, (listed, inserted, updated) in zip(roles, done)]
