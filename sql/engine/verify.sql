-- kbmigrate_verify: verify scripts, each in a subtransaction of its own, in one statement (the
-- caller's transaction is always rolled back): for each, NULL when it passed, else its error's
-- message. A verify that cannot get its lock, or runs out of time, decides nothing: that error
-- goes on up. One round trip for any number of checks (06_smoke_tests re-verifies the whole plan).
create or replace function pg_temp.kbmigrate_verify(scripts text[])
returns text[] language plpgsql as $kbmigrate$
declare
  problems text[] := '{}';
  i int;
begin
  for i in 1 .. coalesce(array_length(scripts, 1), 0) loop
    begin
      execute scripts[i];
      problems := array_append(problems, null::text);
    exception
      when lock_not_available or deadlock_detected then raise;
      when others then problems := array_append(problems, sqlerrm);
    end;
  end loop;
  return problems;
end
$kbmigrate$;
