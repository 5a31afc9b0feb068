"""Is the connection a session of its own, or a transaction-mode pooler's?

Supabase's pooler (Supavisor; port 6543 is its transaction mode) and PgBouncer in transaction
mode hand each transaction to whichever server backend is free. Session state then does not
survive between transactions: the run's advisory lock, ``SET`` timeouts, prepared statements.
kbmigrate needs a session: a direct connection, or the pooler in session mode.

Probed with two connections, as a pooler shows itself: directly, two connections always have two
backends and each keeps its own across transactions; through a transaction-mode pooler, two
clients that take turns are served by the same backend (a pool hands out the one just freed),
and one client's backend may change between its transactions.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.conninfo import Target

TRANSACTION_MODE_PORT = 6543
ROUNDS = 3  # a and b take turns this many times; each turn one transaction (one round trip)


def own_session(target: Target, a: psycopg.Connection[Any] | None = None) -> tuple[bool, str]:
    """(True, what was seen) for a session of its own; (False, why and what to use instead)
    otherwise. ``a``: a connection already open to ``target`` (an autocommit one), to probe with
    instead of opening one."""
    with contextlib.ExitStack() as opened:
        if a is None:
            a = opened.enter_context(db.connect(target, autocommit=True, application_name="kbmigrate pooler probe a"))
        b = opened.enter_context(db.connect(target, autocommit=True, application_name="kbmigrate pooler probe b"))
        port = int(a.info.port or 0)
        threshold = a.prepare_threshold
        a.prepare_threshold = b.prepare_threshold = None  # a pooler would mix two clients' prepared statements
        opened.callback(setattr, a, "prepare_threshold", threshold)
        a.execute("select set_config('kbmigrate.session_probe', 'a', false)")  # harmless; dies with the session
        pids_a, pids_b, shared, kept = set(), set(), False, True
        for _ in range(ROUNDS):
            seen = a.execute("select pg_backend_pid(), current_setting('kbmigrate.session_probe', true)").fetchone()
            pb = db.scalar(b, "select pg_backend_pid()")
            assert seen is not None
            pids_a.add(seen[0])
            pids_b.add(pb)
            shared = shared or seen[0] == pb
            kept = kept and seen[1] == "a"
    if shared or len(pids_a) > 1 or not kept or port == TRANSACTION_MODE_PORT:
        why = ("two connections were served by the same server backend" if shared else
               "the server backend changed between transactions" if len(pids_a) > 1 else
               "a session setting was lost between transactions" if not kept else
               f"port {TRANSACTION_MODE_PORT} is Supabase's transaction-mode pooler")
        return False, (f"a transaction-mode pooler: {why}. kbmigrate needs a session of its own (its run lock, "
                       "timeouts and prepared statements live in the session): connect directly "
                       "(db.<project>.supabase.co, port 5432) or through the pooler in session mode (port 5432)")
    return True, f"a session of its own (backend pid {pids_a.pop()}, port {port})"
