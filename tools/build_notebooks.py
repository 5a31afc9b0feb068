"""Write notebooks/*.ipynb from the cell lists below (run: make notebooks).

The notebooks are the runbook a DBA reads; this file is where their cells are edited, so the
seven pages share one parameters cell and one setup pattern. tests/test_notebooks.py fails when
the committed notebooks differ from what this file writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parents[1] / "notebooks"

PARAMETERS = '''\
# Parameters: `kbmigrate run` (papermill) overrides these. The connection is NOT a parameter:
# it comes from the environment (PGHOST, PGPORT, PGDATABASE, PGUSER, and the password from
# PGPASSWORD, ~/.pgpass or a service file), so no secret is ever written into a notebook.
from typing import Optional

run_id: str = ""  # the run this step belongs to; empty when stepping by hand (manual-<date>-<user>)
membership_table: str = "public.workspace_members"  # [schema.]table holding workspace memberships
membership_user_column: str = "user_id"  # its user column
membership_workspace_column: str = "workspace_id"  # its workspace column
membership_joined_column: str = "joined_at"  # its join-time column (first_joined strategy)
backfill_strategy: str = "first_joined"  # first_joined (earliest membership) or current_workspace
sections_file: str = "sql/data/default_sections.csv"  # the default sections, CSV, relative to the repository
batch_size: int = 5000  # KB entries per backfill transaction
import_legacy: Optional[bool] = None  # import the legacy tables; None means yes when they exist
lock_timeout: str = "1s"  # how long a change may wait for a lock before it retries
statement_timeout: str = "5min"  # the longest any one statement may run
lock_retries: int = 5  # retries, with backoff, when a lock is not granted in time
accept_changed_sql: bool = False  # go on although a deploy file changed after the ledger says it was applied'''


def setup(step: str, extra: str = "") -> str:
    return (f"import pandas as pd\nfrom kbmigrate import nb{extra}\n\n"
            f'kb = nb.start("{step}", globals())\nkb.info()')


HOW_TO_RUN = ("*Runs headlessly under `kbmigrate run`; to step through by hand, open it from `make lab` "
              "(which points the kernel at the demo database) and run the cells in order.*")

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["00_preflight"] = [
    ("md", f"""# 00 · Preflight: GO or NO-GO

Before anything changes, compare the database with what the runbook expects (SPEC step 1):
server version, the Supabase auth pieces, the shape of every table the migration touches,
the membership table named in the parameters, privileges, sessions that hold locks on the
target tables or keep long transactions open, and room on disk for the backup.

**This notebook only reads.** A NO-GO stops the run here with the database untouched (not even
the ledger is created).

**If it says NO-GO:** read the `detail` column. Schema drift (a missing column, a KB table under
another name) needs a decision by a person, not a retry; a long transaction or lock can be waited
out or ended; then run again.

{HOW_TO_RUN}"""),
    ("code", PARAMETERS + """
long_tx_seconds: float = 60.0  # a transaction open longer than this, or any lock on a target table, is a NO-GO"""),
    ("code", setup("00_preflight", ", preflight")),
    ("md", "## The checks\nEach row is one check. `INFO` rows are for the record and never stop the run."),
    ("code", "rows = preflight.checks(kb.conn, kb.target, kb.params, long_tx_seconds=long_tx_seconds)\nreport = pd.DataFrame(rows)\nreport"),
    ("md", "## Row counts before the migration\nThe same figures the backup step records at dump time (shown here with `%sql`)."),
    ("code", """%load_ext sql
%config SqlMagic.displaycon = False
%config SqlMagic.feedback = False
%config SqlMagic.autopandas = True
%sql postgresql+psycopg://"""),
    ("code", """%%sql
select 'workspaces' as table_name, count(*) as row_count from public.workspaces
union all select 'users', count(*) from public.users
union all select 'knowledge_base', count(*) from public.knowledge_base"""),
    ("md", "## Verdict\nThe run goes on only when no check says NO-GO."),
    ("code", """nb.check(preflight.go(rows), "preflight says NO-GO", report[report.status == "NO-GO"])
print("GO: every check passed")"""),
]

