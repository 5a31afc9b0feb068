"""Every change's transaction reaches the server in one round trip, BEGIN to COMMIT: no lock it
takes on an application table is held while the network is in between.

Counted in messages, not in time: libpq's own trace of the engine's connection lists each message
the client sent. A client waits for the server only after a Sync; so a transaction sent whole has
no Sync between its BEGIN and its COMMIT, and one right after. The proxy of ``kbmigrate bench``
counts the same thing from outside, as turns of the conversation.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import pq

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.dev.proxy import delayed
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import for_step
from kbmigrate.engine.steps import apply_step

from conftest import drop, gated, new_demo

CHANGING = ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy")


def _messages(trace: Path) -> list[tuple[str, str, str]]:
    """(direction, message type, the rest) of each message libpq traced; F: the client's."""
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        parts = line.split("\t", 3)
        if len(parts) >= 3 and parts[0] in ("F", "B"):
            out.append((parts[0], parts[2].strip(), parts[3] if len(parts) > 3 else ""))
    return out


def transactions(messages: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """The explicit transactions the client sent: from its BEGIN to its COMMIT or ROLLBACK, the
    client's Syncs inside (each one a wait for the server) and the statements, in order. A
    statement is a Parse (the extended protocol) or a Query (the simple one, which waits for its
    answer: a Sync of its own)."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for direction, kind, rest in messages:
        if direction != "F":
            continue
        if kind in ("Parse", "Query"):
            quoted = rest.split('"')  # Parse: "" "text" …; Query: "text"
            at = 3 if kind == "Parse" else 1
            text = quoted[at].strip().lower() if len(quoted) > at else ""
            if text == "begin":
                current = {"statements": [], "syncs_inside": 0}
                out.append(current)
            elif current is not None:
                current["statements"].append(text)
                if text in ("commit", "rollback"):
                    current["ends"] = text
        if kind in ("Sync", "Query") and current is not None:
            if "ends" in current:
                current = None
            else:
                current["syncs_inside"] += 1
    return out


def test_every_change_is_one_round_trip_from_begin_to_commit(server: Target) -> None:
    target = new_demo(server, "kbt_rtrips")
    params = RunParams(batch_size=150)  # several batches: each one a transaction of its own
    run_id = "rtrips"
    try:
        gated(target, run_id, params)
        with tempfile.TemporaryDirectory() as tmp, db.connect(target, autocommit=True) as conn:
            trace = Path(tmp) / "libpq.trace"
            with trace.open("w") as fh:
                conn.pgconn.trace(fh.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
                for step in CHANGING:
                    apply_step(conn, step, params, run_id, progress=False)
                conn.pgconn.untrace()
            sent = transactions(_messages(trace))
            batches = db.scalar(conn, "select count(*) from kbmigrate.ledger where run_id = %s "
                                      "and change = 'backfill_workspace_ids'", (run_id,))
        changes = [c for step in CHANGING for c in for_step(step, params)]
        work = [t for t in sent if any("pg_temp.kbmigrate_change(" in s or "pg_temp.kbmigrate_batch(" in s
                                       for s in t["statements"]) and t.get("ends") == "commit"]
        # each change of the plan, and each batch, committed as a transaction of its own (plus
        # the ledger's 'started' row before each concurrent index build)
        notx = sum(1 for c in changes if c.has("notx"))
        assert batches >= 3
        assert len(work) == len(changes) - 1 + batches + notx, [t["statements"][-2:] for t in work]
        waited = [t for t in sent if t["syncs_inside"]]
        assert not waited, f"{len(waited)} transactions waited for the server before their end: {waited[0]}"
        assert all(t.get("ends") for t in sent), "a transaction sent without its end"
    finally:
        drop(server, target)


def test_the_proxy_counts_round_trips_and_adds_its_delay(server: Target) -> None:
    """The bench's figures rest on the proxy: a pipeline of many statements costs one round trip,
    the same statements one by one cost one each, and each costs the delay."""
    host, port = server.params.get("host", "127.0.0.1"), int(server.params.get("port", "5432"))
    with delayed(host, port, 40) as proxy:
        with db.connect(server.via("127.0.0.1", proxy.port), autocommit=True) as conn:
            before = proxy.counts.snapshot()["round_trips"]
            t0 = time.perf_counter()
            for i in range(5):
                conn.execute("select %s::int", (i,))
            one_by_one, seconds = proxy.counts.snapshot()["round_trips"] - before, time.perf_counter() - t0
            before = proxy.counts.snapshot()["round_trips"]
            with conn.pipeline():
                for i in range(5):
                    conn.execute("select %s::int", (i,))
            pipelined = proxy.counts.snapshot()["round_trips"] - before
    assert one_by_one == 5 and pipelined == 1
    assert seconds >= 5 * 0.040


def test_the_bench_puts_each_client_with_its_step() -> None:
    from kbmigrate.dev.remote import who

    assert who("kbmigrate 02_schema run-1") == who("kbmigrate %sql 02_schema run-1") == "02_schema"
    assert who("kbmigrate pg_dump run-1") == who("kbmigrate backup run-1") == "01_backup"
    assert who("kbmigrate pooler probe a") == "00_preflight"
    assert who("kbmigrate lock run run-1") == who("kbmigrate summary run-1") == "runner"


def test_the_count_sees_a_transaction_that_waits_for_the_server(server: Target) -> None:
    """The planted fault: a transaction sent as the original package did, one statement at a time
    (BEGIN, its work, COMMIT, each waiting for its answer), must be counted as waiting twice
    before its end; the same sent in one pipeline, not at all."""
    with tempfile.TemporaryDirectory() as tmp, db.connect(server, autocommit=True) as conn:
        trace = Path(tmp) / "libpq.trace"
        with trace.open("w") as fh:
            conn.pgconn.trace(fh.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            for statement in ("begin", "select 1", "commit"):  # three round trips
                conn.execute(statement)
            with conn.pipeline():  # one
                for statement in ("begin", "select 2", "commit"):
                    conn.execute(statement)
            conn.pgconn.untrace()
        sent = transactions(_messages(trace))
    assert [(t["syncs_inside"], t.get("ends")) for t in sent] == [(2, "commit"), (0, "commit")], sent
