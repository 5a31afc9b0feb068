-- Rollback, part 1: drop what the migration created that the backup does not contain, so that
-- pg_restore --clean can then replace the KB tables with their pre-migration selves.
-- The ledger (kbmigrate.ledger) is kept: it is the record of the migration and of this rollback.
-- Settings: kbmigrate.sections_in_dump ('true'/'false'), and the membership names as for the run.
drop view if exists public.vw_workspace_sections;
-- The migration's key from an entry to its section: when the sections table is in the backup too,
-- pg_restore --clean drops it before the entries, and this key (not in the backup) would stop it.
-- Found by the rehearsal's rollback on a copy of a database whose sections table predates the run.
alter table if exists public.knowledge_base drop constraint if exists knowledge_base_section_in_workspace_fkey;
drop schema if exists kb_private cascade;        -- the membership helper, and the policies using it
drop view if exists kbmigrate.membership;
drop function if exists kbmigrate.legacy_content(jsonb, text[], text[]);
drop function if exists kbmigrate.legacy_text(jsonb);
drop function if exists kbmigrate.import_legacy(jsonb);
do $$
begin
  if current_setting('kbmigrate.sections_in_dump') <> 'true' then
    drop table if exists public.knowledge_base_sections cascade;
  end if;
  execute format('drop index if exists %I.kbmigrate_membership_user_workspace_idx',
                 current_setting('kbmigrate.membership_schema'));
end $$;
-- What these described no longer exists after the restore; a later run must start afresh.
delete from kbmigrate.legacy_imports;
delete from kbmigrate.quarantine;
