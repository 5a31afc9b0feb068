"""The whole run from far away: ``kbmigrate bench``'s ``remote`` figures.

A Supabase project is 20-150 ms from whoever runs the migration. Each figure here runs the
whole ``kbmigrate run`` on a fresh copy of the demo database at its default size, through a
loopback proxy that delays every packet (``dev/proxy.py``), while an application reads the
knowledge base directly on the server every 10 ms:

- ``round_trips``: how many times the run waited for the server, ``pg_dump`` included, and by
  whom (each step's notebook, the backup, the runner);
- ``added_seconds_50ms``: what 50 ms of distance adds to the whole run, against the same run at
  0 ms (the target: at most the 300 round trips' worth the issue allows, 15 s);
- ``over_loopback_50ms``: the same as a ratio (information: it grows as the run at home gets
  faster, for the same round trips);
- ``app_max_wait_ms``: the application's longest read while the run went on, at 0 and 150 ms.
  A lock held across a round trip makes it grow with the distance; held only while the server
  works, it does not.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.dev.limits import DEV
from kbmigrate.dev.proxy import delayed
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import STEPS
from kbmigrate.run import runner

DELAYS_MS = (0, 50, 150)
PROBE_EVERY = 0.010


def _read(target: Target, parent: int, stop: Any, ready: Any, out: Any) -> None:
    """The application's reader, in a process of its own (``application_reading``)."""
    waits: list[float] = []
    with db.connect(target, limits=DEV, autocommit=True, application_name="bench application") as conn:
        ready.set()
        while not stop.is_set() and os.getppid() == parent:  # a bench killed outright leaves no reader behind
            t0 = time.perf_counter()
            conn.execute("select id, title from public.knowledge_base order by created_at desc limit 1").fetchall()
            waits.append(time.perf_counter() - t0)
            time.sleep(PROBE_EVERY)
    out.send(waits)


@contextmanager
def application_reading(target: Target) -> Iterator[list[float]]:
    """A client of the application on the server itself (no proxy): one row of knowledge_base every
    10 ms, each read's seconds in the list it yields (filled when the block ends). It is a process
    of its own: a thread of the bench's would wait for the bench's own Python (the runner builds
    notebooks and the report in this process, holding the interpreter's lock), and count that
    as the server's."""
    waits: list[float] = []
    spawn = multiprocessing.get_context("spawn")
    stop, ready = spawn.Event(), spawn.Event()
    results, out = spawn.Pipe(duplex=False)
    reader = spawn.Process(target=_read, args=(target, os.getpid(), stop, ready, out), daemon=True)
    reader.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the application's reader did not connect")
        yield waits
    finally:
        stop.set()
        if results.poll(30):
            waits.extend(results.recv())
        reader.join(30)


def who(application: str) -> str:
    """A step (its notebook's sessions), the backup (pg_dump and its snapshot), or the runner."""
    for step in STEPS:
        if re.search(rf"\b{re.escape(step)}\b", application):
            return step
    if application.startswith(("kbmigrate backup", "kbmigrate pg_dump")):
        return "01_backup"
    if application.startswith("kbmigrate pooler probe"):  # preflight's pooler check names no run
        return "00_preflight"
    return "runner"


def one_run(target: Target, delay_ms: float, run_id: str) -> dict[str, Any]:
    """The whole run on ``target`` (a fresh copy) through a proxy ``delay_ms`` away."""
    host, port = target.params.get("host", "127.0.0.1"), int(target.params.get("port", "5432"))
    with delayed(host, port, delay_ms) as proxy, application_reading(target) as waits:
        t0 = time.perf_counter()
        manifest = runner.run(target.via("127.0.0.1", proxy.port), RunParams(), run_id=run_id, progress=False,
                              echo=lambda *a: None, approve="auto")
        seconds = time.perf_counter() - t0
        counts = proxy.counts.snapshot()
    if manifest.get("status") != "succeeded":
        raise RuntimeError(f"the run at {delay_ms} ms did not succeed: {manifest.get('status')}")
    by: dict[str, int] = {}
    for application, n in counts["by_application"].items():
        by[who(application)] = by.get(who(application), 0) + n
    return {"delay_ms": delay_ms, "seconds": round(seconds, 2), "round_trips": counts["round_trips"],
            "connections": counts["connections"], "round_trips_by": dict(sorted(by.items())),
            "round_trips_by_application": dict(sorted(counts["by_application"].items(), key=lambda kv: -kv[1])),
            "app_max_wait_ms": round(max(waits) * 1000, 1) if waits else None, "app_reads": len(waits),
            "step_seconds": {runner.step_of(s): s["seconds"] for s in manifest["steps"]}}


def figures(copy: Any, drop: Any, echo: Any = print, delays: tuple[float, ...] = DELAYS_MS) -> dict[str, Any]:
    """``copy()``: a fresh copy of the demo database at its default size; ``drop(target)``. The
    first delay is the reference (0: loopback through the proxy)."""
    runs = []
    for delay in delays:
        echo(f"  the whole run at {delay:g} ms round trip …")
        target = copy()
        try:
            runs.append(one_run(target, delay, f"bench-remote-{delay:g}ms-{int(time.time())}"))
        finally:
            drop(target)
    base = runs[0]
    out: dict[str, Any] = {"round_trips": base["round_trips"], "round_trips_by": base["round_trips_by"],
                           "app_max_wait_ms": {f"{r['delay_ms']:g}": r["app_max_wait_ms"] for r in runs}}
    for r in runs[1:]:
        out[f"added_seconds_{r['delay_ms']:g}ms"] = round(r["seconds"] - base["seconds"], 2)
        out[f"over_loopback_{r['delay_ms']:g}ms"] = round(r["seconds"] / base["seconds"], 2)
        out[f"app_extra_wait_{r['delay_ms']:g}ms"] = round(r["app_max_wait_ms"] - base["app_max_wait_ms"], 1)
    out["runs"] = runs
    return out