NOTEBOOKS["01_backup"] = [
    ("md", f"""# 01 · Backup

A dump of the database (`pg_dump`, custom format) before anything changes (SPEC step 2),
made with the `pg_dump` of the server's own major version (the rollback will need the matching
`pg_restore`). The dump and the per-table row counts are taken from **one snapshot**, so they
describe the same instant. The file goes to `backups/<run_id>/` with mode 0600 (it holds every
row); its sha256, size, archive listing and the row counts go into the run's manifest.

**What it covers.** Every schema the migration touches and every schema of the application's
own. On Supabase some schemas belong to the platform (`auth`, `storage`, `vault`, ...): the
migrating user may not be able to read them, and could never restore them; they are left out,
each with its reason in the table below and in the manifest. The migration changes none of them.

Then the **restore drill**: the dump is restored into a scratch database on the **local**
embedded server — never on the target, so it costs production nothing and needs no privilege
Supabase does not give. What the dump's objects need from outside it (`auth.uid()`, the
`auth.users` table a foreign key points to, the API roles) gets stand-ins there first; foreign
keys into platform tables cannot be checked without the platform's rows and are listed. Every
table's row count and checksum must equal those at dump time. The scratch database is dropped.

**Expect:** one dump file, a non-empty archive listing, the scope, row counts for every table,
a drill whose every row matches.

**If it fails:** nothing has changed yet. No client of the server's version: install it (the
message says how). No room on disk: free space or move `backups/`.

{HOW_TO_RUN}"""),
    ("code", PARAMETERS),
    ("code", setup("01_backup", ", backup, drill")),
    ("md", "## Dump"),
    ("code", """info = backup.dump(kb.target, kb.run_id, kb.params)
pd.DataFrame([{k: info[k] for k in ("path", "sha256", "bytes", "restore_list_entries", "pg_dump_version",
                                     "pg_restore_version", "seconds")}]).T.rename(columns={0: "value"})"""),
    ("md", "## What the dump covers\nThe schemas dumped, and each schema left out with the reason."),
    ("code", """covered = pd.DataFrame([{"schema": s, "in the backup": "yes", "reason": ""} for s in info["scope"]["schemas"]]
                       + [{"schema": x["schema"], "in the backup": "no", "reason": x["reason"]} for x in info["scope"]["left_out"]])
covered"""),
    ("md", "## Row counts at dump time"),
    ("code", """counts = pd.Series(info["row_counts"], name="rows").to_frame()
counts"""),
    ("md", "## Checks\nThe file on disk has the recorded checksum, is private, and pg_restore can list it."),
    ("code", """from pathlib import Path
from kbmigrate.paths import REPO_ROOT
dump_file = REPO_ROOT / info["path"]
nb.check(backup.sha256_file(dump_file) == info["sha256"], "the dump's sha256 changed after writing")
nb.check(dump_file.stat().st_mode & 0o077 == 0, f"{dump_file} is readable by others")
nb.check(info["restore_list_entries"] > 0, "pg_restore --list shows no entries")
nb.check("public.knowledge_base" in info["row_counts"], "the dump does not cover public.knowledge_base")
print(f"backup ok: {info['path']} ({info['bytes']:,} bytes)")"""),
    ("md", "## Restore drill\nThe dump restored into a scratch database on the local server, compared table by table with the figures taken at dump time."),
    ("code", """result = drill.run(info, kb.run_id)
backup.record(kb.run_id, "restore_drill", result)
print(f"restored into {result['scratch_database']}, {result['where']}, in {result['seconds']} s (dropped since)")
pd.DataFrame({"stood in for the platform's objects": result["stand_ins"] or ["(none needed)"]})"""),
    ("code", """pd.DataFrame({"foreign keys into the platform's tables, not checked by the drill": result["unchecked_foreign_keys"] or ["(none)"]})"""),
    ("code", """tables = pd.DataFrame(result["tables"])
nb.check(result["ok"], "the restore drill does not match the dump-time figures",
         tables[(tables["rows at dump"] != tables["rows restored"]) | ~tables["checksum equal"]])
print("restore drill ok: every table has its rows and its exact contents")
tables"""),
]

