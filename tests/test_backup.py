"""The backup step's edges: an older client is refused; a user who may not create databases
gets the restore drill on the embedded server; the dump is private."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from psycopg import sql

from kbmigrate import backup, db
from kbmigrate.conninfo import Target
from kbmigrate.paths import REPO_ROOT


def test_a_client_older_than_the_server_is_refused() -> None:
    with pytest.raises(backup.BackupFailed, match="older than the server"):
        backup.client("pg_dump", 99)
    path, major = backup.client("pg_dump", 15)
    assert path.exists() and major >= 15


def test_drill_without_createdb_uses_the_embedded_server(server: Target, small_demo: Target) -> None:
    role = f"kbt_reader_{uuid.uuid4().hex[:6]}"
    with db.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} login nocreatedb").format(sql.Identifier(role)))
        admin.execute(sql.SQL("grant pg_read_all_data to {}").format(sql.Identifier(role)))
    try:
        reader = small_demo.with_database(small_demo.params["dbname"])
        reader = Target(reader.conninfo + f" user={role}", reader.source)
        run_id = f"t-{uuid.uuid4().hex[:8]}"
        info = backup.dump(reader, run_id)
        dump = Path(info["path"]) if Path(info["path"]).is_absolute() else REPO_ROOT / info["path"]
        assert stat.S_IMODE(dump.stat().st_mode) == 0o600
        assert info["row_counts"]["public.knowledge_base"] == 800
        drill = backup.restore_drill(reader, info, run_id)
        assert drill["where"] == "the embedded server" and drill["ok"], drill
        with db.connect(server, autocommit=True) as admin:
            assert not db.database_exists(admin, drill["scratch_database"])
    finally:
        with db.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
