"""What a run of steps 02-05 leaves behind, compared whole (tests/test_crash.py, test_crash_cli.py,
test_never_hang.py, test_throttle.py), and the uninterrupted run with the failpoints it passes."""

from __future__ import annotations

import math
import os
from typing import Any

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import for_step

from conftest import drop, gated, new_demo
from crash_child import STEPS, apply_all

BATCHES = 4  # the backfill's batch size is chosen so that it takes at least this many batches

# Imported entries and seeded sections get fresh uuids in each run, and imports an import_date:
# compare what they are, not those. The schema and the ledger are compared too: a change that a
# resume skipped leaves the data alone but not the catalog, and the ledger must say which
# change is in effect (applied once; the resume's no-ops and the failed rows are not outcomes).
CANONICAL = {
    "knowledge_base": """select md5(string_agg(x, '|' order by x)) from (
        select concat_ws(',', coalesce(kb.metadata ->> 'original_id', kb.id::text), kb.title, kb.content, kb.workspace_id,
                         s.name, kb.is_shared, kb.created_at, kb.updated_at, kb.metadata - 'import_date') as x
        from knowledge_base kb left join knowledge_base_sections s on s.id = kb.section_id) t""",
    "sections": """select md5(string_agg(concat_ws(',', workspace_id, name, description, display_order, icon, is_active),
                                      '|' order by workspace_id, name)) from knowledge_base_sections""",
    "quarantine": "select md5(string_agg(entry_id::text || reason, '|' order by entry_id)) from kbmigrate.quarantine",
    "imports": "select md5(string_agg(source || original_id, '|' order by source, original_id)) from kbmigrate.legacy_imports",
    "counts": "select (select count(*) from knowledge_base)::text || '/' || (select count(*) from knowledge_base_sections)",
    "columns": """select string_agg(format('%s.%s %s %s %s', c.table_schema, c.table_name, c.column_name, c.data_type,
                                            c.is_nullable), '; ' order by c.table_schema, c.table_name, c.column_name)
                  from information_schema.columns c where c.table_schema in ('public', 'kbmigrate')""",
    "constraints": """select string_agg(format('%s %s %s %s', conrelid::regclass, conname, convalidated,
                                                pg_get_constraintdef(oid)), '; ' order by conrelid::regclass::text, conname)
                      from pg_constraint where connamespace in ('public'::regnamespace, 'kbmigrate'::regnamespace)""",
    "indexes": """select string_agg(format('%s valid=%s %s', i.indexrelid::regclass, i.indisvalid,
                                            pg_get_indexdef(i.indexrelid)), '; ' order by i.indexrelid::regclass::text)
                  from pg_index i join pg_class c on c.oid = i.indexrelid
                  where c.relnamespace in ('public'::regnamespace, 'kbmigrate'::regnamespace)""",
    "rls": """select string_agg(format('%s rls=%s %s', relname, relrowsecurity, relforcerowsecurity), '; ' order by relname)
              from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'""",
    "policies": """select string_agg(format('%s %s %s %s %s %s', tablename, policyname, cmd, roles, qual, with_check),
                                     '; ' order by tablename, policyname) from pg_policies""",
    "functions": """select string_agg(format('%s(%s) %s %s %s %s', p.proname, pg_get_function_identity_arguments(p.oid),
                                              md5(p.prosrc), p.prosecdef, p.proconfig, p.proacl), '; ' order by p.proname)
                    from pg_proc p where p.pronamespace in ('public'::regnamespace, 'kbmigrate'::regnamespace)""",
    "views": """select string_agg(format('%s %s %s', c.relname, c.reloptions, md5(pg_get_viewdef(c.oid))), '; ' order by c.relname)
                from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind = 'v'""",
    "ledger": """select string_agg(change || ':' || outcome, ', ' order by change) from (
                   select distinct change, outcome from kbmigrate.ledger
                   where step in ('02_schema', '03_backfill', '04_seed_sections', '05_import_legacy')
                     and outcome in ('applied', 'skipped')) t""",
}


def state(target: Target) -> dict[str, str]:
    with db.connect(target) as conn:
        return {k: db.scalar(conn, q) for k, q in CANONICAL.items()}


def batch_size(server: Target) -> int:
    probe = new_demo(server, "kbt_crash_probe")
    try:
        with db.connect(probe) as conn:
            pending = int(db.scalar(conn, "select count(*) from knowledge_base where workspace_id is null"))
    finally:
        drop(server, probe)
    assert pending >= BATCHES, "the demo has too few entries without a workspace for a backfill of several batches"
    return math.ceil(pending / BATCHES)


def reference(server: Target) -> dict[str, Any]:
    """An uninterrupted run of steps 02-05 and the failpoints it passed: one in each change, one in
    each backfill batch, one in each concurrent index build."""
    params = RunParams(batch_size=batch_size(server))
    target = new_demo(server, "kbt_crash_ref")
    run_id = f"reference_{os.getpid()}"  # its drill's scratch database is named after it: one per test process
    try:
        gated(target, run_id, params)
        apply_all(target, params, run_id)
        expected = state(target)
        with db.connect(target) as conn:
            batches = int(db.scalar(conn, "select count(*) from kbmigrate.ledger where run_id = %s "
                                          "and change = 'backfill_workspace_ids'", (run_id,)))
    finally:
        drop(server, target)
    changes = [c for step in STEPS for c in for_step(step, params)]
    points = [c.name for c in changes if not c.has("batched")]
    points += [f"backfill_workspace_ids@{n}" for n in range(1, batches + 1)]
    points += [f"{c.name}:building" for c in changes if c.has("notx")]
    assert batches >= BATCHES and sum(p.endswith(":building") for p in points) == 3, points
    return {"params": params, "state": expected, "points": points}
