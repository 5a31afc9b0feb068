"""``kbmigrate bench``: measure every step on the large demo database, and write the results.

Everything runs on copies (CREATE DATABASE ... TEMPLATE) of one demo database, so each figure
starts from the same state. Results go to bench/results.json, bench/results.md and
bench/results.png. How to read them: docs/performance.md.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kbmigrate import db
from kbmigrate.dev.limits import DEV
from kbmigrate.dev import demo, remote
from kbmigrate.dev.load import cpu_burn, during as under_load
from kbmigrate.dev.gating import gated
from kbmigrate.engine import backfill, plan
from kbmigrate.run import runner
from kbmigrate.run.kernel import IpcKernelManager
from kbmigrate.engine.apply import composed
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.components.embedded import bin_dir
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT, RUNS_DIR, read_sql
from kbmigrate.engine.plan import for_step, load
from kbmigrate.checks.rls import acting_as, claim
from kbmigrate.engine.steps import apply_step

BENCH_DIR = Path(os.environ.get("KBMIGRATE_BENCH_DIR") or REPO_ROOT / "bench")


CHANGING_STEPS = plan.CHANGING  # the steps that change app tables


DEV_SECONDS = 3600  # any one client program of the bench


def cell_profile(notebook: Path, top: int = 5) -> list[dict[str, Any]]:
    """The slowest code cells of an executed notebook (papermill records each cell's duration)."""
    nb = json.loads(notebook.read_text())
    cells = [{"seconds": round(c["metadata"].get("papermill", {}).get("duration") or 0.0, 2),
              "cell": " ".join("".join(c["source"]).split())[:100]} for c in nb["cells"] if c["cell_type"] == "code"]
    return sorted(cells, key=lambda c: -c["seconds"])[:top]


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18] if len(xs) >= 20 else max(xs)


