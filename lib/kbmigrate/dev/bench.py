"""``kbmigrate bench``: measure every step on the large demo database, and write the results.

Everything runs on copies (CREATE DATABASE ... TEMPLATE) of one demo database, so each figure
starts from the same state. Results go to bench/results.json, bench/results.md and
bench/results.png. How to read them: docs/performance.md.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.dev.limits import DEV
from kbmigrate.dev import demo
from kbmigrate.engine import backfill
from kbmigrate.run import runner
from kbmigrate.engine.apply import composed
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.components.embedded import bin_dir
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT, read_sql
from kbmigrate.engine.plan import for_step, load
from kbmigrate.checks.rls import acting_as, claim
from kbmigrate.engine.steps import apply_step

BENCH_DIR = Path(os.environ.get("KBMIGRATE_BENCH_DIR") or REPO_ROOT / "bench")


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
    def backfill_figures(self, schema_copy: Target) -> dict[str, Any]:
        change = for_step("03_backfill")[0]
        out: dict[str, Any] = {}
        batched = self.copy(schema_copy.params["dbname"])
        single = self.copy(schema_copy.params["dbname"])
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

    def rls_figures(self, migrated: Target, repeat: int = 30) -> dict[str, Any]:
        with db.connect(migrated, limits=DEV, autocommit=True) as conn:
            apply_step(conn, "04_seed_sections", RunParams(), "bench", progress=False)
            conn.execute(read_sql("bench/assign_sections.sql"))
            conn.execute("analyze public.knowledge_base")
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
            with conn.transaction(force_rollback=True):
                conn.execute(read_sql("bench/naive_policy.sql"))  # rolled back with this transaction
                claim(conn, pick["member"])
                conn.execute(page, args).fetchall()
                naive_page = _median_seconds(lambda: conn.execute(page, args).fetchall(), repeat)
                naive_list = _median_seconds(lambda: conn.execute(listing).fetchall(), max(3, repeat // 10))
        return {"page_rows": int(min(50, pick["n"])), "policy_page_ms": round(policy_page * 1000, 3),
                "filter_page_ms": round(filter_page * 1000, 3), "policy_over_filter": round(policy_page / filter_page, 3),
                "naive_page_ms": round(naive_page * 1000, 3), "policy_list_ms": round(policy_list * 1000, 3),
                "naive_list_ms": round(naive_list * 1000, 3),
                "naive_over_policy": round(naive_list / policy_list, 2),
                "naive_over_policy_page": round(naive_page / policy_page, 2)}

    def traffic_figures(self, seconds: float) -> dict[str, Any]:
        idle = self.copy()
        busy = self.copy()
        try:
            quiet = self._load(idle, lambda: time.sleep(seconds))

            def migrate() -> None:
                with db.connect(busy, limits=DEV, autocommit=True) as conn:
                    apply_step(conn, "02_schema", RunParams(), "bench-traffic", progress=False)
                    apply_step(conn, "03_backfill", RunParams(), "bench-traffic", progress=False)
            t0 = time.perf_counter()
            loaded = self._load(busy, migrate)
            work = time.perf_counter() - t0
        finally:
            self.drop(idle)
            self.drop(busy)
        p95 = lambda xs: statistics.quantiles(xs, n=20)[18] if len(xs) >= 20 else max(xs)  # noqa: E731
        return {"idle_p95_ms": round(p95(quiet) * 1000, 3), "busy_p95_ms": round(p95(loaded) * 1000, 3),
                "p95_over_idle": round(p95(loaded) / p95(quiet), 3), "max_wait_seconds": round(max(loaded), 3),
                "busy_transactions": len(loaded), "idle_transactions": len(quiet), "migration_seconds": round(work, 2)}

    def _load(self, target: Target, during: Any, clients: int = 3) -> list[float]:
        with db.connect(target, limits=DEV) as conn:
            members = db.rows(conn, """select created_by as user_id, (array_agg(id order by id))[1:20] as ids
                                       from public.knowledge_base where created_by is not null
                                       group by created_by order by created_by limit 2000""")
        stop = threading.Event()
        latencies: list[float] = []
        lock = threading.Lock()
        read, write = read_sql("bench/load_read.sql"), read_sql("bench/load_write.sql")

        def client(seed: int) -> None:
            rng = random.Random(seed)
            with db.connect(target, limits=DEV, autocommit=True, application_name="kbmigrate bench load") as conn:
                while not stop.is_set():
                    m = rng.choice(members)
                    t0 = time.perf_counter()
                    try:
                        with conn.transaction():  # committed: the load's writes are real
                            claim(conn, m["user_id"])
                            conn.execute(read, {"ids": m["ids"]}).fetchall()
                            conn.execute(write, {"id": rng.choice(m["ids"])})
                    except psycopg.Error:
                        pass
                    with lock:
                        latencies.append(time.perf_counter() - t0)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        try:
            during()
        finally:
            stop.set()
            for t in threads:
                t.join()
        return latencies

    def run_figures(self) -> dict[str, Any]:
        via_runner = self.copy()
        via_psql = self.copy()
        try:
            t0 = time.perf_counter()
            manifest = runner.run(via_runner, RunParams(), progress=False, echo=lambda *a: None)
            run_seconds = time.perf_counter() - t0
            psql_seconds = self._psql(via_psql)
            trivial = self._trivial_notebook(via_runner)
        finally:
            self.drop(via_runner)
            self.drop(via_psql)
        b = manifest.get("backup", {})
        overhead = {Path(s["notebook"]).stem: round(trivial, 2) for s in manifest["steps"]}
        return {"run": {"seconds": round(run_seconds, 2), "psql_seconds": round(psql_seconds, 2),
                        "over_psql": round(run_seconds / psql_seconds, 2), "notebook_overhead_seconds": overhead,
                        "step_seconds": {Path(s["notebook"]).stem: s["seconds"] for s in manifest["steps"]}},
                "backup": {"seconds": b.get("seconds"), "bytes": b.get("bytes"),
                           "mb_per_second": round(b["bytes"] / 2**20 / b["seconds"], 2) if b.get("seconds") else None},
                "restore_drill": {"seconds": (b.get("restore_drill") or {}).get("seconds")}}

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
                           capture_output=True, text=True)
            return time.perf_counter() - t0

    def _trivial_notebook(self, target: Target) -> float:
        """Kernel start, imports, connect: what every notebook costs before its first step."""
        import nbformat
        import papermill

        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell("from kbmigrate.run import nb\nkb = nb.start('00_preflight', globals())")]
        times = []
        with tempfile.TemporaryDirectory() as tmp, runner.kernel_environment(target):
            src = Path(tmp) / "t.ipynb"
            nbformat.write(nb, src)
            for _ in range(3):
                t0 = time.perf_counter()
                papermill.execute_notebook(str(src), str(Path(tmp) / "o.ipynb"), kernel_name="python3", progress_bar=False,
                                           kernel_manager_class=runner.IpcKernelManager)
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def machine() -> dict[str, str]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cores": str(os.cpu_count()), "ram_gb": f"{mem / 2**30:.1f}"}


def run(server: Target, size: str = "large", *, traffic_seconds: float = 10.0, echo: Any = print) -> dict[str, Any]:
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
        schema_copy = b.copy()
        with db.connect(schema_copy, limits=DEV, autocommit=True) as conn:
            t0 = time.perf_counter()
            apply_step(conn, "02_schema", RunParams(), "bench", progress=False)
            results["schema"] = {"seconds": round(time.perf_counter() - t0, 3)}
        echo("backfill: batched against one set-based update …")
        results["backfill"] = b.backfill_figures(schema_copy)
        b.drop(schema_copy)
        echo("RLS: policies against an explicit filter and a naive policy …")
        results["rls"] = b.rls_figures(b._after_backfill)
        b.drop(b._after_backfill)
        echo("traffic during schema and backfill …")
        results["traffic"] = b.traffic_figures(traffic_seconds)
        echo("the whole run against psql …")
        results.update(b.run_figures())
        results["runner"] = {"peak_rss_mb": round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1)}
    finally:
        b.cleanup()
    write(results)
    return results


TARGETS = [("backfill.batched_over_single", 1.3), ("backfill.max_batch_seconds", 1.0), ("traffic.p95_over_idle", 1.5),
           ("rls.policy_over_filter", 1.2), ("run.over_psql", 1.5)]


def get(results: dict[str, Any], dotted: str) -> Any:
    value: Any = results
    for part in dotted.split("."):
        value = value[part]
    return value


def write(results: dict[str, Any]) -> None:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2))
    lines = [f"# Benchmark: {results['dataset']['kb_rows']:,} KB rows, {results['dataset']['workspaces']:,} workspaces, "
             f"{results['dataset']['users']:,} users", "",
             f"PostgreSQL {results['postgres_version']}, {results['machine']['cores']} cores, {results['machine']['ram_gb']} GB RAM", "",
             "| figure | value | target | met |", "|---|---|---|---|"]
    for key, target in TARGETS:
        value = get(results, key)
        lines.append(f"| `{key}` | {value} | ≤ {target} | {'yes' if value <= target else 'NO'} |")
    lines.append(f"| `rls.naive_over_policy` | {get(results, 'rls.naive_over_policy')} | ≥ 20 (expected) | "
                 f"{'yes' if get(results, 'rls.naive_over_policy') >= 20 else 'NO'} |")
    for key in ("backfill.rows_per_second", "traffic.max_wait_seconds", "backup.seconds", "backup.mb_per_second",
                "restore_drill.seconds", "runner.peak_rss_mb", "run.seconds", "run.psql_seconds"):
        lines.append(f"| `{key}` | {get(results, key)} | | |")
    (BENCH_DIR / "results.md").write_text("\n".join(lines) + "\n")
    chart(results)


def chart(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, _ in TARGETS]
    values = [get(results, k) for k in keys]
    limits = [t for _, t in TARGETS]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    colors = ["#4472c4" if v <= t else "#c0504d" for v, t in zip(values, limits)]
    ax.barh(keys, values, color=colors)
    ax.scatter(limits, keys, marker="|", s=400, color="black", label="target")
    ax.invert_yaxis()
    ax.set_xlabel("ratio (or seconds); lower is better")
    ax.set_title(f"kbmigrate bench — {results['dataset']['kb_rows']:,} KB rows")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(BENCH_DIR / "results.png", dpi=110)
    plt.close(fig)
