"""The embedded server's life cycle, on a data directory of its own."""

from __future__ import annotations

import os
import uuid

import psycopg

from kbmigrate.components.embedded import EmbeddedServer
from kbmigrate.paths import STATE_DIR


def test_start_stop_restart_keeps_data_and_port() -> None:
    server = EmbeddedServer(STATE_DIR / f"test-lifecycle-{uuid.uuid4().hex[:8]}")
    try:
        info = server.ensure_running()
        port = server.port()
        assert port and f"port={port}" in info
        with psycopg.connect(info, autocommit=True) as conn:
            assert conn.execute("show listen_addresses").fetchone()[0] == "127.0.0.1"
            assert int(conn.execute("show server_version_num").fetchone()[0]) >= 150000
            conn.execute("create table kept (x int)")
            if os.geteuid() == 0:  # PostgreSQL refuses root: the server runs as its own user
                assert os.stat(server.pgdata).st_uid != 0
        assert server.stop() is True
        assert server.port() is None
        assert server.stop() is False
        again = server.ensure_running()
        assert server.port() == port
        with psycopg.connect(again) as conn:
            assert conn.execute("select to_regclass('kept') is not null").fetchone()[0]
    finally:
        server.destroy()
    assert not server.root.exists()


def test_a_port_left_in_time_wait_is_free_again_and_a_listener_is_not() -> None:
    """A server just stopped leaves TIME_WAIT connections on its port; it can listen there again
    (PostgreSQL binds with SO_REUSEADDR), so its remembered port must not be given up for them."""
    import socket
    import time

    from kbmigrate.components.embedded import _port_free

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert not _port_free(port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server closes first: its side of the connection goes to TIME_WAIT
    time.sleep(0.05)
    client.close()
    listener.close()
    time.sleep(0.1)
    with socket.socket() as plain:  # the old check: a bind without SO_REUSEADDR is refused here
        try:
            plain.bind(("127.0.0.1", port))
            refused = False
        except OSError:
            refused = True
    assert refused and _port_free(port)


def test_a_server_first_started_inside_a_run_starts(tmp_path) -> None:
    """The restore drill may be the first to start the local server, under the run's private umask:
    its folders are then 0700 and 0711, which a server process still in root's group cannot enter."""
    old = os.umask(0o077)
    server = EmbeddedServer(STATE_DIR / f"test-umask-{uuid.uuid4().hex[:8]}" / "embedded")
    try:
        info = server.ensure_running()
        with psycopg.connect(info, autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        os.umask(old)
        server.destroy()
        server.root.parent.rmdir()