def _median_seconds(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Bench:
    def __init__(self, server: Target, size: str, echo: Any = print) -> None:
        self.server = server
        self.size = size
        self.echo = echo
        self.base = f"kbbench_{size}"
        self.admin_target = server.with_database("postgres") if server.source == "embedded" else server
        self.copies: list[str] = []

    # -- databases ---------------------------------------------------------------------------
    def ensure_base(self) -> None:
        with db.connect(self.admin_target, limits=DEV, autocommit=True) as admin:
            fresh = db.database_exists(admin, self.base) and demo.is_demo(admin, self.base) and \
                f"size={self.size}," in str(db.scalar(admin, "select shobj_description(oid, 'pg_database') from pg_database "
                                                             "where datname = %s", (self.base,)))
        if not fresh:
            self.echo(f"building the {self.size} demo database {self.base} …")
            demo.build(self.server, self.base, self.size, 42, progress=True)

    def copy(self, template: str | None = None) -> Target:
        name = f"kbbench_tmp_{uuid.uuid4().hex[:8]}"
        with db.connect(self.admin_target, limits=DEV, autocommit=True) as admin:
            db.create_database(admin, name, template=template or self.base)
        self.copies.append(name)
        return self.server.with_database(name)

    def gated_copy(self, run_id: str) -> Target:
        """A copy of the before-state whose run ``run_id`` holds its gates, as a run gets them
        (preflight, backup, drill: ``dev.gating``); not timed. A copy of a half-migrated database
        could hold none: its backup would not be of the database as it was."""
        target = self.copy()
        gated(target, run_id)
        return target

    def drop(self, target: Target) -> None:
        name = target.params["dbname"]
        with db.connect(self.admin_target, limits=DEV, autocommit=True) as admin:
            db.drop_database(admin, name)
        if name in self.copies:
            self.copies.remove(name)

    def cleanup(self) -> None:
        for name in list(self.copies):
            with db.connect(self.admin_target, limits=DEV, autocommit=True) as admin:
                db.drop_database(admin, name)
        self.copies.clear()

    # -- measurements ------------------------------------------------------------------------
    def backfill_figures(self) -> dict[str, Any]:
        change = for_step("03_backfill")[0]
        out: dict[str, Any] = {}
        batched, single = self.gated_copy("bench-batched"), self.gated_copy("bench-single")
        for target, run in ((batched, "bench-batched"), (single, "bench-single")):  # the schema first, not timed
            with db.connect(target, limits=DEV, autocommit=True) as conn:
                apply_step(conn, "02_schema", RunParams(), run, progress=False)
        try:
            with db.connect(batched, limits=DEV, autocommit=True) as conn:
                # the cost of batching itself: no throttle (its pauses are what the traffic figures weigh)
                o = backfill.run(conn, change, RunParams(throttle=False), "bench-batched", progress=False)
            with db.connect(single, limits=DEV, autocommit=True) as conn:
                t0 = time.perf_counter()
                backfill.run(conn, change, RunParams(batch_size=1_000_000), "bench-single", progress=False)
                single_seconds = time.perf_counter() - t0
            out = {"batched_seconds": round(o.seconds, 3), "single_seconds": round(single_seconds, 3),
                   "batched_over_single": round(o.seconds / single_seconds, 3),
                   "max_batch_seconds": o.detail["max_batch_seconds"], "batches": o.detail["batches"],
                   "rows_per_second": round(o.detail["scanned"] / o.seconds, 1)}
        finally:
            self.drop(single)
        self._after_backfill = batched
        return out

    def rls_figures(self, migrated: Target, repeat: int = 30, slow_repeat: int = 3) -> dict[str, Any]:
        with db.connect(migrated, limits=DEV, autocommit=True) as conn:
            apply_step(conn, "04_seed_sections", RunParams(), "bench-batched", progress=False)
            conn.execute(read_sql("bench/assign_sections.sql"))
            # vacuumed as well as analyzed: left to autovacuum, the backfill's million dead rows were
            # vacuumed while the page queries were timed (0.51 ms against 0.21-0.29 otherwise)
            conn.execute("vacuum (analyze) public.knowledge_base")
            pick = db.rows(conn, """select kb.workspace_id, kb.section_id, count(*) as n,
                                           (select m.user_id from public.workspace_members m where m.workspace_id = kb.workspace_id
                                            order by m.user_id limit 1) as member
                                    from public.knowledge_base kb where kb.section_id is not null
                                    group by 1, 2 order by n desc limit 1""")[0]
            page, page_f, listing = (read_sql(f"bench/{n}.sql") for n in ("page_query", "page_query_filtered", "listing_query"))
            args = {"section": pick["section_id"], "workspace": pick["workspace_id"]}

            def as_member(query: str) -> float:
                with acting_as(conn, pick["member"]):
                    conn.execute(query, args).fetchall()  # warm
                    return _median_seconds(lambda: conn.execute(query, args).fetchall(), repeat)

            def as_service(query: str) -> float:
                with conn.transaction(force_rollback=True):
                    conn.execute("set local role service_role")
                    conn.execute(query, args).fetchall()
                    return _median_seconds(lambda: conn.execute(query, args).fetchall(), repeat)

            policy_page = as_member(page)
            filter_page = as_service(page_f)
            policy_list = as_member(listing)
            with acting_as(conn, pick["member"]):
                visible = conn.execute(listing).fetchone()
            out: dict[str, Any] = {"page_rows": int(min(50, pick["n"])), "policy_page_ms": round(policy_page * 1000, 3),
                                   "filter_page_ms": round(filter_page * 1000, 3),
                                   "policy_over_filter": round(policy_page / filter_page, 3),
                                   "policy_list_ms": round(policy_list * 1000, 3)}
            # the slow forms Supabase's RLS guidance warns about, on the same data, as the same member
            for form in ("secdef", "correlated"):
                with conn.transaction(force_rollback=True):
                    conn.execute(read_sql(f"bench/slow_{form}_policy.sql"))  # rolled back with this transaction
                    claim(conn, pick["member"])
                    if conn.execute(listing).fetchone() != visible:  # the comparison holds only for the same rows
                        raise AssertionError(f"the {form} policy lets the member read other rows than ours")
                    slow_page = _median_seconds(lambda: conn.execute(page, args).fetchall(), repeat)
                    slow_list = _median_seconds(lambda: conn.execute(listing).fetchall(), slow_repeat)
                out |= {f"{form}_page_ms": round(slow_page * 1000, 3), f"{form}_list_ms": round(slow_list * 1000, 3),
                        f"{form}_over_policy": round(slow_list / policy_list, 2),
                        f"{form}_over_policy_page": round(slow_page / policy_page, 2)}
        return out

    def migrated(self) -> Target:
        """A copy of the after-state: the changing steps applied, then vacuumed and analyzed, as
        autovacuum would leave it. Not timed: the load's baseline once the migration is done."""
        target = self.gated_copy("bench-after")
        with db.connect(target, limits=DEV, autocommit=True) as conn:
            for step in CHANGING_STEPS:
                apply_step(conn, step, RunParams(), "bench-after", progress=False)
            conn.execute("vacuum (analyze) public.knowledge_base")
        return target

    def traffic_figures(self, seconds: float, pairs: int = 3) -> dict[str, Any]:
        """Members' latency while the steps that change their tables run, against the same load on an
        idle copy of the after-state: ``pairs`` alternating idle/busy pairs with the throttle on (a
        single pair is too noisy to decide anything), then one busy run with it off, for what the
        throttle costs and buys.

        The baseline is the after-state because the members meet it from the schema step on: its
        policies run on every read for the rest of the migration (and after it), which costs a read
        what ``rls.policy_over_filter`` bounds, not what the migration's load does. The same load on
        the before-state is measured in each pair too (``p95_over_idle_before``: information)."""
        idle, before = self.migrated(), self.copy()
        runs: list[dict[str, Any]] = []
        share = RunParams().work_share
        try:
            # the calibration: a session that only takes a core (no table, no lock), at the share of
            # the time the throttled steps work while the application is there, and at half of it
            burn = {}
            for duty in sorted({share, 0.5}):
                quiet = under_load(idle, lambda: time.sleep(seconds))
                burnt = under_load(idle, cpu_burn(idle, duty, seconds))
                burn[str(duty)] = round(_p95(burnt) / _p95(quiet), 3)
            for i in range(pairs + 1):
                throttled = i < pairs
                self.echo(f"  traffic pair {i + 1}/{pairs}" if throttled else "  traffic: one busy run without the throttle")
                quiet = under_load(idle, lambda: time.sleep(seconds))
                quiet_before = under_load(before, lambda: time.sleep(seconds))
                busy = self.gated_copy("bench-traffic")
                try:
                    params = RunParams(throttle=throttled)
                    took: dict[str, float] = {}

                    def migrate() -> None:
                        with db.connect(busy, limits=DEV, autocommit=True) as conn:
                            t0 = time.perf_counter()
                            for step in CHANGING_STEPS:
                                apply_step(conn, step, params, "bench-traffic", progress=False)
                            took["seconds"] = time.perf_counter() - t0
                    loaded = under_load(busy, migrate)
                finally:
                    self.drop(busy)
                runs.append({"throttle": throttled, "idle_p95_ms": round(_p95(quiet) * 1000, 3),
                             "idle_before_p95_ms": round(_p95(quiet_before) * 1000, 3),
                             "busy_p95_ms": round(_p95(loaded) * 1000, 3),
                             "p95_over_idle": round(_p95(loaded) / _p95(quiet), 3),
                             "p95_over_idle_before": round(_p95(loaded) / _p95(quiet_before), 3),
                             "max_wait_seconds": round(max(loaded), 3), "idle_transactions": len(quiet),
                             "busy_transactions": len(loaded), "migration_seconds": round(took["seconds"], 2)})
        finally:
            self.drop(idle)
            self.drop(before)
        on = [r for r in runs if r["throttle"]]
        off = next(r for r in runs if not r["throttle"])
        med = lambda key: statistics.median(r[key] for r in on)  # noqa: E731
        return {"pairs": len(on), "steps": list(CHANGING_STEPS), "work_share": share,
                "cpu_burn_p95_over_idle": burn,
                "p95_over_idle": round(med("p95_over_idle"), 3),
                "p95_over_idle_spread": [min(r["p95_over_idle"] for r in on), max(r["p95_over_idle"] for r in on)],
                "p95_over_idle_before": round(med("p95_over_idle_before"), 3),
                "after_over_before_idle_p95": round(med("idle_p95_ms") / med("idle_before_p95_ms"), 3),
                "max_wait_seconds": round(med("max_wait_seconds"), 3),
                "max_wait_seconds_spread": [min(r["max_wait_seconds"] for r in on), max(r["max_wait_seconds"] for r in on)],
                "idle_p95_ms": round(med("idle_p95_ms"), 3), "idle_before_p95_ms": round(med("idle_before_p95_ms"), 3),
                "busy_p95_ms": round(med("busy_p95_ms"), 3),
                "migration_seconds": round(med("migration_seconds"), 2),
                "unthrottled_migration_seconds": off["migration_seconds"],
                "throttle_cost_seconds": round(med("migration_seconds") - off["migration_seconds"], 2),
                "unthrottled_p95_over_idle": off["p95_over_idle"],
                "unthrottled_max_wait_seconds": off["max_wait_seconds"],
                "runs": runs}

    def run_figures(self) -> dict[str, Any]:
        """The whole ``kbmigrate run`` against what the original package did on an identical copy:
        a plain ``pg_dump`` and the same deploy SQL through ``psql``."""
        via_runner = self.copy()
        via_seed = self.copy()
        try:
            t0 = time.perf_counter()
            manifest = runner.run(via_runner, RunParams(), progress=False, echo=lambda *a: None, approve="auto")
            run_seconds = time.perf_counter() - t0
            rehearsed = rehearsal_figures(via_runner, manifest)
            dump_seconds = self._plain_dump(via_seed)
            psql_seconds = self._psql(via_seed)
            trivial = self._trivial_notebook(via_runner)
        finally:
            self.drop(via_runner)
            self.drop(via_seed)
        b = manifest.get("backup", {})
        steps = {runner.step_of(s): s["seconds"] for s in manifest["steps"]}
        seed_seconds = dump_seconds + psql_seconds
        changing = sum(v for k, v in steps.items() if k in CHANGING_STEPS)
        slowest = max(manifest["steps"], key=lambda s: s["seconds"])
        return {"run": {"seconds": round(run_seconds, 2), "seed_seconds": round(seed_seconds, 2),
                        "over_seed": round(run_seconds / seed_seconds, 2),
                        "app_tables_changing_seconds": round(changing, 2),
                        "seed_app_tables_changing_seconds": round(psql_seconds, 2),
                        "changing_over_seed": round(changing / psql_seconds, 2),
                        "notebook_overhead_seconds": round(trivial, 2),
                        "step_seconds": steps,
                        "slowest_step": {"step": runner.step_of(slowest), "seconds": slowest["seconds"],
                                         "cells": cell_profile(REPO_ROOT / slowest["notebook"])}},
                "seed": {"pg_dump_seconds": round(dump_seconds, 2), "psql_seconds": round(psql_seconds, 2),
                         "seconds": round(seed_seconds, 2)},
                "backup": {"seconds": b.get("seconds"), "bytes": b.get("bytes"),
                           "mb_per_second": round(b["bytes"] / 2**20 / b["seconds"], 2) if b.get("seconds") else None},
                "restore_drill": {"seconds": (b.get("restore_drill") or {}).get("seconds")},
                "rehearsal": rehearsed}

    def whole_run_seconds(self) -> tuple[int, float]:
        """One ``kbmigrate run`` on a copy of this size's database: (KB rows, seconds)."""
        target = self.copy()
        try:
            with db.connect(target, limits=DEV) as conn:
                rows = int(db.scalar(conn, "select count(*) from public.knowledge_base"))
            t0 = time.perf_counter()
            runner.run(target, RunParams(), progress=False, echo=lambda *a: None, approve="auto")
            return rows, time.perf_counter() - t0
        finally:
            self.drop(target)

    def _plain_dump(self, target: Target) -> float:
        """What the original package did first: ``pg_dump $DB_URL > backup.sql``."""
        env = {**os.environ, **libpq_env(target)}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([str(bin_dir() / "pg_dump"), "--no-password", "--file", str(Path(tmp) / "backup.sql")],
                           env=env, check=True, capture_output=True, text=True, timeout=DEV_SECONDS)
            return time.perf_counter() - t0

    def _psql(self, target: Target) -> float:
        """The same deploy SQL through psql: one file per change, settings as the runner sets them."""
        params = RunParams(batch_size=1_000_000)
        lines = ["\\set ON_ERROR_STOP on"]
        for name, value in params.settings("bench-psql").items():
            lines.append(f"select set_config('{name}', :'v_{name.replace('.', '_')}', false);")
        with tempfile.TemporaryDirectory() as tmp:
            variables = []
            for change in load():
                text = composed(change, params)
                text = text.as_string(None) if not isinstance(text, str) else text
                path = Path(tmp) / f"{change.name}.sql"
                path.write_text(text)
                for name, value in change.settings().items():  # a legacy source's own description
                    var = f"v_{change.name}_{name.replace('.', '_')}"
                    lines.append(f"select set_config('{name}', :'{var}', false);")
                    variables += ["-v", f"{var}={value}"]
                # each change in a transaction of its own, as the runner applies it (but CONCURRENTLY)
                lines.append(f"\\i {path}" if change.has("notx") else f"begin;\n\\i {path}\ncommit;")
            script = Path(tmp) / "all.sql"
            script.write_text("\n".join(lines) + "\n")
            for name, value in params.settings("bench-psql").items():
                variables += ["-v", f"v_{name.replace('.', '_')}={value}"]
            env = {**os.environ, **libpq_env(target)}
            t0 = time.perf_counter()
            subprocess.run([str(bin_dir() / "psql"), "-X", "-q", *variables, "-f", str(script)], env=env, check=True,
                           capture_output=True, text=True, timeout=DEV_SECONDS)
            return time.perf_counter() - t0

    def _trivial_notebook(self, target: Target) -> float:
        """Kernel start, imports, connect: what every notebook costs before its first step."""
        import nbformat
        import papermill

        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell("from kbmigrate import runbook\nkb = runbook.start('00_preflight', globals())")]
        times = []
        with tempfile.TemporaryDirectory() as tmp, runner.kernel_environment(target):
            src = Path(tmp) / "t.ipynb"
            nbformat.write(nb, src)
            for _ in range(3):
                t0 = time.perf_counter()
                papermill.execute_notebook(str(src), str(Path(tmp) / "o.ipynb"), kernel_name="python3", progress_bar=False,
                                           kernel_manager_class=IpcKernelManager)
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def machine() -> dict[str, str]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cores": str(os.cpu_count()), "ram_gb": f"{mem / 2**30:.1f}"}