NOTEBOOKS["02_schema"] = [
    ("md", f"""# 02 · Schema: columns, sections, constraints, indexes, RLS

The structural changes of SPEC step 3, each one a file in `sql/deploy/` with its check in
`sql/verify/`, applied in the order of `sql/plan.txt`:

| change | what |
|---|---|
| `ledger` | the `kbmigrate` schema: the ledger, the quarantine list, the legacy import log |
| `kb_columns` | `knowledge_base.workspace_id`, `is_shared boolean not null default false`, `section_id` (catalog-only, no rewrite) |
| `sections_table` | `knowledge_base_sections`, unique `(workspace_id, name)` (an existing table is kept) |
| `membership_view` | `kbmigrate.membership`: the membership table under fixed column names |
| `kb_constraints` | foreign keys added `NOT VALID`: workspace, and section-in-the-same-workspace; a shared entry has no workspace |
| `kb_constraints_validate` | validated under `SHARE UPDATE EXCLUSIVE` (the app keeps reading and writing) |
| `index_*` | built `CONCURRENTLY`, outside a transaction |
| `rls_helpers` | `kb_private.my_workspace_ids()`: stable, security definer, fixed search_path, not callable by anon |
| `rls_policies` | RLS on both tables, policies `to authenticated` |
| `sections_view` | `vw_workspace_sections` with `security_invoker = true` |

Every change runs in its own transaction with `lock_timeout` and `statement_timeout`, writes its
ledger row in that transaction, and retries a bounded number of times when a lock is busy. A
change whose verify already passes is recorded as a **no-op** and not applied again.

**If it fails:** the failed change was rolled back; the message names it and the reason. A lock
timeout means a busy table: find the blocker in `pg_stat_activity`, then `kbmigrate run --from schema`.

{HOW_TO_RUN}"""),
    ("code", PARAMETERS),
    ("code", setup("02_schema")),
    ("md", "## Apply"),
    ("code", "applied = kb.apply()\napplied"),
    ("md", "## Verify: the new columns and constraints"),
    ("code", """kb.query(\"\"\"
select a.attname as column_name, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as not_null,
       pg_get_expr(d.adbin, d.adrelid) as default_value
from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where a.attrelid = 'public.knowledge_base'::regclass and a.attname in ('workspace_id', 'is_shared', 'section_id')
order by a.attnum\"\"\")"""),
    ("code", """constraints = kb.query(\"\"\"
select conname as constraint_name, convalidated as validated, pg_get_constraintdef(oid) as definition
from pg_constraint where conrelid = 'public.knowledge_base'::regclass and contype in ('f', 'c') order by conname\"\"\")
nb.check(bool(constraints.validated.all()), "a knowledge_base constraint is not validated", constraints[~constraints.validated])
constraints"""),
    ("md", "## Verify: RLS and policies\nRLS must be on for both tables, and every policy must be `to authenticated`."),
    ("code", """policies = kb.query(\"\"\"
select p.tablename, p.policyname, p.cmd, p.roles::text as roles, p.qual as using_expr, p.with_check
from pg_policies p where p.schemaname = 'public' and p.tablename in ('knowledge_base', 'knowledge_base_sections')
order by p.tablename, p.policyname\"\"\")
rls = kb.query("select relname, relrowsecurity as rls_enabled from pg_class where oid in ('public.knowledge_base'::regclass, 'public.knowledge_base_sections'::regclass)")
nb.check(bool(rls.rls_enabled.all()), "RLS is not enabled on every KB table", rls)
nb.check(bool((policies.roles == "{authenticated}").all()), "a policy is not limited to authenticated", policies)
policies"""),
    ("md", "## Verify: indexes"),
    ("code", """indexes = kb.query(\"\"\"
select c.relname as index_name, t.relname as table_name, i.indisvalid as valid, pg_get_indexdef(c.oid) as definition
from pg_index i join pg_class c on c.oid = i.indexrelid join pg_class t on t.oid = i.indrelid
where c.relname in ('knowledge_base_workspace_id_idx', 'knowledge_base_section_created_idx', 'kbmigrate_membership_user_workspace_idx')\"\"\")
nb.check(bool(indexes.valid.all()), "an index is invalid", indexes[~indexes.valid])
indexes"""),
    ("md", "## Ledger of this step"),
    ("code", "kb.ledger()"),
]

