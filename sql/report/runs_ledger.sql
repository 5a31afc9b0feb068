-- Each run's changes by outcome, a change counted once however many rows it has in the run (a
-- backfill's batches, a step re-run on resume): applied when any of its rows applied it, else as
-- its last row says.
with per_change as (
    select run_id, step, change, min(applied_at) as first_at,
           bool_or(outcome = 'applied') as applied, bool_or(outcome = 'reverted') as reverted,
           (array_agg(outcome order by id desc))[1] as last
    from kbmigrate.ledger
    where step <> %(seal_step)s
    group by run_id, step, change)
select run_id, min(first_at) as first_at,
       count(*) filter (where applied) as applied,
       count(*) filter (where not applied and not reverted and last = 'noop') as noop,
       count(*) filter (where reverted) as reverted,
       count(*) filter (where not applied and last = 'failed') as failed
from per_change
group by run_id;
