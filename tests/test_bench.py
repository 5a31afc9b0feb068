"""The bench runs on the small database and writes well-formed results (figures are not judged here:
benchmarks are never timed tests), each derived figure consistent with the measurements it is made of."""

from __future__ import annotations

import json
import numbers
import statistics

from kbmigrate.dev import bench
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT

KEYS = ["dataset.kb_rows", "dataset.workspaces", "dataset.users", "backfill.batched_over_single",
        "backfill.max_batch_seconds", "backfill.rows_per_second", "traffic.p95_over_idle", "traffic.max_wait_seconds",
        "traffic.throttle_cost_seconds", "rls.policy_over_filter", "rls.secdef_over_policy", "rls.correlated_over_policy",
        "run.over_seed", "run.app_tables_changing_seconds", "seed.pg_dump_seconds", "seed.psql_seconds",
        "scale.time_ratio", "backup.seconds", "backup.mb_per_second", "restore_drill.seconds", "runner.peak_rss_mb",
        "remote.round_trips", "rehearsal.seconds", "rehearsal.predicted_over_actual", "rehearsal.max_budget_used"]


def test_bench_writes_well_formed_results(server: Target, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    results = bench.run(server, "small", traffic_seconds=0.5, traffic_pairs=2, echo=lambda *a: None,
                        remote_delays=(0,))  # the round trips; the distances are the bench's own to measure
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    for key in KEYS:
        value = bench.get(on_disk, key)
        assert isinstance(value, numbers.Number) and not isinstance(value, bool), (key, value)
        # what the throttle costs may come out below zero on a quiet machine (it is a difference of
        # two timed runs); every other figure is a count, a duration or a ratio of durations
        assert value >= 0 or key == "traffic.throttle_cost_seconds", (key, value)
    assert on_disk["dataset"]["kb_rows"] == 800
    remote = on_disk["remote"]  # every round trip the proxy counted belongs to one of the run's clients
    assert sum(remote["round_trips_by"].values()) == remote["round_trips"] == remote["runs"][0]["round_trips"] > 0
    assert isinstance(on_disk["machine"]["cores"], str) and isinstance(on_disk["postgres_version"], str)

    traffic = on_disk["traffic"]  # medians of the throttled pairs, and one run without the throttle
    # the calibration: a core's share taken at the throttle's share of the time, and at half
    assert traffic["work_share"] == RunParams().work_share
    assert set(traffic["cpu_burn_p95_over_idle"]) == {str(traffic["work_share"]), "0.5"}
    assert all(v > 0 for v in traffic["cpu_burn_p95_over_idle"].values())
    on = [r for r in traffic["runs"] if r["throttle"]]
    assert len(on) == traffic["pairs"] == 2 and len(traffic["runs"]) == 3
    assert traffic["p95_over_idle"] == round(statistics.median(r["p95_over_idle"] for r in on), 3)
    assert traffic["p95_over_idle_spread"] == [min(r["p95_over_idle"] for r in on), max(r["p95_over_idle"] for r in on)]
    # (the median is rounded to 10 ms before it is shown, the cost after)
    assert abs(traffic["throttle_cost_seconds"] - (traffic["migration_seconds"] - traffic["unthrottled_migration_seconds"])) < 0.011
    # each pair's ratio is of its own p95s (those are rounded to a microsecond, hence the tolerance)
    assert all(abs(r["p95_over_idle"] / (r["busy_p95_ms"] / r["idle_p95_ms"]) - 1) < 0.01 for r in traffic["runs"])
    # the same busy load against the before-state too: information, its own median
    assert traffic["p95_over_idle_before"] == round(statistics.median(r["p95_over_idle_before"] for r in on), 3)
    assert all(abs(r["p95_over_idle_before"] / (r["busy_p95_ms"] / r["idle_before_p95_ms"]) - 1) < 0.01 for r in traffic["runs"])

    run, seed = on_disk["run"], on_disk["seed"]
    assert abs(seed["seconds"] - (seed["pg_dump_seconds"] + seed["psql_seconds"])) < 0.02
    # (the parts are rounded to 10 ms, which at this size moves the ratio by a few per cent)
    assert abs(run["over_seed"] / (run["seconds"] / seed["seconds"]) - 1) < 0.1
    assert set(run["step_seconds"]) == {f"0{i}_{n}" for i, n in enumerate(
        ["preflight", "backup", "schema", "backfill", "seed_sections", "import_legacy", "smoke_tests"])}
    changing = sum(v for k, v in run["step_seconds"].items() if k[:2] in ("02", "03", "04", "05"))
    assert abs(run["app_tables_changing_seconds"] - changing) < 0.02
    assert run["slowest_step"]["seconds"] == max(run["step_seconds"].values()) and run["slowest_step"]["cells"]

    rehearsal = on_disk["rehearsal"]  # the ratio is of its parts; within budget: none over, the largest share under 1
    assert rehearsal["changes_compared"] >= 10 and rehearsal["over_budget"] == [] and 0 < rehearsal["max_budget_used"] <= 1
    assert rehearsal["rollback_seconds"] > 0 and rehearsal["applied_again_seconds"] > 0  # the copy rolled back, then migrated again
    assert abs(rehearsal["predicted_over_actual"] - rehearsal["predicted_seconds"] / rehearsal["actual_seconds"]) < 0.01
    assert on_disk["scale"]["sizes"] == ["small", "small"] and "time_ratio_1m_over_100k" not in on_disk["scale"]
    assert on_disk["rls"]["secdef_list_ms"] > 0 and on_disk["rls"]["correlated_list_ms"] > 0
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "results.md").read_text()
    assert all(f"`{k}`" in table for k, _ in bench.TARGETS) and all(f"`{k}`" in table for k in bench.FIGURES)
    assert "| `scale.time_ratio_1m_over_100k` | not measured at this size |" in table