NOTEBOOKS["03_backfill"] = [
    ("md", f"""# 03 · Backfill workspace ids

SPEC step 4, for entries whose `workspace_id` is NULL (and only those — an entry that already
has a workspace is never moved):

1. **Shared rules first:** `metadata->>'is_shared' = 'true'`, `metadata->>'visibility' = 'global'`,
   or `[GLOBAL]` in the title in any letter case → `is_shared = true`, no workspace.
2. **Otherwise the creator's workspace.** Strategy `first_joined` (default): the workspace the
   creator joined first, ties to the smaller workspace id, every membership counts (inactive
   workspaces too — they are counted below). Strategy `current_workspace`: `users.current_workspace_id`.
3. **Otherwise quarantined:** left without a workspace and not shared, visible to nobody but the
   service role, and listed in `kbmigrate.quarantine` for a person to decide.

It runs in **batches** (`batch_size` entries by id), each its own short transaction with its own
ledger row, with a progress bar. Interrupted, it resumes by itself: the next run finds only the
entries not yet done. Timestamps are not touched.

**Expect:** the counts below add up; the chart shows where entries landed; two lists for people:
the quarantine list and the review list (entries that already had a workspace but match a shared
rule — listed, never published).

**If it fails:** the batch that failed was rolled back; the batches before it are committed and
recorded. Fix the cause and run again (`kbmigrate run --from backfill`): it picks up where it
stopped. A check below that fails means the backfill touched what it must not: stop and review.

{HOW_TO_RUN}"""),
    ("code", PARAMETERS),
    ("code", setup("03_backfill")),
    ("md", "## Before\nA copy of every entry's workspace and timestamps, kept in this session, to prove afterwards that nothing else moved."),
    ("code", """kb.conn.execute("drop table if exists pg_temp.kb_before")
kb.conn.execute("create temp table kb_before as select id, workspace_id, is_shared, created_at, updated_at from public.knowledge_base")
before = kb.query("report/backfill_counts.sql")
before"""),
    ("md", "## Apply, in batches"),
    ("code", "applied = kb.apply()\napplied"),
    ("md", "## After"),
    ("code", """after = kb.query("report/backfill_counts.sql")
pd.concat([before.assign(when="before"), after.assign(when="after")]).set_index("when")"""),
    ("md", "## Checks\nNo entry appeared or vanished; no entry that had a workspace lost or changed it; no timestamp changed."),
    ("code", """moved = kb.query(\"\"\"
select b.id, b.workspace_id as before, kb.workspace_id as after
from kb_before b join public.knowledge_base kb using (id)
where b.workspace_id is not null and kb.workspace_id is distinct from b.workspace_id\"\"\")
touched = kb.query(\"\"\"
select b.id from kb_before b join public.knowledge_base kb using (id)
where kb.created_at is distinct from b.created_at or kb.updated_at is distinct from b.updated_at\"\"\")
nb.check(int(after.total[0]) == int(before.total[0]), "the number of KB entries changed during the backfill")
nb.check(moved.empty, "entries that already had a workspace were moved", moved)
nb.check(touched.empty, "the backfill changed content timestamps", touched)
print("ok: same entries, none moved, no timestamp touched")"""),
    ("md", "## Entries per workspace\nThe 30 workspaces with the most entries; inactive workspaces in grey."),
    ("code", """per_ws = kb.query(\"\"\"
select w.name, w.is_active, count(kb.id) as entries
from public.workspaces w join public.knowledge_base kb on kb.workspace_id = w.id
group by w.id order by entries desc, w.name limit 30\"\"\")
ax = per_ws.plot.barh(x="name", y="entries", figsize=(8, max(3, len(per_ws) * 0.25)), legend=False,
                      color=["#4472c4" if a else "#a0a0a0" for a in per_ws.is_active])
ax.invert_yaxis(); ax.set_xlabel("KB entries"); ax.set_ylabel("");"""),
    ("md", "## Quarantine list\nNo workspace, not shared: nobody but the service role sees these. Assign or share them by hand."),
    ("code", "quarantine = kb.query(\"report/quarantine.sql\")\nprint(f\"{len(quarantine)} quarantined entries\")\nquarantine.head(50)"),
    ("md", "## Review list\nEntries that already had a workspace but match a shared rule. The migration does not publish them: a person decides."),
    ("code", "review = kb.query(\"report/review_shared_assigned.sql\")\nprint(f\"{len(review)} entries to review\")\nreview.head(50)"),
    ("md", "## Ledger of this step (one row per batch)"),
    ("code", "kb.ledger()"),
]

