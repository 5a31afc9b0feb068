-- Other sessions that could block or be blocked by the migration: transactions open longer than
-- the threshold, and sessions holding a lock on a target table in a transaction that has been
-- open longer than the run's lock_timeout, or that sits idle in its transaction: those are the
-- ones a change would wait on past its lock_timeout. The application's own short reads and
-- writes (their locks held for milliseconds) are not: a change that meets one waits for it, well
-- within lock_timeout. One look at pg_locks (a materialized snapshot), so that a session counted
-- for its locks is listed with them.
with locks as materialized (
  select l.pid, string_agg(distinct l.relation::regclass::text || ' ' || l.mode, ', ') as on_targets
  from pg_locks l
  where l.relation = any(%(relations)s::regclass[]) and l.pid <> pg_backend_pid()
  group by l.pid
)
select a.pid, a.usename as db_user, a.application_name, a.state,
       date_trunc('second', now() - a.xact_start) as transaction_age,
       left(a.query, 80) as query, l.on_targets as locks_on_targets
from pg_stat_activity a left join locks l on l.pid = a.pid
where a.pid <> pg_backend_pid() and a.datname = current_database()
  and (a.xact_start < now() - make_interval(secs => %(threshold)s)
       or (l.pid is not null and (a.state like 'idle in transaction%%'
                                  or a.xact_start < now() - %(lock_wait)s::interval)))
order by a.xact_start;
