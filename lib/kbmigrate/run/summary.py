"""The one-screen summary printed at the end of ``kbmigrate run``."""

from __future__ import annotations

from typing import Any

from kbmigrate import db
from kbmigrate.engine import ledger
from kbmigrate.conninfo import Target


def render(target: Target, manifest: dict[str, Any]) -> str:
    lines = [f"Run {manifest['run_id']} on {target.label}: {manifest['status']}"]
    for s in manifest["steps"]:
        lines.append(f"  {s['notebook'].rsplit('/', 1)[-1]:<28} {s['status']:<10} {s.get('seconds', 0):>7.1f} s")
    with db.connect(target, autocommit=True) as conn:
        rows = [r for r in ledger.for_run(conn, manifest["run_id"]) if r["step"] != "run"]  # not the seal
        if rows:
            applied = [r for r in rows if r["outcome"] == "applied"]
            noop = [r for r in rows if r["outcome"] == "noop"]
            lines.append(f"Ledger: {len(applied)} changes applied, {len(noop)} no-ops")
            by_change: dict[str, int] = {}
            for r in applied:
                by_change[r["change"]] = by_change.get(r["change"], 0) + int(r["rows_affected"] or 0)
            for change, n in by_change.items():
                if n:
                    lines.append(f"  {change:<28} {n:>10,} rows")
        if db.scalar(conn, "select to_regclass('kbmigrate.quarantine') is not null"):
            kbc = db.rows(conn, """select count(*) filter (where is_shared) as shared,
                                          count(*) filter (where workspace_id is not null) as in_workspace,
                                          count(*) filter (where workspace_id is null and not is_shared) as quarantined,
                                          count(*) as total from public.knowledge_base""")[0]
            sections = db.scalar(conn, "select count(*) from public.knowledge_base_sections")
            lines.append(f"Knowledge base now: {kbc['total']:,} entries: {kbc['in_workspace']:,} in a workspace, "
                         f"{kbc['shared']:,} shared, {kbc['quarantined']:,} quarantined; {sections:,} sections")
    return "\n".join(lines)
