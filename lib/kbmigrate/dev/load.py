"""The members' load for ``kbmigrate bench``'s traffic figures: signed-in members reading and
editing their entries, each client a process of its own.

Processes, not threads: a thread of the bench waits for the bench's own Python whenever the
migration it drives holds the interpreter's lock (building SQL, reading results, the throttle's
bookkeeping), and would count that wait as the server's. The application's clients are other
programs; so are these. ``time.perf_counter`` is the system's monotonic clock on Linux, so the
clients' timestamps can be laid on one timeline.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.checks.rls import claim
from kbmigrate.conninfo import Target
from kbmigrate.dev.limits import DEV
from kbmigrate.paths import read_sql

READY_SECONDS = 60


def members(target: Target, limit: int = 2000) -> list[tuple[uuid.UUID, list[uuid.UUID]]]:
    """Up to ``limit`` members with entries: (user id, the ids of up to 20 of their entries)."""
    with db.connect(target, limits=DEV) as conn:
        rows = db.rows(conn, """select created_by as user_id, (array_agg(id order by id))[1:20] as ids
                                from public.knowledge_base where created_by is not null
                                group by created_by order by created_by limit %(limit)s""", {"limit": limit})
    return [(r["user_id"], list(r["ids"])) for r in rows]


def _client(target: Target, who: list[tuple[uuid.UUID, list[uuid.UUID]]], seed: int, parent: int, stop: Any, ready: Any,
            out: Any) -> None:
    """One client: a transaction after another until ``stop`` (a closed loop: at idle, three of
    them keep two cores about 90 % busy); (ended at, seconds) of each, sent at the end. Its
    session is named after its process."""
    rng = random.Random(seed)
    read, write = read_sql("bench/load_read.sql"), read_sql("bench/load_write.sql")
    done: list[tuple[float, float]] = []
    with db.connect(target, limits=DEV, autocommit=True, application_name=f"kbmigrate bench load {os.getpid()}") as conn:
        ready.set()
        while not stop.is_set() and os.getppid() == parent:  # a bench killed outright leaves no load behind
            user_id, ids = rng.choice(who)
            t0 = time.perf_counter()
            try:
                with conn.transaction():  # committed: the load's writes are real
                    claim(conn, user_id)
                    conn.execute(read, {"ids": ids}).fetchall()
                    conn.execute(write, {"id": rng.choice(ids)})
            except psycopg.Error:
                pass
            t1 = time.perf_counter()
            done.append((t1, t1 - t0))
    out.send(done)


def during(target: Target, work: Callable[[], None], clients: int = 3,
           timeline: list[tuple[float, float]] | None = None) -> list[float]:
    """Run ``work()`` while ``clients`` member processes use ``target``: each transaction's seconds
    (and, into ``timeline``, when each ended and how long it took). The load is connected before
    ``work`` starts and stops when it returns."""
    who = members(target)
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    procs: list[Any] = []
    pipes: list[Any] = []
    readies: list[Any] = []
    for seed in range(clients):
        ready = spawn.Event()
        receive, send = spawn.Pipe(duplex=False)
        p = spawn.Process(target=_client, args=(target, who, seed, os.getpid(), stop, ready, send), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(receive)
        readies.append(ready)
    got: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + READY_SECONDS
        for ready, p in zip(readies, procs):
            while not ready.wait(0.05):
                if not p.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"a load client did not connect to {target.label}")
        work()
    finally:
        stop.set()
        for receive in pipes:
            if receive.poll(READY_SECONDS):
                got.extend(receive.recv())
        for p in procs:
            p.join(READY_SECONDS)
            if p.is_alive():
                p.kill()
    got.sort()
    if timeline is not None:
        timeline.extend(got)
    return [seconds for _, seconds in got]


def cpu_burn(target: Target, share: float, seconds: float, chunk: float = 0.25) -> Callable[[], None]:
    """Work for ``during``: a session that only burns a core (``sql/bench/cpu_burn.sql``), ``share``
    of the time (each burn of about ``chunk`` seconds followed by its pause), for ``seconds``."""
    burn = read_sql("bench/cpu_burn.sql")

    def work() -> None:
        with db.connect(target, limits=DEV, autocommit=True, application_name="kbmigrate bench burn") as conn:
            n = 1_000_000
            t0 = time.perf_counter()
            conn.execute(burn, {"n": n})
            n = max(1, int(n * chunk / (time.perf_counter() - t0)))
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                conn.execute(burn, {"n": n})
                time.sleep((time.perf_counter() - t0) * (1 - share) / share)
    return work
