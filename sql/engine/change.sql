-- A change's work in one statement, so that its transaction reaches the server in one round trip
-- from its first lock to its COMMIT (engine/transaction.py sends BEGIN, its settings, this and
-- COMMIT in one pipeline). Created in the session's own temporary schema, in the transaction that
-- calls it: nothing lasts beyond the session, and a pooler that hands out another server session
-- for the next transaction finds it created again.
--
-- kbmigrate_change: when ``already`` is given, that verify script first, in a subtransaction: if
-- it passes, the change is in effect already, and only its ledger row is written (outcome noop).
-- Otherwise the change's deploy script (any number of statements), then its verify script
-- (raises when the change is not in effect), then its ledger row, in this transaction. A NULL
-- script is not run; a NULL ledger row is not written. A verify that cannot get its lock, or runs
-- out of time, decides nothing: that error goes on up. Returns the outcome written and the
-- deploy's last statement's row count, as the client saw it.
create or replace function pg_temp.kbmigrate_change(deploy text, verify text, ledger jsonb, already text default null)
returns jsonb language plpgsql as $kbmigrate$
declare
  touched bigint := 0;
  outcome text := ledger ->> 'outcome';
  detail jsonb := coalesce(ledger -> 'detail', '{}'::jsonb);
begin
  if ledger is not null and to_regclass('kbmigrate.ledger') is null and ledger ->> 'change' <> 'ledger' then
    raise exception 'the ledger does not exist; run 02_schema first';
  end if;
  if already is not null then
    begin
      execute already;
      outcome := 'noop';
      detail := detail || '{"already": "verify passed before deploy"}';
      deploy := null;
      verify := null;
    exception
      when lock_not_available or deadlock_detected then raise;
      when others then null;  -- not in effect: deploy it
    end;
  end if;
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
            case when outcome = 'noop' then 0
                 when ledger ? 'rows_affected' then (ledger ->> 'rows_affected')::bigint
                 when deploy is not null then touched end,
            outcome, detail);
  end if;
  return jsonb_build_object('outcome', outcome, 'rows', touched);
end
$kbmigrate$;
