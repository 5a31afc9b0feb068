-- Mark the database as a kbmigrate demo (so demo-db may replace it later, and nothing else),
-- and refresh planner statistics. The marker text arrives as the setting kbdemo.marker.
do $mark$
begin
  execute format('comment on database %I is %L', current_database(), current_setting('kbdemo.marker'));
end
$mark$;
