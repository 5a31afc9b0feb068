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
-- out of time, decides nothing: that error goes on up. Returns the outcome written, the
-- deploy's last statement's row count, as the client saw it, and what the transaction holds on
-- the application's relations when it is about to commit (``locks``: relation and mode, read
-- from pg_locks, not sampled) and for how long it has held them (``held_seconds``: since this
-- statement began, right after BEGIN in the same round trip; COMMIT follows in it). The ledger
-- row's detail holds both.
create or replace function pg_temp.kbmigrate_change(deploy text, verify text, ledger jsonb, already text default null)
returns jsonb language plpgsql as $kbmigrate$
declare
  touched bigint := 0;
  held jsonb := '{}'::jsonb;
  worked boolean := coalesce(deploy, verify, already) is not null;  -- else a ledger row alone
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
  if worked then
    held := jsonb_build_object(
      'locks', (select coalesce(jsonb_agg(jsonb_build_object('relation', format('%I.%I', n.nspname, c.relname), 'mode', l.mode)
                                          order by n.nspname, c.relname, l.mode), '[]'::jsonb)
                from pg_locks l join pg_class c on c.oid = l.relation join pg_namespace n on n.oid = c.relnamespace
                where l.pid = pg_backend_pid() and l.locktype = 'relation' and l.granted
                  and c.relkind in ('r', 'p', 'v', 'm', 'f') and c.relpersistence <> 't'
                  and n.nspname not in ('pg_catalog', 'information_schema', 'kbmigrate')),
      'held_seconds', round(extract(epoch from clock_timestamp() - statement_timestamp())::numeric, 3));
  end if;
  detail := detail || held;
  if ledger is not null then
    insert into kbmigrate.ledger (run_id, step, change, sql_sha256, rows_affected, outcome, detail)
    values (ledger ->> 'run_id', ledger ->> 'step', ledger ->> 'change', ledger ->> 'sql_sha256',
            case when outcome = 'noop' then 0
                 when ledger ? 'rows_affected' then (ledger ->> 'rows_affected')::bigint
                 when deploy is not null then touched end,
            outcome, detail);
  end if;
  return jsonb_build_object('outcome', outcome, 'rows', touched) || held;
end
$kbmigrate$;
