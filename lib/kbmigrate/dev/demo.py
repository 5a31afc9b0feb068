"""The demo database generator: the *before* state of ../shared/SPEC.md, from a seed.

All rows come from set-based SQL in ``sql/demo/`` (generate_series, md5-derived values), so a
size and a seed always give the same database. The KB table is filled in chunks, each its own
transaction, with a progress bar.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from tqdm import tqdm

from kbmigrate import db
from kbmigrate.dev.limits import DEV
from kbmigrate.dev import compat
from kbmigrate.components.embedded import DEMO_DATABASE
from kbmigrate.conninfo import Target
from kbmigrate.errors import BadParameter, NotADemoDatabase
from kbmigrate.engine.transaction import run_file

MARKER_PREFIX = "kbmigrate demo database"
LEGACY_TABLES = ("legacy_icp_data", "legacy_product_data", "legacy_competitor_data", "legacy_persona_data")


@dataclass(frozen=True)
class Size:
    workspaces: int
    users: int          # a multiple of 10: u % 10 is the membership class
    kb_rows: int
    legacy_rows: int    # per legacy table
    kb_chunk: int       # KB rows per transaction while generating


SIZES: dict[str, Size] = {
    "small": Size(workspaces=12, users=60, kb_rows=800, legacy_rows=30, kb_chunk=800),
    "medium": Size(workspaces=500, users=5_000, kb_rows=100_000, legacy_rows=5_000, kb_chunk=50_000),
    "large": Size(workspaces=10_000, users=50_000, kb_rows=1_000_000, legacy_rows=25_000, kb_chunk=100_000),
}


def size_named(name: str) -> Size:
    try:
        return SIZES[name]
    except KeyError:
        raise BadParameter(name="--size", reason=f"{name!r} is not one of {', '.join(SIZES)}") from None


def design(size: Size) -> dict[str, int]:
    """What the generator means to produce, counted from its design rules (sql/demo/*.sql headers)."""
    kinds = Counter(j % 20 for j in range(1, size.kb_rows + 1))
    classes = Counter(u % 10 for u in range(1, size.users + 1))
    shared = kinds[0] + kinds[1] + kinds[2]
    return {
        "workspaces": size.workspaces,
        "inactive_workspaces": size.workspaces // 4,
        "users": size.users,
        "users_without_workspace": classes[9],
        "users_with_several_workspaces": classes[6] + classes[7] + classes[8],
        "users_with_tied_first_join": classes[8],
        "memberships": sum(classes[c] for c in range(6)) + sum(2 + u % 3 for u in range(1, size.users + 1) if u % 10 in (6, 7)) + 2 * classes[8],
        "kb_rows": size.kb_rows,
        "kb_shared_unassigned": shared,
        "kb_assigned": sum(kinds[k] for k in range(3, 7)),
        "kb_assigned_matching_shared": kinds[6],
        "kb_quarantine_no_creator": kinds[7],
        "kb_quarantine_creator_without_workspace": kinds[8],
        "kb_backfill_from_creator": sum(kinds[k] for k in range(9, 20)),
        "legacy_rows_per_table": size.legacy_rows,
    }


def _settings(size: Size, seed: int) -> dict[str, str]:
    return {
        "kbdemo.seed": str(seed),
        "kbdemo.workspaces": str(size.workspaces),
        "kbdemo.users": str(size.users),
        "kbdemo.legacy_rows": str(size.legacy_rows),
    }


def marker(size_name: str, seed: int) -> str:
    return f"{MARKER_PREFIX} (size={size_name}, seed={seed})"


def is_demo(admin: psycopg.Connection[Any], name: str) -> bool:
    comment = db.scalar(
        admin, "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (name,)
    )
    return bool(comment and str(comment).startswith(MARKER_PREFIX))


def build(target: Target, name: str = DEMO_DATABASE, size_name: str = "small", seed: int = 42,
          *, progress: bool = True) -> dict[str, Any]:
    """(Re)create database ``name`` on the target's server and fill it. Returns row counts.

    An existing database is replaced only when an earlier ``build`` made it.
    """
    size_named(size_name)
    if seed < 0:
        raise BadParameter(name="--seed", reason="must be a non-negative integer")
    server = target.with_database("postgres") if target.source == "embedded" else target
    with db.connect(server, limits=DEV, autocommit=True) as admin:
        if db.database_exists(admin, name):
            if not is_demo(admin, name):
                raise NotADemoDatabase(database=name)
            db.drop_database(admin, name)
        db.create_database(admin, name)
    return fill(server.with_database(name), size_name, seed, progress=progress)


def fill(target: Target, size_name: str = "small", seed: int = 42, *, progress: bool = True) -> dict[str, Any]:
    """Fill an empty database (the target's) with the demo data. The Supabase compatibility
    layer is installed first unless the database already has auth.uid() (a Supabase layout)."""
    size = size_named(size_name)
    settings = _settings(size, seed)
    steps = ["compat", "schema", "workspaces", "users", "memberships"]
    chunks = [(lo, min(lo + size.kb_chunk - 1, size.kb_rows)) for lo in range(1, size.kb_rows + 1, size.kb_chunk)]
    total = len(steps) + len(chunks) + 2
    with db.connect(target, limits=DEV, autocommit=True) as conn, \
            tqdm(total=total, desc=f"demo-db {size_name}", unit="step", disable=not progress, leave=False) as bar:
        name = conn.info.dbname
        compat.install(conn)
        bar.update()
        run_file(conn, "demo/schema.sql")
        bar.update()
        run_file(conn, "demo/00_helpers.sql", settings=settings)  # pg_temp functions persist for the session
        for step, relative in (("workspaces", "demo/01_workspaces.sql"), ("users", "demo/02_users.sql"),
                               ("memberships", "demo/03_memberships.sql")):
            bar.set_postfix_str(step)
            run_file(conn, relative, settings=settings)
            bar.update()
        for lo, hi in chunks:
            bar.set_postfix_str(f"knowledge_base {hi:,}/{size.kb_rows:,}")
            run_file(conn, "demo/04_knowledge_base.sql", settings={**settings, "kbdemo.kb_from": str(lo), "kbdemo.kb_to": str(hi)})
            bar.update()
        bar.set_postfix_str("legacy tables")
        run_file(conn, "demo/05_legacy.sql", settings=settings)
        bar.update()
        run_file(conn, "demo/06_finish.sql", settings={"kbdemo.marker": marker(size_name, seed)})
        bar.set_postfix_str("analyze")
        conn.execute("analyze")
        bar.update()
        counts = table_counts(conn)
    return {"database": name, "size": size_name, "seed": seed, "design": asdict(size), "counts": counts}


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    from psycopg import sql

    tables = ["auth.users", "public.workspaces", "public.users", "public.workspace_members",
              "public.knowledge_base", *[f"public.{t}" for t in LEGACY_TABLES]]
    out: dict[str, int] = {}
    for qualified in tables:
        schema, table = qualified.split(".")
        out[qualified] = int(db.scalar(conn, sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))))
    return out
