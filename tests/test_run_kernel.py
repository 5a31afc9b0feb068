"""A headless run's steps share one kernel (run/kernel.py), and each step still finds it as a
kernel of its own: nothing of the last step's namespace, no session of it left on the server,
its cells counted from 1. A kernel that died is replaced."""

from __future__ import annotations

import os
import signal
from typing import Any

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.paths import NOTEBOOK_DIR
from kbmigrate.run.kernel import IpcKernelManager, RunKernel
from kbmigrate.run.runner import kernel_environment


def run_cell(km: IpcKernelManager, code: str) -> tuple[str, int]:
    """Run ``code`` as a cell; what it printed, and its execution count."""
    said: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["header"]["msg_type"] == "stream":
            said.append(msg["content"]["text"])

    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    finally:
        kc.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(said).strip(), reply["content"]["execution_count"]


def sessions(target: Target, pid: int) -> int:
    with db.connect(target, autocommit=True) as conn:
        return int(db.scalar(conn, "select count(*) from pg_stat_activity where pid = %s", (pid,)))


def test_each_step_finds_the_kernel_new(small_demo: Target) -> None:
    kernel = RunKernel(IpcKernelManager, NOTEBOOK_DIR)
    with kernel_environment(small_demo):
        try:
            first = kernel.for_step()
            said, _ = run_cell(first, "from kbmigrate import runbook\nkb = runbook.start('00_preflight', globals())\n"
                                      "secret_of_00 = 41\nimport os\nprint(os.getpid(), kb.conn.info.backend_pid)")
            kernel_pid, backend = map(int, said.split())
            run_cell(first, "kb.sql_magic()")
            assert sessions(small_demo, backend) == 1

            second = kernel.for_step()
            said, count = run_cell(second, "import os\nprint(os.getpid(), sorted({'kb', 'secret_of_00', 'runbook'} & set(globals())))")
            assert said == f"{kernel_pid} []", f"the second step's kernel is not the first one made new: {said}"
            assert count == 1, f"the second step's first cell is counted {count}, not 1"
            assert sessions(small_demo, backend) == 0, "the first step's session outlived it"
            assert kernel.started == 1

            os.kill(kernel_pid, signal.SIGKILL)
            third = kernel.for_step()
            said, _ = run_cell(third, "import os\nprint(os.getpid())")
            assert int(said) != kernel_pid and kernel.started == 2, "a dead kernel was not replaced"
        finally:
            kernel.close()
