"""The notebook kernel of a headless run: one per run, made new between its steps.

Starting a kernel costs about 1.3 s of CPU (the interpreter, ipykernel, pandas, psycopg and the
runbook's modules), paid once per step when each step had a kernel of its own. A run now starts
one kernel, and before each step after the first asks it to ``runbook.leave()`` the last one:
its sessions closed, its lock watcher stopped, its namespace, history and cell count new, as in a
kernel of its own. What stays is what was imported. A kernel that cannot be made new, or died, is
replaced by a fresh one.

A hand-stepped run (``kbmigrate lab``) keeps one kernel per notebook, as JupyterLab gives it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from jupyter_client.utils import run_sync
from traitlets import DottedObjectName

from kbmigrate.run import interrupt

# What a kernel runs between two steps (silently: no cell count, no cell log, no hooks).
LEAVE = "import kbmigrate.runbook as _kb_runbook; _kb_runbook.leave()"
LEAVE_SECONDS = 30
CLOSE_LEAVE_SECONDS = 5  # at the run's end (or its stop): a kernel that does not answer is shut down anyway


class ReadyClient(BlockingKernelClient):
    """A kernel client whose ``wait_for_ready`` ends when the kernel's answer to its own
    ``kernel_info`` request has come back on both channels: the reply on shell, and the ``idle``
    status for that request on IOPub. Then IOPub is connected and everything the kernel published
    before is behind it. jupyter_client's waits instead for 0.2 s of silence on IOPub, twice a step
    (the step's own client and the one that makes the kernel new): 0.4 s a step of nothing."""

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while True:
            asked = self.kernel_info()
            try:
                reply = await self._async_recv_reply(asked, timeout=1)
            except TimeoutError:
                reply = None
            if reply is not None:
                self._handle_kernel_info_reply(reply)
                if await self._idle_after(asked, min(1.0, max(0.0, deadline - time.monotonic()))):
                    return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    async def _idle_after(self, asked: str, seconds: float) -> bool:
        """Whether IOPub brings the ``idle`` status of request ``asked`` within ``seconds``
        (dropping what comes before it)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            try:
                msg = await self._async_get_iopub_msg(timeout=left)
            except Empty:
                return False
            if (msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == asked
                    and msg["content"].get("execution_state") == "idle"):
                return True
        return False

    wait_for_ready = run_sync(_async_wait_for_ready)


class IpcKernelManager(KernelManager):
    """Kernels talk over local sockets (IPC), not TCP: nothing listens on the network. What a
    kernel process itself prints (outside any cell: its start-up and shut-down chatter) goes to
    ``log_path`` when a run sets one, not to the terminal of the person running it."""

    log_path: Path | None = None
    client_class = DottedObjectName("kbmigrate.run.kernel.ReadyClient")

    def __init__(self, **kwargs: Any) -> None:
        # Each kernel gets its sockets in a private folder: a shared prefix lets concurrent
        # kernels (or one orphaned by a killed run) collide on the same socket files.
        folder = tempfile.mkdtemp(prefix="kbmigrate-kernel-")
        super().__init__(transport="ipc", ip=os.path.join(folder, "kernel"), **kwargs)
        self._socket_folder = folder
        self.clients: list[Any] = []

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if self.log_path is not None:
            log = open(self.log_path, "ab")  # noqa: SIM115 - the kernel process holds it while it lives
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            try:
                await super()._async_launch_kernel(kernel_cmd, **kw)
            finally:
                log.close()  # the child has its own copy of the descriptor
        else:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        self._pgid = getattr(self.provisioner, "pgid", None)
        if self._pgid:
            interrupt.KERNEL_GROUPS.add(self._pgid)  # a signal to the run interrupts this kernel

    def client(self, **kwargs: Any) -> Any:
        """A client, remembered so that ``RunKernel`` can close the one papermill made for a step
        once the step is over (papermill closes only the clients of kernels it started)."""
        kc = super().client(**kwargs)
        self.clients.append(kc)
        return kc

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().stop_channels()

    def cleanup_resources(self, restart: bool = False) -> None:
        interrupt.KERNEL_GROUPS.discard(getattr(self, "_pgid", None) or 0)
        super().cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._socket_folder, ignore_errors=True)


class RunKernel:
    """The kernel a run's steps share (``for_step`` before each one; ``close`` at the end)."""

    def __init__(self, manager_class: type[IpcKernelManager], cwd: Path) -> None:
        self._class, self._cwd = manager_class, cwd
        self._km: IpcKernelManager | None = None
        self.started = 0  # kernels started for this run: 1 unless one had to be replaced

    def for_step(self) -> IpcKernelManager:
        """A kernel ready for the next step: the run's own, made new, or a new one."""
        if self._km is not None and not self._leave_last_step(LEAVE_SECONDS):
            self.close()
        if self._km is None:
            km = self._class(kernel_name="python3")
            km.start_kernel(cwd=str(self._cwd))
            self._km, self.started = km, self.started + 1
        return self._km

    def _leave_last_step(self, seconds: float) -> bool:
        km = self._km
        assert km is not None
        if not km.is_alive():
            return False
        km.close_clients()  # the last step's
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=seconds)
            reply = kc.execute_interactive(LEAVE, silent=True, store_history=False, timeout=seconds,
                                           output_hook=lambda msg: None)
            return bool(reply["content"].get("status") == "ok")
        except (RuntimeError, TimeoutError):
            return False
        finally:
            km.close_clients()

    def close(self) -> None:
        """The kernel shut down, after its last step has left when it still answers (its sessions
        closed, its lock watcher's look on the server cancelled: nothing of the run stays behind on
        the server once the run has ended, even after a failed step)."""
        km = self._km
        if km is None:
            return
        try:
            if km.is_alive():
                self._leave_last_step(CLOSE_LEAVE_SECONDS)
        finally:  # a second Ctrl-C while it leaves: shut down at once all the same
            self._km = None
            try:
                km.close_clients()
                if km.is_alive():
                    km.shutdown_kernel(now=True)  # its steps are done and saved, their transactions over
            finally:
                km.cleanup_resources()
