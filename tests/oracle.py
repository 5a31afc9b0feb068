"""Independent expectations: the SPEC's rules re-implemented in plain Python over raw rows.

Nothing here calls kbmigrate's SQL; tests compare what the database holds with what these
functions compute from the same raw data.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


def fetch(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        return cur.fetchall()


def matches_shared_rule(title: str | None, metadata: dict[str, Any] | None) -> bool:
    """SPEC step 4: metadata->>'is_shared' = 'true', metadata->>'visibility' = 'global', or a
    title containing [GLOBAL] in any letter case. (->> of JSON true is the text 'true'.)"""
    m = metadata or {}
    is_shared = m.get("is_shared")
    if is_shared is True or is_shared == "true":
        return True
    if m.get("visibility") == "global":
        return True
    return "[global]" in (title or "").lower()


def first_joined_workspace(memberships: list[dict[str, Any]]) -> dict[uuid.UUID, uuid.UUID]:
    """user -> the workspace joined first; ties go to the smaller workspace id (uuid byte order)."""
    best: dict[uuid.UUID, tuple[datetime, uuid.UUID]] = {}
    for m in memberships:
        key = (m["joined_at"], m["workspace_id"])
        if m["user_id"] not in best or key < best[m["user_id"]]:
            best[m["user_id"]] = key
    return {u: w for u, (_, w) in best.items()}


def classify_kb(entries: list[dict[str, Any]], memberships: list[dict[str, Any]]) -> dict[str, list[uuid.UUID]]:
    """What SPEC step 4 must do with each entry, by entry id."""
    first = first_joined_workspace(memberships)
    out: dict[str, list[uuid.UUID]] = defaultdict(list)
    for e in entries:
        shared = matches_shared_rule(e["title"], e["metadata"])
        if e["workspace_id"] is not None:
            out["assigned"].append(e["id"])
            if shared:
                out["assigned_matching_shared"].append(e["id"])
        elif shared:
            out["shared"].append(e["id"])
        elif e["created_by"] is None:
            out["quarantine_no_creator"].append(e["id"])
        elif e["created_by"] not in first:
            out["quarantine_creator_without_workspace"].append(e["id"])
        else:
            out["backfill_from_creator"].append(e["id"])
    return out


def readable_ids(entries: list[dict[str, Any]], member_of: set[uuid.UUID], role: str) -> set[uuid.UUID]:
    """SPEC "The database after": an authenticated user reads the shared rows and the rows of the
    workspaces they are a member of; quarantined rows nobody; anon nothing."""
    if role != "authenticated":
        return set()
    return {e["id"] for e in entries if e["is_shared"] or (e["workspace_id"] is not None and e["workspace_id"] in member_of)}