NOTEBOOKS["04_seed_sections"] = [
    ("md", f"""# 04 · Seed the default sections

SPEC step 5: every **active** workspace gets the default sections, in order. The list is data —
the sections file named in the parameters (`sql/data/default_sections.csv` by default) — not code.
Sections a workspace already has are kept (unique `(workspace_id, name)`); re-running adds nothing.

**Expect:** every active workspace has every default section; inactive workspaces get none.

**If it fails:** a malformed sections file is refused before anything runs (the message names the
line). A workspace still lacking a section after the insert points at a conflicting existing
section: the check lists the workspaces.

{HOW_TO_RUN}"""),
    ("code", PARAMETERS),
    ("code", setup("04_seed_sections")),
    ("md", "## The default sections"),
    ("code", "defaults = pd.DataFrame(kb.params.sections())\ndefaults"),
    ("md", "## Apply"),
    ("code", "kb.apply()"),
    ("md", "## Checks"),
    ("code", """lacking = kb.query(\"\"\"
select w.id as workspace_id, w.name, s.name as missing_section
from public.workspaces w
cross join jsonb_to_recordset(%s::jsonb) as s(name text)
where w.is_active and not exists (select 1 from public.knowledge_base_sections k where k.workspace_id = w.id and k.name = s.name)\"\"\",
    (defaults.to_json(orient="records"),))
nb.check(lacking.empty, "active workspaces lack default sections", lacking)
per_ws = kb.query(\"\"\"
select w.is_active, count(distinct w.id) as workspaces, count(s.id) as sections
from public.workspaces w left join public.knowledge_base_sections s on s.workspace_id = w.id group by w.is_active\"\"\")
per_ws"""),
    ("code", "kb.ledger()"),
]

