"""The bench runs on the small database and writes well-formed results (figures are not judged here)."""

from __future__ import annotations

import json
import numbers

from kbmigrate.dev import bench
from kbmigrate.conninfo import Target

KEYS = ["dataset.kb_rows", "dataset.workspaces", "dataset.users", "backfill.batched_over_single",
        "backfill.max_batch_seconds", "backfill.rows_per_second", "traffic.p95_over_idle", "traffic.max_wait_seconds",
        "rls.policy_over_filter", "rls.naive_over_policy", "run.over_psql", "backup.seconds", "backup.mb_per_second",
        "restore_drill.seconds", "runner.peak_rss_mb"]


def test_bench_writes_well_formed_results(server: Target, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    results = bench.run(server, "small", traffic_seconds=1.0, echo=lambda *a: None)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    for key in KEYS:
        value = bench.get(on_disk, key)
        assert isinstance(value, numbers.Number) and value >= 0, key
    assert on_disk["dataset"]["kb_rows"] == 800
    assert isinstance(on_disk["machine"]["cores"], str) and isinstance(on_disk["postgres_version"], str)
    assert all(isinstance(v, numbers.Number) for v in on_disk["run"]["notebook_overhead_seconds"].values())
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "results.md").read_text()
    assert all(f"`{k}`" in table for k, _ in bench.TARGETS)
