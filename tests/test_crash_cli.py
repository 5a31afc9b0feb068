"""Crash safety through the CLI: `kbmigrate run` killed once at a failpoint (which takes the kernel
and the run that started it) and twice at a random moment of a random changing step (the run
alone: its kernel is orphaned); `--resume` finishes each in its own folder, where an
uninterrupted run ends (tests/crash_reference.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kbmigrate.conninfo import Target
from kbmigrate.paths import REPO_ROOT, RUNS_DIR

from conftest import drop, new_demo
from crash_child import STEPS
from crash_reference import reference as uninterrupted, state

EXE = Path(sys.executable).parent / "kbmigrate"


@pytest.fixture(scope="module")
def reference(server: Target) -> dict[str, Any]:
    return uninterrupted(server)


def manifest(run_id: str) -> dict[str, Any]:
    return json.loads((RUNS_DIR / run_id / "manifest.json").read_text())


def resume_until_done(target: Target, run_id: str, deadline: float = 60) -> subprocess.CompletedProcess[str]:
    """``--resume``; while an orphaned kernel of the killed run still holds the database, wait."""
    end = time.monotonic() + deadline
    while True:
        done = subprocess.run([str(EXE), "run", "--auto-approve", "--dsn", target.conninfo, "--resume", run_id, "--no-progress"],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        if done.returncode == 0 or "A notebook kernel still holds" not in done.stderr:
            return done
        assert time.monotonic() < end, f"the killed run never let go of the database: {done.stderr}"
        time.sleep(0.5)


def _kill_when_running(target: Target, run_id: str, step: str, extra_delay: float, args: list[str]) -> int:
    child = subprocess.Popen([str(EXE), "run", "--auto-approve", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    end = time.monotonic() + 120
    while child.poll() is None:
        path = RUNS_DIR / run_id / "manifest.json"
        try:
            if path.exists() and any(s["step"] == step and s["status"] == "running" for s in manifest(run_id)["steps"]):
                break
        except (json.JSONDecodeError, KeyError):
            pass  # the file is being written
        assert time.monotonic() < end, f"{step} never started"
        time.sleep(0.05)
    time.sleep(extra_delay)
    child.send_signal(signal.SIGKILL)
    return child.wait()


def test_kbmigrate_run_killed_at_a_failpoint_is_resumed_to_the_same_result(server: Target,
                                                                            reference: dict[str, Any]) -> None:
    """Through the CLI: the failpoint kills the kernel and the `kbmigrate run` that started it."""
    target = new_demo(server, "kbt_crash_cli")
    run_id = f"crash-fp-{os.getpid()}"
    try:
        child = subprocess.run([str(EXE), "run", "--auto-approve", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                                "-p", f"batch_size={reference['params'].batch_size}"],
                               env={**os.environ, "KBMIGRATE_FAILPOINT": "backfill_workspace_ids@2"},
                               capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        assert child.returncode == -signal.SIGKILL, child.stderr
        assert manifest(run_id)["status"] == "running"  # nothing after the crash wrote to it
        done = resume_until_done(target, run_id)
        assert done.returncode == 0, done.stderr
        record = manifest(run_id)
        assert record["status"] == "succeeded" and record["resumed"][0]["status_before"] == "running"
        assert [(s["step"], s["attempt"]) for s in record["steps"] if s["step"] == "03_backfill"] == \
            [("03_backfill", 1), ("03_backfill", 2)]
        assert state(target) == reference["state"]
    finally:
        drop(server, target)


@pytest.mark.parametrize("seed", [20261201, 20261202])
def test_kbmigrate_run_killed_at_random_is_resumed_to_the_same_result(server: Target, reference: dict[str, Any],
                                                                      seed: int) -> None:
    """SIGKILL to `kbmigrate run` alone, at a random moment of a random changing step: its kernel
    is orphaned and holds the database until it notices, then `--resume` finishes the run."""
    rng = random.Random(seed)
    # within about a step of its start (02-05 take 0.3-1 s each here): a later kill would find the
    # run ended, and prove nothing
    step, delay = rng.choice(STEPS), rng.uniform(0.0, 1.0)
    target = new_demo(server, "kbt_crash_rnd")
    run_id = f"crash-rnd-{seed}-{os.getpid()}"
    try:
        killed = _kill_when_running(target, run_id, step, delay, ["-p", f"batch_size={reference['params'].batch_size}"])
        assert killed == -signal.SIGKILL, f"the run ended by itself (exit {killed}) before it was killed {delay:.2f} s into {step}"
        done = resume_until_done(target, run_id)
        assert done.returncode == 0, f"killed {delay:.2f} s into {step}: {done.stderr}"
        assert manifest(run_id)["status"] == "succeeded"
        assert state(target) == reference["state"], f"killed {delay:.2f} s into {step}, the result differs"
    finally:
        drop(server, target)


def test_a_run_stopped_after_its_last_step_is_closed_by_resume(server: Target, reference: dict[str, Any]) -> None:
    """Killed after its last step succeeded and before its report and seal: the manifest on disk
    still says "running" (``Run.finish`` writes the final status with its report in one write);
    ``--resume`` runs no step, closes the run, and ``kbmigrate verify`` accepts its seal."""
    target = new_demo(server, "kbt_crash_close")
    run_id = f"crash-close-{os.getpid()}"
    try:
        whole = subprocess.run([str(EXE), "run", "--auto-approve", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                                "-p", f"batch_size={reference['params'].batch_size}"],
                               capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        assert whole.returncode == 0, whole.stderr
        path = RUNS_DIR / run_id / "manifest.json"
        stopped = manifest(run_id)
        steps_before = [(s["step"], s["attempt"]) for s in stopped["steps"]]
        stopped["status"] = "running"  # as the manifest stood when the last step ended
        for key in ("report", "ended_at", "changed", "changes_by_change"):
            stopped.pop(key)
        path.write_text(json.dumps(stopped, indent=2))
        (RUNS_DIR / run_id / "report.html").unlink()
        done = resume_until_done(target, run_id)
        assert done.returncode == 0, done.stderr
        closed = manifest(run_id)
        assert closed["status"] == "succeeded" and closed["resumed"][-1]["steps"] == []
        assert [(s["step"], s["attempt"]) for s in closed["steps"]] == steps_before  # no step ran again
        assert closed["changed"] and (RUNS_DIR / run_id / "report.html").exists()
        verified = subprocess.run([str(EXE), "verify", "--dsn", target.conninfo, run_id],
                                  capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        drop(server, target)
