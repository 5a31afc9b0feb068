"""Acting as a user the way the Supabase API does, inside a transaction that is always rolled back.

PostgREST runs each request as ``set local role authenticated`` (or ``anon``) with the JWT claims
in ``request.jwt.claims``; RLS then applies. Testing as the table owner proves nothing: RLS does
not apply to the owner (the original package's mistake).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

API_ROLES = ("anon", "authenticated", "service_role")


def claim(conn: psycopg.Connection[Any], user_id: uuid.UUID | str | None, role: str = "authenticated") -> None:
    """Inside the current transaction: become ``role`` with ``sub = user_id`` until it ends."""
    if role not in API_ROLES:
        raise ValueError(f"role must be one of {API_ROLES}")
    claims: dict[str, str] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))


@contextmanager
def acting_as(conn: psycopg.Connection[Any], user_id: uuid.UUID | str | None,
              role: str = "authenticated") -> Iterator[psycopg.Connection[Any]]:
    """Everything inside runs as ``role`` with ``sub = user_id``, and is rolled back at the end."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("acting_as needs a connection outside any transaction (settings would outlive a savepoint)")
    with conn.transaction(force_rollback=True):
        claim(conn, user_id, role)
        yield conn


def attempt(conn: psycopg.Connection[Any], query: str, params: Any = None) -> int | str:
    """Run one write in a savepoint: the rows it touched, or 'refused' when RLS rejects it."""
    try:
        with conn.transaction():
            return max(conn.execute(query, params).rowcount, 0)
    except psycopg.errors.InsufficientPrivilege:
        return "refused"
    except psycopg.errors.CheckViolation:
        return "refused"


def as_each(conn: psycopg.Connection[Any], groups: list[tuple[str | None, uuid.UUID | str | None,
                                                         list[tuple[str, Any]]]]) -> list[list[Any]]:
    """Each group's statements, acting as its role (``None``: the connection's own user) with ``sub``
    = its user, each group in a transaction of its own that is rolled back; all the groups in one
    pipeline, one round trip. Returns each statement's rows, by group. Any error is raised (the
    groups' transactions are all rolled back): for statements that are meant to succeed."""
    if conn.info.transaction_status != TransactionStatus.IDLE or not conn.autocommit:
        raise RuntimeError("as_each needs an autocommit connection outside any transaction")
    cursors: list[list[Any]] = []
    try:
        with conn.pipeline():
            for role, user_id, statements in groups:
                conn.execute("begin", prepare=False)
                if role is not None:
                    if role not in API_ROLES:
                        raise ValueError(f"role must be one of {API_ROLES}")
                    claims = {"role": role, **({"sub": str(user_id)} if user_id is not None else {})}
                    conn.execute("select set_config('request.jwt.claims', %s, true), set_config('role', %s, true)",
                                 (json.dumps(claims), role), prepare=False)
                cursors.append([conn.execute(query, args, prepare=False) for query, args in statements])
                conn.execute("rollback", prepare=False)
    except BaseException:
        if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("rollback")
        raise
    return [[(c.fetchall() if c.description else c.rowcount) for c in group] for group in cursors]
