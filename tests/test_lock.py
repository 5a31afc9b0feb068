"""One run at a time: a second run is refused at once, naming the holder; a dead holder leaves no lock."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kbmigrate.conninfo import Target
from kbmigrate.engine.lock import RunLocked, run_lock
from kbmigrate.engine.params import RunParams
from kbmigrate.run import runner

from conftest import run_cli


def test_second_run_is_refused_naming_the_holder(small_demo: Target) -> None:
    with run_lock(small_demo, "run first-one"):
        started = time.monotonic()
        with pytest.raises(RunLocked) as exc:
            runner.run(small_demo, RunParams(), only=["00"], progress=False, echo=lambda *a: None)
        assert time.monotonic() - started < 5
        assert "kbmigrate lock run first-one" in exc.value.message and "pid" in exc.value.message
        done = run_cli("run", "--dsn", small_demo.conninfo, "--only", "00", "--no-progress")
        assert done.returncode != 0 and "Another kbmigrate run holds" in done.stderr and "Traceback" not in done.stderr


def test_a_killed_holder_leaves_no_lock(small_demo: Target) -> None:
    code = ("import sys, time; from kbmigrate.conninfo import resolve; from kbmigrate.engine.lock import run_lock\n"
            f"with run_lock(resolve({small_demo.conninfo!r}), 'doomed'):\n    print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked):
            with run_lock(small_demo, "second"):
                pass
        child.kill()
        child.wait()
        deadline = time.monotonic() + 10
        while True:
            try:
                with run_lock(small_demo, "third"):
                    break
            except RunLocked:
                assert time.monotonic() < deadline, "the killed run's lock was not released"
                time.sleep(0.2)
    finally:
        child.kill()
