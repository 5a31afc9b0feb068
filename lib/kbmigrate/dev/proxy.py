"""A loopback TCP proxy that puts distance between a client and PostgreSQL, and counts round trips.

``kbmigrate bench`` runs the whole migration through it, as an operator 20-150 ms away from a
Supabase project would: every chunk of bytes is held ``delay / 2`` in each direction (so a round
trip costs ``delay``), in order, without limiting bandwidth.

A **round trip** is one turn of a conversation: the client sends, then waits for the server's
answer before it sends again. The proxy counts, per connection, each time bytes from the client
reach the server after bytes from the server reached the client (the first bytes of a connection
count too): a client that goes on sending while an answer is still on its way pays no new one.
Connection set-up (startup, authentication) is counted with the rest: it is paid for in time all
the same. A client that pipelines many statements before it reads pays one. A client's goodbye
(the protocol's Terminate message, alone) is no turn: nothing waits for an answer to it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counts:
    """What went through the proxy: connections, round trips (in all, and by the client's
    ``application_name``), bytes each way."""

    connections: int = 0
    round_trips: int = 0
    to_server: int = 0
    to_client: int = 0
    by_application: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"connections": self.connections, "round_trips": self.round_trips,
                    "bytes_to_server": self.to_server, "bytes_to_client": self.to_client,
                    "by_application": dict(self.by_application)}


_SSL_OR_GSS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: before the startup message


def application_name(startup: bytes) -> str | None:
    """The ``application_name`` of a StartupMessage (length, protocol 3.0, key/value pairs), ''
    when it has none; None when ``startup`` is not one (an SSL or GSS request comes first)."""
    if len(startup) < 8 or int.from_bytes(startup[4:8], "big") in _SSL_OR_GSS:
        return None
    fields = startup[8:int.from_bytes(startup[:4], "big")].split(b"\0")
    pairs = dict(zip(fields[::2], fields[1::2]))
    return pairs.get(b"application_name", b"").decode("utf-8", "replace")


TERMINATE = b"X\x00\x00\x00\x04"  # the frontend's Terminate message: the session ends, no answer comes


class _Turns:
    """One connection's direction of talk: a turn begins when the client speaks after the server."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.server_spoke = True  # the client's first bytes open the first turn
        self.name: str | None = None
        self.unnamed = 0  # turns before the startup message named the client

    def client(self, chunk: bytes) -> None:
        with self.counts.lock:
            self.counts.to_server += len(chunk)
            if self.name is None:
                self.name = application_name(chunk)
                if self.name is not None:
                    self.counts.by_application[self.name] = self.counts.by_application.get(self.name, 0) + self.unnamed
            if self.server_spoke and chunk != TERMINATE:
                self.counts.round_trips += 1
                self.server_spoke = False
                if self.name is None:
                    self.unnamed += 1
                else:
                    self.counts.by_application[self.name] = self.counts.by_application.get(self.name, 0) + 1

    def server(self, chunk: bytes) -> None:
        with self.counts.lock:
            self.counts.to_client += len(chunk)
        self.server_spoke = True


class DelayingProxy:
    """``127.0.0.1:<port>`` -> ``host:port``, ``delay_ms`` per round trip. Runs in a thread of its own."""

    def __init__(self, host: str, port: int, delay_ms: float = 0.0) -> None:
        self.upstream = (host, port)
        self.one_way = delay_ms / 2000.0
        self.counts = Counts()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kbmigrate-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> "DelayingProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delaying proxy did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        with self.counts.lock:
            self.counts.connections += 1
        turns = _Turns(self.counts)
        try:
            await asyncio.gather(self._pipe(client_r, server_w, turns.client), self._pipe(server_r, client_w, turns.server),
                                 return_exceptions=True)
        except asyncio.CancelledError:  # the proxy stopping: ended quietly (asyncio would print the cancellation)
            client_w.close()
            server_w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Callable[[bytes], None]) -> None:
        """Copy ``reader`` to ``writer``, each chunk delivered ``one_way`` after it arrived, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                seen(chunk)  # counted as delivered: what the other side has, when it has it
                writer.write(chunk)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                await queue.put((time.monotonic() + self.one_way, chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
            writer.close()


@contextmanager
def delayed(host: str, port: int, delay_ms: float) -> Iterator[DelayingProxy]:
    """A running proxy to ``host:port`` for the duration of the block."""
    proxy = DelayingProxy(host, port, delay_ms).start()
    try:
        yield proxy
    finally:
        proxy.stop()