NOTEBOOKS["05_import_legacy"] = [
    ("md", f"""# 05 · Import legacy data

SPEC step 6 (optional: `import_legacy`; by default on when the legacy tables exist). Each legacy
row becomes one KB entry in its workspace's matching section — ICP → *ICP*, product → *Products*,
competitor → *Competitors*, persona → *Personas* — **once, ever** (`kbmigrate.legacy_imports`).

* Title: the row's title, else its name field (`ICP: <company_name>`, `product_name`,
  `competitor_name`/`company_name`, `persona_name`).
* Content: the description, then one `Label: value` line per descriptive field present.
* Metadata: `imported_from`, `original_id`, `import_date`, the identifying fields, and the legacy
  `metadata` nested under `legacy_metadata` (never merged: a legacy key must not change who sees the entry).
* `created_by` = `created_by`, else `user_id`; the legacy `created_at` is kept.

A missing legacy table is skipped with a note. Rows that cannot land (no, unknown or inactive
workspace; no section) are **counted and listed**, not dropped silently. Any other error stops the step.

**If it fails:** the failing source's import was rolled back as a whole (the sources before it
stay imported, once). Fix the cause and run again; rows already imported are never imported twice.
`kbmigrate revert` of one source arrives with the rollback work.

{HOW_TO_RUN}"""),
    ("code", PARAMETERS),
    ("code", setup("05_import_legacy", "\nfrom psycopg import sql\nfrom kbmigrate.paths import read_sql")),
    ("md", "## Apply"),
    ("code", "applied = kb.apply()\napplied"),
    ("md", "## Per source: imported, and what could not land\nEvery legacy row is either imported or listed with its reason."),
    ("code", """SOURCES = {"legacy_icp_data": "ICP", "legacy_product_data": "Products",
           "legacy_competitor_data": "Competitors", "legacy_persona_data": "Personas"}
summary, unlanded = [], []
for source, section in SOURCES.items():
    if kb.scalar("select to_regclass(%s) is null", (f"public.{source}",)):
        summary.append({"source": source, "rows": 0, "imported": 0, "not landed": 0, "note": "table absent: skipped"})
        continue
    if kb.params.import_legacy is False:
        summary.append({"source": source, "rows": None, "imported": None, "not landed": None, "note": "import_legacy is false: skipped"})
        continue
    total = kb.scalar(sql.SQL("select count(*) from {}").format(sql.Identifier("public", source)))
    imported = kb.scalar("select count(*) from kbmigrate.legacy_imports where source = %s", (source,))
    left = kb.query(sql.SQL(read_sql("report/legacy_unlanded.sql")).format(source=sql.Identifier("public", source)),
                    {"section": section, "source_name": source})
    summary.append({"source": source, "rows": total, "imported": imported, "not landed": len(left), "note": ""})
    unlanded.append(left.assign(source=source))
summary = pd.DataFrame(summary)
summary"""),
    ("code", """done = summary[summary.note == ""]
nb.check(bool((done["imported"] + done["not landed"] == done["rows"]).all()),
         "legacy rows neither imported nor listed", done)
not_landed = pd.concat(unlanded) if unlanded else pd.DataFrame()
nb.check(not_landed.empty or not (not_landed.reason == "not imported yet").any(),
         "legacy rows could land but were not imported", not_landed[not_landed.reason == "not imported yet"] if len(not_landed) else None)
not_landed.groupby(["source", "reason"]).size().rename("rows").to_frame() if len(not_landed) else "every row landed\""""),
    ("md", "### The rows that did not land"),
    ("code", "not_landed.head(100)"),
    ("md", "## A few imported entries"),
    ("code", """kb.query(\"\"\"
select kb.metadata ->> 'imported_from' as source, left(kb.title, 50) as title, left(replace(kb.content, E'\\n', ' | '), 90) as content, s.name as section
from public.knowledge_base kb join public.knowledge_base_sections s on s.id = kb.section_id
where kb.metadata ? 'imported_from' order by kb.metadata ->> 'imported_from', kb.title limit 12\"\"\")"""),
    ("code", "kb.ledger()"),
]