SCALE_FROM = {"large": "medium", "medium": "small", "small": "small"}  # small against itself: the test suite's


def run(server: Target, size: str = "large", *, traffic_seconds: float = 10.0, traffic_pairs: int = 5,
        echo: Any = print, remote_delays: tuple[float, ...] = remote.DELAYS_MS) -> dict[str, Any]:
    b = Bench(server, size, echo)
    b.ensure_base()
    results: dict[str, Any] = {}
    try:
        with db.connect(server.with_database(b.base), limits=DEV) as conn:
            results["dataset"] = {"kb_rows": int(db.scalar(conn, "select count(*) from public.knowledge_base")),
                                  "workspaces": int(db.scalar(conn, "select count(*) from public.workspaces")),
                                  "users": int(db.scalar(conn, "select count(*) from public.users")),
                                  "size": size}
            results["postgres_version"] = db.server_version(conn)
        results["machine"] = machine()
        echo("schema step on a copy …")
        schema_copy = b.gated_copy("bench")
        with db.connect(schema_copy, limits=DEV, autocommit=True) as conn:
            t0 = time.perf_counter()
            apply_step(conn, "02_schema", RunParams(), "bench", progress=False)
            results["schema"] = {"seconds": round(time.perf_counter() - t0, 3)}
        echo("backfill: batched against one set-based update …")
        results["backfill"] = b.backfill_figures()
        b.drop(schema_copy)
        echo("RLS: our policies against an explicit filter and the slow forms …")
        results["rls"] = b.rls_figures(b._after_backfill)
        b.drop(b._after_backfill)
        echo(f"traffic: {traffic_pairs} idle/busy pairs with the throttle, one busy run without …")
        results["traffic"] = b.traffic_figures(traffic_seconds, traffic_pairs)
        echo("the whole run against pg_dump + psql …")
        results.update(b.run_figures())
        smaller = Bench(server, SCALE_FROM[size], echo)
        if smaller.size == size:  # the smallest size has none smaller: its own run stands in
            small_rows, small_seconds = results["dataset"]["kb_rows"], results["run"]["seconds"]
        else:
            smaller.ensure_base()
            echo(f"growth: the whole run at {smaller.size} …")
            try:
                small_rows, small_seconds = smaller.whole_run_seconds()
            finally:
                smaller.cleanup()
        rows_ratio = results["dataset"]["kb_rows"] / small_rows
        time_ratio = results["run"]["seconds"] / small_seconds
        results["scale"] = {"sizes": [smaller.size, size], "kb_rows": [small_rows, results["dataset"]["kb_rows"]],
                            "seconds": [round(small_seconds, 2), results["run"]["seconds"]],
                            "rows_ratio": round(rows_ratio, 2), "time_ratio": round(time_ratio, 2),
                            "time_over_rows": round(time_ratio / rows_ratio, 3)}
        if (smaller.size, size) == ("medium", "large"):
            results["scale"]["time_ratio_1m_over_100k"] = results["scale"]["time_ratio"]
        echo("remote: the whole run through a delaying proxy, at the demo's default size …")
        near = Bench(server, "small", echo)
        near.ensure_base()
        try:
            results["remote"] = remote.figures(near.copy, near.drop, echo, remote_delays)
        finally:
            near.cleanup()
        results["runner"] = {"peak_rss_mb": round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1)}
    finally:
        b.cleanup()
    write(results)
    return results


