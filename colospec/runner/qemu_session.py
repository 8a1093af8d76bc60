"""This host's QEMU as the runner sees it: the process, one QMP connection, and the facts its
events have reported (checkpoints, a broken COLO stream, a failed replication child).

QEMU's monitor takes one client at a time; every QMP command of the runner goes through
execute(), which also keeps the time of QEMU's latest answer: a QEMU whose process lives
but whose main loop no longer answers is "hung" (7.2's primary can hang in
x-colo-lost-heartbeat; an io-error pause does not count, QMP still answers then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError

from colospec.runner.errors import RunError
from colospec.runner.qemu_proc import QemuProcess

log = logging.getLogger("colospec.run")

CONNECT_TIMEOUT_S = 30
CONNECT_RETRY_S = 0.005
COMMAND_TIMEOUT_S = 30
# Commands QEMU runs out of band (allow-oob in its schema) that colospec always sends so.
OUT_OF_BAND = frozenset({"yank"})
# Liveness: ask QEMU something this often while nothing else is asked, and call it hung
# when an answer is this late. A checkpoint pauses QMP for well under a second here.
PING_EVERY_S = 1.0
HUNG_AFTER_S = 5.0
# Events after which the watch loop looks again at once instead of at its next tick.
WAKE_EVENTS = {
    "COLO_EXIT",
    "SHUTDOWN",
    "STOP",
    "RESUME",
    "QUORUM_REPORT_BAD",
    "BLOCK_IO_ERROR",
    "BLOCK_JOB_READY",
    "BLOCK_JOB_COMPLETED",
    "BLOCK_JOB_CANCELLED",
    "BLOCK_JOB_ERROR",
}
QUIET_EVENTS = {"STOP", "RESUME"}  # one pair per checkpoint: only --verbose shows them


class QemuSession:
    def __init__(self, plan: dict[str, Any], host: str, on_event: Callable[[], None]):
        q = plan["qemu"]
        self.process = QemuProcess(q["binary"], q["pidfile"], q["qmp_socket"])
        self.socket = q["qmp_socket"]
        self.replication_node: str | None = plan["watch"]["replication_node"]
        self.qmp = QMPClient(f"colospec-{host}")
        self.on_event = on_event
        self.in_colo = False  # set by the runner; RESUME counts as a checkpoint only then
        self.checkpoints = 0
        self.last_checkpoint: float | None = None
        self.colo_exit: dict[str, Any] | None = None  # the latest COLO_EXIT's data
        self.colo_exit_at: float | None = None
        self.replication_error: str | None = None
        self.replication_error_at: float | None = None
        self.job_events: dict[str, dict[str, Any]] = {}  # block job id -> its latest event
        self.last_answer = time.monotonic()
        self._asking = 0  # commands in flight
        self._tasks: list[asyncio.Task] = []
        self._listener: EventListener | None = None

    # ----- connection --------------------------------------------------------------------

    async def connect(self) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                await self.qmp.connect(self.socket)
                break
            except ConnectError as exc:
                if not self.process.alive or time.monotonic() > deadline:
                    raise RunError(f"cannot reach QEMU's QMP socket {self.socket}: {exc}") from None
                await asyncio.sleep(CONNECT_RETRY_S)
        self.last_answer = time.monotonic()
        events = self._listener = EventListener()
        self.qmp.register_listener(events)
        self._tasks = [
            asyncio.create_task(self._read_events(events), name="qmp-events"),
            asyncio.create_task(self._ping(), name="qmp-ping"),
        ]

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._listener is not None:
            self.qmp.remove_listener(self._listener)  # a reconnect registers a new one
            self._listener = None
        with contextlib.suppress(Exception):
            await self.qmp.disconnect()

    @property
    def connected(self) -> bool:
        return self.qmp.runstate.name == "RUNNING"

    async def execute(
        self,
        name: str,
        arguments: dict | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        *,
        oob: bool = False,
    ) -> Any:
        """One QMP command; oob: out of band, answered even while QEMU's main loop is
        blocked (qemu.qmp enables OOB when QEMU offers it). yank always goes out of band:
        it exists to unblock a QEMU stuck on a dead connection, whose main loop may be the
        thing that is stuck (a failover's first command, on a link lost one way)."""
        oob = oob or name in OUT_OF_BAND
        t0 = time.monotonic()
        log.debug("QMP -> %s %s", name, arguments or "")
        self._asking += 1
        try:
            result = await asyncio.wait_for(self.qmp.execute(name, arguments, oob=oob), timeout)
        except ExecuteError as exc:
            self.last_answer = time.monotonic()  # an error is an answer
            raise RunError(f"QMP {name} failed: {exc.error_class}: {exc}") from None
        except (QMPError, OSError, TimeoutError) as exc:
            raise RunError(f"QMP {name}: no answer from QEMU ({type(exc).__name__})") from None
        finally:
            self._asking -= 1
        self.last_answer = time.monotonic()
        log.debug("QMP <- %s %s (%.1f ms)", name, result, (time.monotonic() - t0) * 1000)
        return result

    # ----- what QEMU has said ------------------------------------------------------------

    def hung(self) -> bool:
        """QEMU's process lives but its monitor has not answered for HUNG_AFTER_S."""
        return (
            self.process.alive
            and self.connected
            and time.monotonic() - self.last_answer > HUNG_AFTER_S
        )

    def colo_started(self) -> None:
        """COLO mode reached (or adopted): earlier exits and errors are history."""
        self.in_colo = True
        self.colo_exit = self.colo_exit_at = None
        self.replication_error = self.replication_error_at = None
        self.last_checkpoint = time.monotonic()

    def broke_at(self) -> float | None:
        """When the COLO stream broke or the replication child failed, if either did."""
        times = [t for t in (self.colo_exit_at, self.replication_error_at) if t is not None]
        return min(times) if times else None

    @property
    def colo_exit_error(self) -> bool:
        return self.colo_exit is not None and self.colo_exit.get("reason") == "error"

    async def _read_events(self, events: EventListener) -> None:
        with contextlib.suppress(asyncio.CancelledError, QMPError):
            async for event in events:
                name, data = event["event"], event.get("data", {})
                log.log(logging.DEBUG if name in QUIET_EVENTS else logging.INFO,
                        "QMP event %s %s", name, data)  # fmt: skip
                self.last_answer = time.monotonic()
                self._note(name, data)
                if name in WAKE_EVENTS:
                    self.on_event()

    def _note(self, name: str, data: dict[str, Any]) -> None:
        if name.startswith("BLOCK_JOB_") and "device" in data:
            self.job_events[data["device"]] = {"event": name, **data}
        if name == "RESUME" and self.in_colo:
            self.checkpoints += 1  # each checkpoint stops and resumes the VM
            self.last_checkpoint = time.monotonic()
        elif name == "COLO_EXIT" and self.in_colo:
            self.colo_exit, self.colo_exit_at = data, time.monotonic()
        elif (
            name in ("QUORUM_REPORT_BAD", "BLOCK_IO_ERROR")
            and self.in_colo
            and self.replication_node is not None
            and data.get("node-name") == self.replication_node
        ):
            self.replication_error = data.get("error") or data.get("reason") or name
            self.replication_error_at = self.replication_error_at or time.monotonic()

    async def _ping(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(PING_EVERY_S)
                if self._asking == 0 and time.monotonic() - self.last_answer > PING_EVERY_S:
                    with contextlib.suppress(RunError):
                        await self.execute("query-status", timeout=HUNG_AFTER_S * 2)