NOTEBOOKS["06_smoke_tests"] = [
    ("md", f"""# 06 · Smoke tests: structure, integrity, and isolation proved by acting as users

SPEC step 7. The original package tested RLS as the table owner, for whom RLS does not apply.
Here every probe runs **the way the Supabase API does**: `set local role authenticated` (or
`anon`) with the user's JWT claims in `request.jwt.claims`, inside a transaction that is
always rolled back — nothing is left behind.

For a member of every workspace (all up to `smoke_all_up_to`, then a seeded sample), the user
with the most workspaces, a signed-in user with none, and `anon`, the entries and sections they
can read must **equal** the set computed as the admin from the membership table; they can create
and edit in their own workspace; inserting into another workspace, moving a row there, or
updating/deleting its rows is refused or touches 0 rows; shared rows are readable, not writable;
quarantined rows are invisible. **Any leak fails the run** and lists the rows.

**If it fails:** treat a leak as an incident: the policies are live. Read the offending rows
below, then either fix the policy and run `kbmigrate run --only smoke`, or roll back.

{HOW_TO_RUN}"""),
    ("code", PARAMETERS + """
smoke_all_up_to: int = 50  # probe a member of every workspace up to this many workspaces
smoke_sample: int = 25  # beyond that, a seeded random sample of this many workspaces
smoke_seed: int = 1  # the sample's seed"""),
    ("code", setup("06_smoke_tests", ", smoke, plan\nfrom kbmigrate.changes import verify_passes")),
    ("md", "## Structure: every change of the plan is in effect\nEach `sql/verify` script, run again now, in a transaction that is rolled back."),
    ("code", """settings = kb.params.settings(kb.run_id)
structure = pd.DataFrame([{"change": c.name, "step": c.step, "ok": ok, "problem": why}
                          for c in plan.load() if not c.has("optional")
                          for ok, why in [verify_passes(kb.conn, c, kb.params, settings)]])
nb.check(bool(structure.ok.all()), "a change is not in effect", structure[~structure.ok])
structure"""),
    ("md", "## Integrity\nEvery figure must be 0."),
    ("code", """integrity = kb.query("report/integrity.sql")
bad = integrity.loc[:, (integrity != 0).any()]
nb.check(bad.empty, "integrity problems", bad)
integrity.T.rename(columns={0: "count"})"""),
    ("md", "## Isolation matrix\nOne row per user probed. `leaked` lists entries a user could read but should not; `missing` the reverse."),
    ("code", """member_map = smoke.memberships(kb.conn, kb.params)
subjects = smoke.subjects(kb.conn, kb.params, all_up_to=smoke_all_up_to, sample=smoke_sample, seed=smoke_seed,
                          member_map=member_map)
matrix = pd.DataFrame([smoke.probe(kb.conn, kb.params, s, member_map) for s in subjects])
view = matrix.assign(leaked=matrix.leaked.map(len), missing=matrix.missing.map(len))
view"""),
    ("code", """leaks = matrix[matrix.leaked.map(len) > 0].explode("leaked")[["user", "leaked"]]
nb.check(leaks.empty, "RLS LEAK: users can read entries outside their workspaces", leaks)
nb.check(bool(matrix["pass"].all()), "isolation checks failed", view[~matrix["pass"]])
print(f"isolation proved for {len(matrix)} users: no leak, nothing missing, writes confined")"""),
    ("md", """## Before and after, for the users probed
The old rule, before the migration: **the knowledge base was global** — RLS was off and every
signed-in user could read every entry (`anon` too, through Supabase's default grants).
`lost` is what each user could read before and cannot now."""),
    ("code", """total = int(kb.scalar("select count(*) from public.knowledge_base"))
before_after = matrix[["user", "role", "workspaces"]].assign(before=total, after=matrix.reads, lost=total - matrix.reads)
before_after"""),
    ("md", """## Who lost access to entries they created
Computed as the admin from the rules for **every** user; the first few are then confirmed by
acting as them. These people need a word (or their entries a workspace) after the migration."""),
    ("code", """lost_own = kb.query("report/lost_own_entries.sql")
for row in lost_own.head(5).itertuples():
    reads = smoke.readable_ids(kb.conn, row.user_id)
    nb.check(not (set(row.example_ids) & reads), f"user {row.user_id} can still read entries listed as lost", None)
print(f"{len(lost_own)} users lost access to {int(lost_own.entries_lost.sum()) if len(lost_own) else 0} entries they created")
lost_own.head(50)"""),
    ("md", "## Functions and the API roles\nOnly `kb_private.my_workspace_ids()` may be executed by `authenticated`; nothing by `anon`."),
    ("code", """functions = kb.query("report/function_privileges.sql")
wrong = functions[functions.anon_can_execute | (functions.authenticated_can_execute & ~functions.meant_for_authenticated)]
nb.check(wrong.empty, "the API roles can execute functions they must not", wrong)
functions"""),
    ("md", "## The application keeps working\nIts existing queries, and an insert naming none of the new columns, as the table owner and as `service_role` (rolled back)."),
    ("code", """app = pd.DataFrame(smoke.app_queries(kb.conn))
nb.check(bool(app["pass"].all()), "the app's queries fail after the migration", app)
app"""),
]