def rehearsal_figures(target: Target, manifest: dict[str, Any]) -> dict[str, Any]:
    """The rehearsal against production, on the same machine: its seconds; the rehearsed time on
    the server of the changes that lock application tables against production's (the ledger's
    ``held_seconds``: a figure to explain, no target); and the largest share of its lock budget
    any of those changes used in production (engine/budget.py: above 1 it would have stopped)."""
    from kbmigrate.backup import rehearsal
    from kbmigrate.engine import budget

    run_id = manifest["run_id"]
    evidence = json.loads((RUNS_DIR / run_id / rehearsal.FILE).read_text(encoding="utf-8"))
    with db.connect(target, limits=DEV) as conn:
        held = {r["change"]: float(r["held"]) for r in db.rows(conn, """
            select change, (detail ->> 'held_seconds')::float8 as held from kbmigrate.ledger
            where run_id = %s and outcome = 'applied' and detail ? 'held_seconds' and jsonb_array_length(detail -> 'locks') > 0""",
            (run_id,))}
    basis = budget.basis(evidence["changes"])
    both = sorted(set(basis) & set(held))
    budgets = {c: b.seconds for c in both if (b := budget.for_change(run_id, c, RunParams())) is not None}
    used = {c: held[c] / budgets[c] for c in budgets}
    undone = evidence.get("rollback") or {}
    return {"seconds": evidence["seconds"], "rollback_seconds": undone.get("rollback_seconds"),
            "applied_again_seconds": round(undone["seconds"] - undone["rollback_seconds"], 2) if undone else None,
            "changes_compared": len(both),
            "predicted_seconds": round(sum(basis[c] for c in both), 3),
            "actual_seconds": round(sum(held[c] for c in both), 3),
            "predicted_over_actual": round(sum(basis[c] for c in both) / max(sum(held[c] for c in both), 1e-6), 2),
            "max_budget_used": round(max(used.values(), default=0.0), 3),
            "max_budget_used_by": max(used, key=lambda c: used[c]) if used else None,
            "over_budget": sorted(c for c, u in used.items() if u > 1)}


