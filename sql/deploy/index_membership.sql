-- The policies look memberships up by user: (user, workspace) on the membership table.
create index concurrently if not exists kbmigrate_membership_user_workspace_idx on {membership_schema}.{membership_table} ({user_column}, {workspace_column});
