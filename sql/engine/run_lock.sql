-- The run lock and the kernels' lock, tried in one round trip (engine/lock.py). The run lock is
-- kept; the kernels' lock is only tried (a kernel holding it shared keeps a new run out) and let
-- go at once. Each CTE is evaluated once, in order: both are tried even when the first fails,
-- and a kernels' lock got is released in the same statement.
with run as materialized (select pg_try_advisory_lock(%(class)s, %(run)s) as got),
     kernels as materialized (select pg_try_advisory_lock(%(class)s, %(kernels)s) as got)
select run.got as run, kernels.got as kernels,
       case when kernels.got then pg_advisory_unlock(%(class)s, %(kernels)s) end as released
from run, kernels
