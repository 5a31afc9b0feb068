-- The ledger: one row per change applied (or found already done) by a run, written in the
-- same transaction as the change. Its schema is private: the API roles get no access.
create schema if not exists kbmigrate;
revoke all on schema kbmigrate from public;

create table if not exists kbmigrate.ledger (
  id             bigint generated always as identity primary key,
  run_id         text        not null,
  step           text        not null,
  change         text        not null,
  sql_sha256     text        not null,
  db_user        text        not null default current_user,
  applied_at     timestamptz not null default clock_timestamp(),
  rows_affected  bigint,
  outcome        text        not null check (outcome in ('applied', 'noop', 'failed', 'reverted')),
  detail         jsonb       not null default '{}'::jsonb
);
create index if not exists ledger_run_idx on kbmigrate.ledger (run_id, id);

-- Entries the backfill could not assign (no creator, or a creator without a workspace).
create table if not exists kbmigrate.quarantine (
  entry_id    uuid primary key,
  reason      text not null,
  run_id      text not null,
  noted_at    timestamptz not null default clock_timestamp()
);

-- Each legacy row is imported once, ever: this records which entry it became.
create table if not exists kbmigrate.legacy_imports (
  source       text not null,
  original_id  text not null,
  entry_id     uuid not null,
  run_id       text not null,
  imported_at  timestamptz not null default clock_timestamp(),
  primary key (source, original_id)
);
