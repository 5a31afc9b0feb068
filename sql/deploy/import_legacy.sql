-- Import one legacy source (SPEC step 6), once ever: its line of the legacy sources file reaches
-- this file as the JSON setting kbmigrate.legacy_spec; kbmigrate.import_legacy (legacy_helpers)
-- inserts the entries that can land, and each becomes a row of kbmigrate.legacy_imports, in this
-- same transaction.
insert into kbmigrate.legacy_imports (source, original_id, entry_id, run_id)
select current_setting('kbmigrate.legacy_spec')::jsonb ->> 'source', i.original_id, i.entry_id,
       current_setting('kbmigrate.run_id')
from kbmigrate.import_legacy(current_setting('kbmigrate.legacy_spec')::jsonb) as i;
