-- The policies look memberships up by user: (user, workspace) on the membership table.
-- (a template: the names in braces are identifiers the runner fills with psycopg.sql.Identifier)
create index concurrently if not exists kbmigrate_membership_user_workspace_idx on {membership_schema}.{membership_table} ({user_column}, {workspace_column});
