-- A change's work in one statement, so that its transaction reaches the server in one round trip
-- from its first lock to its COMMIT (engine/transaction.py sends BEGIN, its settings, this and
-- COMMIT in one pipeline). Created in the session's own temporary schema, in the transaction that
-- calls it: nothing lasts beyond the session, and a pooler that hands out another server session
-- for the next transaction finds it created again.
--
-- kbmigrate_change: the change's deploy script (any number of statements), then its verify
-- script (raises when the change is not in effect), then its ledger row, in this transaction.
-- A NULL script is not run; a NULL ledger row is not written (verify_passes: verify alone, always
-- rolled back). rows_affected is the deploy's last statement's row count, as the client saw it.
create or replace function pg_temp.kbmigrate_change(deploy text, verify text, ledger jsonb)
returns bigint language plpgsql as $kbmigrate$
declare
  touched bigint := 0;
begin
  if deploy is not null then
    execute deploy;
    get diagnostics touched = row_count;
  end if;
  if verify is not null then
    execute verify;
  end if;
  if ledger is not null then
    insert into kbmigrate.ledger (run_id, step, change, sql_sha256, rows_affected, outcome, detail)
    values (ledger ->> 'run_id', ledger ->> 'step', ledger ->> 'change', ledger ->> 'sql_sha256',
            case when ledger ? 'rows_affected' then (ledger ->> 'rows_affected')::bigint
                 when deploy is not null then touched end,
            ledger ->> 'outcome', coalesce(ledger -> 'detail', '{}'::jsonb));
  end if;
  return touched;
end
$kbmigrate$;
