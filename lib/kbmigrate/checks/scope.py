"""What the backup covers, what it leaves out, and why.

On Supabase the migrating user (``postgres``) is not a superuser: schemas such as ``auth``,
``storage`` or ``vault`` belong to platform roles, and neither it nor anyone restoring as it can
recreate them. So the backup is a dump of named schemas, decided here, schema by schema:

1. the schemas the migration touches (``public``, the membership table's, ``kbmigrate``,
   ``kb_private``) are always in; one the user cannot read entirely is a NO-GO;
2. Supabase's platform schemas (``sql/data/platform_schemas.csv``) are out, with the reason;
3. a schema owned by a role the user cannot act as is out: it is not the application's;
4. a schema with relations the user cannot read is out, naming them;
5. every other schema (the application's own) is in.

The backup also records what the dumped objects need from outside it (functions, tables, types,
roles): a restore into this database finds them in place; the restore drill, elsewhere, must
provide stand-ins first (see ``drill.py``).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import SQL_DIR, read_sql

MIGRATION_SCHEMAS = ("kbmigrate", "kb_private", "public")


def platform_schemas() -> dict[str, str]:
    with (SQL_DIR / "data/platform_schemas.csv").open(encoding="utf-8", newline="") as fh:
        return {row["schema"]: row["reason"] for row in csv.DictReader(fh)}


@dataclass
class Scope:
    schemas: list[str]                                              # dumped
    left_out: list[dict[str, str]] = field(default_factory=list)    # {schema, owner, reason}
    problems: list[str] = field(default_factory=list)               # NO-GO: a touched schema not fully readable

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def touched(params: RunParams) -> list[str]:
    return sorted({*MIGRATION_SCHEMAS, params.membership_split[0]})


def decide(conn: psycopg.Connection[Any], params: RunParams) -> Scope:
    must = set(touched(params))
    platform = platform_schemas()
    who, schemas = db.batch(conn, [("select current_user as name", None), (read_sql("report/backup_schemas.sql"), None)])
    user = who[0]["name"]
    scope = Scope(schemas=[])
    for row in schemas:
        name, owner, unreadable = row["schema"], row["owner"], list(row["unreadable"])
        if name in must:
            if not row["usable"] or unreadable:
                what = ", ".join(unreadable[:5]) if unreadable else "the schema itself"
                scope.problems.append(f"{user} cannot read {name}: {what}; the backup would miss data the "
                                      "migration changes (grant SELECT, or run as the tables' owner)")
            scope.schemas.append(name)
        elif name in platform:
            scope.left_out.append({"schema": name, "owner": owner, "reason": platform[name]})
        elif not row["acts_as_owner"]:
            scope.left_out.append({"schema": name, "owner": owner,
                                   "reason": f"owned by {owner}, which {user} cannot act as: not the application's"})
        elif not row["usable"] or unreadable:
            scope.left_out.append({"schema": name, "owner": owner,
                                   "reason": f"{user} cannot read {', '.join(unreadable[:5]) or 'it'}"})
        else:
            scope.schemas.append(name)
    return scope


def outside_references(conn: psycopg.Connection[Any], schemas: list[str]) -> list[dict[str, Any]]:
    """What the objects in ``schemas`` need from outside them (see sql/report/backup_outside_refs.sql)."""
    return [{k: v for k, v in r.items() if v is not None}
            for r in db.rows(conn, read_sql("report/backup_outside_refs.sql"), {"schemas": schemas})]


def pg_dump_args(schemas: list[str]) -> list[str]:
    """``--schema`` options naming each schema exactly (a double-quoted pattern matches only itself)."""
    return [f'--schema="{s.replace(chr(34), chr(34) * 2)}"' for s in schemas]
