-- kbmigrate_batch: one batch of the backfill, its cost to the others and its ledger row.
-- The batch is one statement returning one row (sql/deploy/backfill_workspace_ids.sql); the
-- probe (sql/report/throttle_probe.sql) runs after it, while its row locks are still held; the
-- seconds are the batch's own, measured on the server. The ledger row's detail is the client's
-- (the throttle's decision for this batch) with the batch's figures and the probe's added; it is
-- a no-op when the batch changed nothing. Returns all of it, for the throttle's next decision.
create or replace function pg_temp.kbmigrate_batch(batch text, probe text, ledger jsonb)
returns jsonb language plpgsql as $kbmigrate$
declare
  started timestamptz := clock_timestamp();
  b record;
  p record;
  done jsonb;
begin
  execute batch into b;
  done := to_jsonb(b) || jsonb_build_object('seconds', round(extract(epoch from clock_timestamp() - started), 4));
  execute probe into p;
  done := done || to_jsonb(p);
  insert into kbmigrate.ledger (run_id, step, change, sql_sha256, rows_affected, outcome, detail)
  values (ledger ->> 'run_id', ledger ->> 'step', ledger ->> 'change', ledger ->> 'sql_sha256',
          (done ->> 'updated')::bigint,
          case when (done ->> 'updated')::bigint + (done ->> 'newly_quarantined')::bigint > 0 then 'applied' else 'noop' end,
          coalesce(ledger -> 'detail', '{}'::jsonb) || (done - 'last_id' - 'updated'));
  return done;
end
$kbmigrate$;
