"""Legacy sources are data: a fifth source is one line of the sources file, and it is imported,
ledgered and revertible on its own like the four the spec names. Expectations are computed here
from the rows, not by the code under test."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from kbmigrate import db
from kbmigrate.engine import legacy
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import SQL_DIR

from conftest import drop, new_demo, run_cli
from oracle import fetch

FAQ = "legacy_faq_data,Objections,FAQ: ,question,Answer=answer; Audience=audience"


def _add_faq_table(conn: Any) -> list[dict[str, Any]]:
    conn.execute("""create table public.legacy_faq_data (
                      id uuid primary key, workspace_id uuid, created_by uuid, title text, question text,
                      answer text, audience text[], metadata jsonb, created_at timestamptz not null default now())""")
    conn.execute("""insert into public.legacy_faq_data (id, workspace_id, created_by, title, question, answer, audience, metadata)
                    select gen_random_uuid(), w.id, null,
                           case when n % 2 = 0 then 'Titled ' || n end, 'Why ' || n || '?',
                           case when n % 3 <> 0 then 'Because ' || n end,
                           case when n % 4 = 0 then array['sales', 'support'] end,
                           jsonb_build_object('n', n)
                    from generate_series(1, 20) n
                    join lateral (select id from public.workspaces order by id offset (n % 12) limit 1) w on true""")
    return fetch(conn, "select * from public.legacy_faq_data")


def test_a_fifth_source_is_one_line_of_data(server: Target, tmp_path: Path) -> None:
    sources = tmp_path / "legacy_sources.csv"
    sources.write_text((SQL_DIR / "data/legacy_sources.csv").read_text() + FAQ + "\n")
    assert [s.change for s in legacy.read(sources)][-1] == "import_legacy_faq"
    target = new_demo(server, "kbt_faq")
    try:
        with db.connect(target, autocommit=True) as conn:
            rows = _add_faq_table(conn)
            active = {w["id"] for w in fetch(conn, "select id from workspaces where is_active")}
        run_id = f"t-faq-{uuid.uuid4().hex[:6]}"
        done = run_cli("run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                       "-p", f"legacy_sources_file={sources}")
        assert done.returncode == 0, done.stderr
        with db.connect(target) as conn:
            got = {e["metadata"]["original_id"]: e for e in fetch(conn, """
                select kb.*, s.name as section, s.workspace_id as section_workspace from knowledge_base kb
                join knowledge_base_sections s on s.id = kb.section_id
                where kb.metadata ->> 'imported_from' = 'legacy_faq_data'""")}
            ledger = db.rows(conn, "select outcome, rows_affected from kbmigrate.ledger "
                                   "where run_id = %s and change = 'import_legacy_faq'", (run_id,))
        landing = [r for r in rows if r["workspace_id"] in active]
        assert set(got) == {str(r["id"]) for r in landing} and 0 < len(landing) < len(rows)
        assert ledger == [{"outcome": "applied", "rows_affected": len(landing)}]
        for r in landing:
            e = got[str(r["id"])]
            assert e["section"] == "Objections" and e["workspace_id"] == e["section_workspace"] == r["workspace_id"]
            assert e["title"] == (r["title"] or f"FAQ: {r['question']}")
            lines = [f"Answer: {r['answer']}"] if r["answer"] else []
            lines += [f"Audience: {', '.join(r['audience'])}"] if r["audience"] else []
            assert e["content"] == ("\n".join(lines) or None)
            assert e["metadata"]["question"] == r["question"] and e["metadata"]["legacy_metadata"] == r["metadata"]

        # revertible on its own: the other sources' imports stay
        others = _imported_elsewhere(target)
        reverted = run_cli("revert", "import_legacy_faq", "--dsn", target.conninfo, "-p", f"legacy_sources_file={sources}",
                           "--backup-of", run_id)
        assert reverted.returncode == 0, reverted.stderr
        with db.connect(target) as conn:
            assert db.scalar(conn, "select count(*) from knowledge_base where metadata ->> 'imported_from' = 'legacy_faq_data'") == 0
        assert _imported_elsewhere(target) == others and others
    finally:
        drop(server, target)


def _imported_elsewhere(target: Target) -> dict[str, int]:
    with db.connect(target) as conn:
        return {r["s"]: r["n"] for r in fetch(conn, """select metadata ->> 'imported_from' as s, count(*) as n
                                                       from knowledge_base where metadata ? 'imported_from'
                                                       and metadata ->> 'imported_from' <> 'legacy_faq_data' group by 1""")}


def test_a_bad_sources_file_is_refused_before_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "sources.csv"
    bad.write_text("source,section,title_prefix,name_fields,lines\nlegacy x; drop table y,ICP,,name,A=a\n")
    done = run_cli("run", "--dsn", "host=127.0.0.1 port=1 dbname=x", "-p", f"legacy_sources_file={bad}")
    assert done.returncode == 2 and "legacy_sources_file" in done.stderr and "Traceback" not in done.stderr
    assert RunParams().legacy_sources_path() == SQL_DIR / "data/legacy_sources.csv"
