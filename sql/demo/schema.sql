-- The demo database's "before" state (../shared/SPEC.md, "The database before"): the app's
-- tables as they are before the migration. knowledge_base.workspace_id exists but is only
-- partly filled and has no foreign key; there is no knowledge_base_sections table yet.
-- Run on a fresh database, after the Supabase compatibility layer.

create table public.workspaces (
  id          uuid primary key,
  name        text not null,
  is_active   boolean not null default true,
  created_at  timestamptz not null default now()
);

create table public.users (
  id                    uuid primary key references auth.users (id) on delete cascade,
  email                 text not null,
  full_name             text,
  current_workspace_id  uuid references public.workspaces (id) on delete set null,
  created_at            timestamptz not null default now()
);

create table public.workspace_members (
  id            uuid primary key default gen_random_uuid(),
  workspace_id  uuid not null references public.workspaces (id) on delete cascade,
  user_id       uuid not null references public.users (id) on delete cascade,
  role          text not null default 'member',
  joined_at     timestamptz not null default now(),
  unique (workspace_id, user_id)
);

create table public.knowledge_base (
  id            uuid primary key default gen_random_uuid(),
  title         text not null,
  content       text,
  category      text,
  tags          text[] not null default '{}',
  metadata      jsonb not null default '{}'::jsonb,
  created_by    uuid,
  workspace_id  uuid,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);

create table public.legacy_icp_data (
  id             uuid primary key,
  workspace_id   uuid,
  created_by     uuid,
  user_id        uuid,
  title          text,
  company_name   text,
  description    text,
  industry       text,
  company_size   text,
  revenue_range  text,
  pain_points    text[],
  metadata       jsonb,
  created_at     timestamptz not null default now()
);

create table public.legacy_product_data (
  id            uuid primary key,
  workspace_id  uuid,
  user_id       uuid,
  title         text,
  product_name  text,
  description   text,
  price         numeric(12, 2),
  features      text[],
  benefits      text[],
  metadata      jsonb,
  created_at    timestamptz not null default now()
);

create table public.legacy_competitor_data (
  id               uuid primary key,
  workspace_id     uuid,
  created_by       uuid,
  title            text,
  competitor_name  text,
  company_name     text,
  description      text,
  strengths        text[],
  weaknesses       text[],
  market_share     text,
  pricing          text,
  metadata         jsonb,
  created_at       timestamptz not null default now()
);

create table public.legacy_persona_data (
  id            uuid primary key,
  workspace_id  uuid,
  created_by    uuid,
  user_id       uuid,
  title         text,
  persona_name  text,
  description   text,
  job_title     text,
  goals         text[],
  challenges    text[],
  demographics  jsonb,
  metadata      jsonb,
  created_at    timestamptz not null default now()
);

comment on table public.knowledge_base is 'Knowledge base entries (global before the kbmigrate migration).';