NOTEBOOKS["07_rollback"] = [
    ("md", """# 07 · Rollback: back to the pre-migration state, proved

On demand, outside the default plan: `kbmigrate rollback --run <run_id> --confirm <run_id>`.
It restores **that run's backup** in place (SPEC step 8):

1. **Refuses** unless the backup file still has the sha256 recorded in the run's manifest, and
   while another kbmigrate run holds the database.
2. **Counts the application's writes since the backup** to the KB tables — rows inserted,
   updated or deleted by users, not the migration's own changes. A rollback would lose them, so
   it refuses unless `accept_loss` is set (`--accept-loss`).
3. **Restores, all or nothing**, in one transaction: drops what the migration added, runs the
   restore script `pg_restore` (of the server's version) writes for the KB tables — with their
   indexes, constraints, policies and dependent views — checks the restored tables' checksums
   against the backup's, and writes the ledger row. Other tables are not touched; the ledger is
   kept. Before the first statement, the client, the archive and the privileges are checked.
4. **Proves it**: a schema-only dump now must equal the schema in the backup (the `kbmigrate`
   ledger schema aside), and every table's row count and checksum must equal those at backup time.

**If it fails** at step 3, the transaction is undone: the database is exactly as it was before
the rollback started (the migration's objects, data and records included), and the application
never saw a half-restored table. Fix the cause (the message says it) and run it again."""),
    ("code", PARAMETERS + """
rollback_of: str = ""  # the run whose backup to restore
accept_loss: bool = False  # go on although the application wrote to the KB tables after the backup"""),
    ("code", setup("07_rollback", ", rollback")),
    ("md", "## The backup to restore"),
    ("code", """nb.check(bool(rollback_of), "no run to roll back: set rollback_of")
manifest = rollback.load(rollback_of)  # refuses a missing or altered backup
info = manifest["backup"]
pd.DataFrame([{"run": rollback_of, "backup": info["path"], "sha256": info["sha256"][:16] + "…", "bytes": info["bytes"],
               "taken by": info["pg_dump_version"], "run status": manifest["status"]}])"""),
    ("md", "## Writes since the backup that a rollback would lose"),
    ("code", """writes = pd.DataFrame(rollback.app_writes(kb.conn, manifest))
lost = int(writes[["inserted", "updated", "deleted"]].sum().sum()) if len(writes) else 0
writes"""),
    ("code", """nb.check(lost == 0 or accept_loss,
         f"the application wrote {lost} rows to the KB tables after the backup; a rollback loses them. "
         "Export what must be kept, then run again with --accept-loss", writes)
print("no writes would be lost" if lost == 0 else f"accepting the loss of {lost} rows (accept_loss)")"""),
    ("md", "## Restore"),
    ("code", """restored = rollback.restore(kb.target, rollback_of, manifest, kb.params, kb.run_id, lost_rows=lost)
pd.DataFrame([restored])"""),
    ("md", "## Proof: schema\nA schema-only dump taken now against the schema inside the backup."),
    ("code", """diff = rollback.schema_diff(kb.target, info)
nb.check(not diff, "the schema differs from the backup's", pd.DataFrame({"diff": diff[:60]}))
print("schema identical to the backup's")"""),
    ("md", "## Proof: data\nEvery table's row count and checksum against those recorded at backup time."),
    ("code", """data = pd.DataFrame(rollback.data_diff(kb.conn, info))
nb.check(bool(data.equal.all()), "table contents differ from the backup's", data[~data.equal])
data"""),
]


def build() -> dict[str, nbformat.NotebookNode]:
    out = {}
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        for i, (kind, text) in enumerate(cells):
            cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
            cell["id"] = f"{name[:2]}-{i:02d}"
            if kind == "code" and text.startswith(PARAMETERS):
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
        out[name] = nb
    return out


def main() -> int:
    for name, nb in build().items():
        nbformat.write(nb, OUT / f"{name}.ipynb")
    print(f"wrote {len(NOTEBOOKS)} notebooks to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
