-- kbmigrate.membership: the app's membership table under fixed names, so every other file
-- reads (user_id, workspace_id, joined_at) whatever the deployment calls them.
-- The names in braces are identifiers the runner fills with psycopg.sql.Identifier.
create or replace view kbmigrate.membership as
  select {user_column} as user_id, {workspace_column} as workspace_id, {joined_column} as joined_at
  from {membership_schema}.{membership_table};
revoke all on kbmigrate.membership from public;
