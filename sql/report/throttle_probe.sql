-- What the batch in progress costs the others, asked from inside its transaction while it still
-- holds its row locks: the sessions waiting for a lock this session holds, and the other client
-- sessions running a statement. pg_blocking_pids is only asked about sessions that wait for a lock.
with waiters as materialized (
  select pid from pg_stat_activity where wait_event_type = 'Lock' and pid <> pg_backend_pid()
)
select (select count(*) from waiters w where pg_backend_pid() = any(pg_blocking_pids(w.pid))) as waiting,
       (select count(*) from pg_stat_activity
         where state = 'active' and backend_type = 'client backend' and pid <> pg_backend_pid()) as active
