"""The changing steps (02-05) applied by the engine as a notebook kernel applies them, in a process
of its own, for tests/test_crash.py to kill at a failpoint (KBMIGRATE_FAILPOINT, engine/failpoint.py).

    python tests/crash_child.py CONNINFO BATCH_SIZE RUN_ID
"""

from __future__ import annotations

import sys

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.steps import apply_step

STEPS = ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy")


def apply_all(target: Target, params: RunParams, run_id: str) -> None:
    with db.connect(target, limits=params.limits("read"), autocommit=True,
                    application_name=f"kbmigrate crash {run_id}"[:63]) as conn:
        for step in STEPS:
            apply_step(conn, step, params, run_id, progress=False)


if __name__ == "__main__":
    conninfo, batch, run_id = sys.argv[1:4]
    apply_all(Target(conninfo, "dsn"), RunParams(batch_size=int(batch)), run_id)