# (key, limit): every one must hold in one run at 1M rows (issues 14 and 22). run.over_seed (the
# whole run, checks included, against pg_dump + psql without any) is information now; the whole
# run's target is the time the application's tables are being changed, against the seed's psql.
# The remote figures are of the demo's default size, through the bench's own delaying proxy. The
# distance's target is the time it adds (300 round trips at 50 ms: 15 s); its ratio to the run at
# home (issue 22 asked ≤ 2) is information: at 8.2 s at home, ≤ 2 meant at most 164 round trips,
# pg_dump's 82 among them, fewer than the 300 the same issue allows, and fewer still as the run
# at home gets faster.
TARGETS = [("backfill.batched_over_single", 1.3), ("backfill.max_batch_seconds", 1.0), ("traffic.p95_over_idle", 1.5),
           ("traffic.max_wait_seconds", 1.0), ("rls.policy_over_filter", 1.2), ("run.changing_over_seed", 1.5),
           ("scale.time_ratio_1m_over_100k", 11.0), ("remote.round_trips", 300), ("remote.added_seconds_50ms", 15.0),
           ("remote.app_extra_wait_150ms", 150), ("rehearsal.max_budget_used", 1.0)]
# reported, no limit
FIGURES = ["traffic.work_share", "traffic.cpu_burn_p95_over_idle", "traffic.p95_over_idle_spread", "traffic.p95_over_idle_before", "traffic.after_over_before_idle_p95", "traffic.max_wait_seconds_spread", "traffic.unthrottled_p95_over_idle",
           "traffic.migration_seconds", "traffic.unthrottled_migration_seconds", "traffic.throttle_cost_seconds",
           "run.seconds", "run.over_seed", "seed.seconds", "seed.pg_dump_seconds", "seed.psql_seconds",
           "run.app_tables_changing_seconds", "run.notebook_overhead_seconds", "rls.secdef_over_policy",
           "rls.correlated_over_policy", "rls.secdef_over_policy_page", "rls.correlated_over_policy_page",
           "scale.time_over_rows", "backfill.rows_per_second", "backup.seconds", "backup.mb_per_second",
           "restore_drill.seconds", "remote.over_loopback_50ms", "remote.app_max_wait_ms", "remote.round_trips_by",
           "runner.peak_rss_mb", "rehearsal.seconds", "rehearsal.rollback_seconds", "rehearsal.applied_again_seconds",
           "rehearsal.predicted_over_actual", "rehearsal.over_budget"]