def test_the_performance_doc_shows_the_committed_run() -> None:
    """docs/performance.md shows the run in bench/, and that table is what results.json says."""
    results = json.loads((REPO_ROOT / "bench" / "results.json").read_text())
    table = (REPO_ROOT / "bench" / "results.md").read_text()
    assert bench.table(results) == table
    rows = table[table.index("| figure |"):].strip()
    assert rows in (REPO_ROOT / "docs" / "performance.md").read_text()


def test_the_members_load_runs_in_processes_of_its_own_and_commits(small_demo: Target) -> None:
    """dev/load.py: the load's clients are connected while the work runs, each from a process of
    its own (its session is named after its process id), and their edits commit."""
    import os
    import time

    from kbmigrate import db
    from kbmigrate.dev.limits import DEV
    from kbmigrate.dev.load import during

    seen: list[str] = []
    with db.connect(small_demo, limits=DEV, autocommit=True) as conn:
        xid = int(db.scalar(conn, "select pg_current_xact_id()::text::bigint"))

        def work() -> None:
            time.sleep(0.5)
            seen.extend(r["application_name"] for r in db.rows(conn, """select application_name from pg_stat_activity
                where application_name like 'kbmigrate bench load %%' and datname = current_database()"""))
        timeline: list[tuple[float, float]] = []
        latencies = during(small_demo, work, clients=3, timeline=timeline)
        edited = int(db.scalar(conn, "select count(*) from public.knowledge_base where xmin::text::bigint > %s", (xid,)))
    pids = {int(name.rsplit(" ", 1)[1]) for name in seen}
    assert len(seen) == 3 and len(pids) == 3 and os.getpid() not in pids
    assert latencies and len(latencies) == len(timeline) and [t for t, _ in timeline] == sorted(t for t, _ in timeline)
    assert edited > 0  # (each transaction edits one entry; entries edited twice count once)


def test_a_bench_killed_outright_leaves_no_load_behind(small_demo: Target) -> None:
    """A bench killed with SIGKILL runs no cleanup; its load clients notice that their parent is
    gone and end (before this, they kept loading the server until someone killed them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from kbmigrate import db
    from kbmigrate.dev.limits import DEV

    script = ("import os, time\nfrom kbmigrate.conninfo import Target\nfrom kbmigrate.dev.load import during\n"
              "if __name__ == '__main__':\n"  # (the connection in the environment: never on a command line)
              "    target = Target(os.environ['KBT_LOAD_TARGET'], 'dsn')\n"
              "    during(target, lambda: (print('loading', flush=True), time.sleep(600)))\n")
    count = ("select count(*) from pg_stat_activity where application_name like 'kbmigrate bench load %%' "
             "and datname = current_database()")
    bench = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "KBT_LOAD_TARGET": small_demo.conninfo})
    try:
        assert bench.stdout is not None and bench.stdout.readline() == "loading\n"
        with db.connect(small_demo, limits=DEV, autocommit=True) as conn:
            assert int(db.scalar(conn, count)) == 3
            os.kill(bench.pid, signal.SIGKILL)
            bench.wait(10)
            deadline = time.monotonic() + 15
            while int(db.scalar(conn, count)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert int(db.scalar(conn, count)) == 0
    finally:
        bench.kill()
