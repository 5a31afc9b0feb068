-- The sessions that the run's waiting sessions wait for: who, doing what, for how long.
-- %(pattern)s: a LIKE pattern for the application_name of the run's own sessions.
select w.pid as waiting_pid,
       w.application_name as waiting,
       round(extract(epoch from now() - w.state_change)::numeric, 1) as waited_seconds,
       (select string_agg(distinct coalesce(l.relation::regclass::text, l.locktype), ', ')
          from pg_locks l where l.pid = w.pid and not l.granted) as waits_for,
       b.pid,
       coalesce(nullif(b.application_name, ''), '—') as application,
       coalesce(b.usename::text, '—') as "user",
       coalesce(b.state, '—') as state,
       round(extract(epoch from now() - coalesce(b.xact_start, b.query_start, b.backend_start))::numeric) as seconds,
       left(split_part(btrim(coalesce(b.query, '')), E'\n', 1), 160) as query
from pg_stat_activity w
cross join lateral unnest(pg_blocking_pids(w.pid)) as bp(pid)
join pg_stat_activity b on b.pid = bp.pid
where w.application_name like %(pattern)s
  and w.wait_event_type = 'Lock'
  and w.pid <> pg_backend_pid()
order by waited_seconds desc, b.pid