def met(results: dict[str, Any], key: str, limit: float) -> bool | None:
    """Whether a target holds; None when it was not measured (the 1M/100k ratio off the large size)."""
    try:
        return bool(get(results, key) <= limit)
    except KeyError:
        return None


def get(results: dict[str, Any], dotted: str) -> Any:
    value: Any = results
    for part in dotted.split("."):
        value = value[part]
    return value


def write(results: dict[str, Any]) -> None:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2))
    (BENCH_DIR / "results.md").write_text(table(results))
    chart(results)


def table(results: dict[str, Any]) -> str:
    d = results["dataset"]
    lines = [f"# Benchmark: {d['kb_rows']:,} KB rows, {d['workspaces']:,} workspaces, {d['users']:,} users", "",
             f"PostgreSQL {results['postgres_version']}, {results['machine']['cores']} cores, "
             f"{results['machine']['ram_gb']} GB RAM", "",
             "| figure | value | target | met |", "|---|---|---|---|"]
    for key, limit in TARGETS:
        ok = met(results, key, limit)
        value = get(results, key) if ok is not None else "not measured at this size" if key.startswith("scale.") \
            else "not measured in this run"
        lines.append(f"| `{key}` | {value} | ≤ {limit:g} | {'—' if ok is None else 'yes' if ok else 'NO'} |")
    for key in FIGURES:
        try:
            lines.append(f"| `{key}` | {get(results, key)} | | |")
        except KeyError:  # a figure the bench did not have when this run was made
            lines.append(f"| `{key}` | not measured in this run | | |")
    missed = [key for key, limit in TARGETS if met(results, key, limit) is False]
    if missed:  # say what the time goes to, not only that it missed
        run, slowest = results["run"], results["run"]["slowest_step"]
        lines += ["", f"## Where the time goes (missed: {', '.join(f'`{k}`' for k in missed)})", "",
                  f"The whole run took {run['seconds']} s, the original package's way {results['seed']['seconds']} s "
                  f"(`pg_dump` {results['seed']['pg_dump_seconds']} s, `psql` {results['seed']['psql_seconds']} s). Per step:", "",
                  "| step | seconds |", "|---|---|"]
        lines += [f"| {step} | {seconds} |" for step, seconds in run["step_seconds"].items()]
        lines += ["", f"The slowest step, {slowest['step']} ({slowest['seconds']} s), by cell:", "",
                  "| seconds | cell |", "|---|---|"]
        lines += [f"| {c['seconds']} | `{c['cell'].replace('|', '/')}` |" for c in slowest["cells"]]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(k, t) for k, t in TARGETS if met(results, k, t) is not None]
    keys = [k for k, _ in shown]
    values = [get(results, k) / t for k, t in shown]  # each against its own limit: 1.0 is the target
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.barh(keys, values, color=["#4472c4" if v <= 1 else "#c0504d" for v in values])
    ax.axvline(1.0, color="black", linestyle=":", label="target")
    ax.invert_yaxis()
    ax.set_xlabel("figure ÷ its target (≤ 1 is met)")
    ax.set_title(f"kbmigrate bench — {results['dataset']['kb_rows']:,} KB rows")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(BENCH_DIR / "results.png", dpi=110)
    plt.close(fig)
