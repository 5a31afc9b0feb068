-- The seals: when a run ends, the sha256 of its final manifest, so that its evidence folder cannot
-- be edited or deleted without breaking a link the database holds (kbmigrate verify). A table of
-- its own: the ledger says what changed, and no reader of it has to skip the seals.
create table if not exists kbmigrate.seals (
  id               bigint generated always as identity primary key,
  run_id           text        not null,
  manifest_sha256  text        not null,
  status           text        not null,
  previous         jsonb,
  db_user          text        not null default current_user,
  sealed_at        timestamptz not null default clock_timestamp()
);
create index if not exists seals_run_idx on kbmigrate.seals (run_id, id);
