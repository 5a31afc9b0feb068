"""What a run changed, in numbers: recorded in the manifest when the run ends, printed as the
one-screen summary of ``kbmigrate run`` and shown at the top of the report."""

from __future__ import annotations

from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine import ledger
from kbmigrate.paths import read_sql


LOST_ACCESS, GAINED_ACCESS = "access lost", "access gained"


def numbers(conn: psycopg.Connection[Any], run_id: str, ledgered: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The run's ledger in numbers (``ledgered``: its rows, when already read), and the knowledge
    base as it is now."""
    out: dict[str, Any] = {}
    rows = [r for r in (ledger.for_run(conn, run_id) if ledgered is None else ledgered) if r["step"] != "run"]  # not a seal (older databases kept them in the ledger)
    if rows:
        outcomes: dict[tuple[str, str], set[str]] = {}  # a change once, however many rows (batches, a re-run)
        for r in rows:
            outcomes.setdefault((r["step"], r["change"]), set()).add(r["outcome"])
        out["changes applied"] = sum("applied" in o for o in outcomes.values())
        out["changes already in effect (no-ops)"] = sum(o == {"noop"} for o in outcomes.values())
        if any("reverted" in o for o in outcomes.values()):
            out["changes reverted"] = sum("reverted" in o for o in outcomes.values())
        by_change: dict[str, int] = {}
        for r in rows:
            if r["outcome"] == "applied" and r["rows_affected"]:
                by_change[r["change"]] = by_change.get(r["change"], 0) + int(r["rows_affected"])
        out.update({f"rows: {change}": n for change, n in by_change.items()})
    there = db.rows(conn, """select to_regclass('kbmigrate.quarantine') is not null
                                    and to_regclass('public.knowledge_base_sections') is not null
                                    and (select count(*) = 2 from pg_attribute  -- a rollback takes them away again
                                         where attrelid = to_regclass('public.knowledge_base')
                                           and attname in ('workspace_id', 'is_shared') and not attisdropped) as migrated,
                                coalesce((select relrowsecurity from pg_class
                                          where oid = to_regclass('public.knowledge_base')), false)
                                    and to_regclass('kbmigrate.membership') is not null as isolated,
                                to_regclass('kbmigrate.legacy_imports') is not null as imported""")[0]
    if there["migrated"]:
        try:
            out.update(_kb_now(conn, isolated=there["isolated"], imported=there["imported"]))
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):  # a run stopped by a lock ends all the same
            out["KB entries now"] = "not counted: another session holds a lock on the KB tables"
    return out


def _kb_now(conn: psycopg.Connection[Any], *, isolated: bool, imported: bool) -> dict[str, Any]:
    """The knowledge base now, its figures in one round trip."""
    queries: list[tuple[str, Any]] = [
        ("""select count(*) as total, count(*) filter (where workspace_id is not null) as in_workspace,
                   count(*) filter (where is_shared) as shared,
                   count(*) filter (where workspace_id is null and not is_shared) as quarantined
            from public.knowledge_base""", None),
        (read_sql("report/review_shared_assigned.sql"), None),
        ("select count(*) as n from public.knowledge_base_sections", None)]
    if isolated:
        queries.append((read_sql("report/lost_own_entries.sql"), None))  # the rule in force now, for every user
        if imported:
            queries.append((read_sql("report/gained_access.sql"), None))
    found = db.batch(conn, queries)
    kb = found[0][0]
    out: dict[str, Any] = {"KB entries now": kb["total"], "in a workspace": kb["in_workspace"], "shared": kb["shared"],
                           "quarantined (listed for review)": kb["quarantined"],
                           "assigned but matching a shared rule (listed for review)": len(found[1]),
                           "sections": found[2][0]["n"]}
    if isolated:
        lost = found[3]
        out[LOST_ACCESS] = (f"{len(lost)} users lost access to {sum(int(r['entries_lost']) for r in lost)} entries "
                            "they created" if lost else "no user lost access to an entry they created")
        if imported:
            got = found[4][0]
            out[GAINED_ACCESS] = (f"{got['users']} users can read {got['entries']} entries imported from the legacy tables"
                                  + (f" ({got['shared']} of them shared with every signed-in user)" if got["shared"] else ""))
    return out


def render(target: Target, record: dict[str, Any]) -> str:
    lines = [f"Run {record['run_id']} on {target.label}: {record['status']}"]
    for s in record["steps"]:
        lines.append(f"  {s['notebook'].rsplit('/', 1)[-1]:<28} {s['status']:<10} {s.get('seconds', 0):>7.1f} s")
    for key, value in (record.get("changed") or {}).items():
        lines.append(f"  {key:<58} {value:>10,}" if isinstance(value, int) else f"  {key}: {value}")
    return "\n".join(lines)
