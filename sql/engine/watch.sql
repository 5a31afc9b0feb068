-- kbmigrate_watch: the lock watcher's look, waiting on the server (engine/blockers.py). Runs the
-- ``blockers`` query (sql/report/blockers.sql, its pattern as $1) every ``every`` seconds until it
-- finds a session of the run waiting for a lock, or ``up_to`` seconds have passed; returns its rows
-- then (none: nothing waited). A watcher far from its server pays one round trip per ``up_to``
-- seconds of work in flight, not one per look. Created in the watcher's own temporary schema.
create or replace function pg_temp.kbmigrate_watch(blockers text, pattern text, up_to double precision,
                                                   every double precision)
returns setof jsonb language plpgsql as $kbmigrate$
declare
  until timestamptz := clock_timestamp() + make_interval(secs => up_to);
  found jsonb[];
begin
  loop
    perform pg_stat_clear_snapshot();  -- pg_stat_activity as it is now, not as this statement first saw it
    execute 'select array_agg(to_jsonb(b)) from (' || blockers || ') b' using pattern into found;
    if found is not null then
      return query select unnest(found);
      return;
    end if;
    exit when clock_timestamp() + make_interval(secs => every) > until;
    perform pg_sleep(every);
  end loop;
end
$kbmigrate$;
