"""`colospec run`: bring one host of a COLO pair up from its plan, watch, fail over.

The plan's steps run in order; then the watch loop feeds what it knows (own QEMU,
peer heartbeats, probes of the peer's QEMU, QMP events) to decide() and carries out
the answer. Every step and decision is one log line with its timing and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError

from colospec.runner import control
from colospec.runner.artifacts import HostArtifacts
from colospec.runner.disks import image_size
from colospec.runner.errors import EXIT_FAILURE, EXIT_OK, RunError
from colospec.runner.heartbeat import Heartbeat, HeartbeatPath
from colospec.runner.qemu_proc import QemuProcess
from colospec.runner.sdnotify import sd_notify
from colospec.runner.steps import BringUp, elapsed_ms, run_network
from colospec.runner.watch import STOP_TIMEOUT_S, Watch

log = logging.getLogger("colospec.run")

QMP_TIMEOUT_S = 30
# Events after which the watch loop looks again at once instead of at its next tick.
WAKE_EVENTS = {"COLO_EXIT", "SHUTDOWN", "STOP", "RESUME", "MIGRATION"}


class Runner(BringUp, Watch):
    def __init__(self, arts: HostArtifacts, *, attach: bool = False):
        self.arts, self.plan, self.attach = arts, arts.plan, attach
        self.run_dir = arts.run_dir
        q = self.plan["qemu"]
        self.qemu = QemuProcess(q["binary"], q["pidfile"], q["qmp_socket"])
        self.qmp = QMPClient(f"colospec-{arts.host}")
        self.role: str = arts.role
        self.alone = False  # serving without a partner after a failover
        self.colo_active = False
        self.done: list[str] = []
        self.created_links: list[str] | None = None
        self.owns_qemu = not attach
        self.wake = asyncio.Event()
        self.failover_lock = asyncio.Lock()
        self.probe: tuple[float, str] | None = None  # (time, result) of the latest probe
        self._probe_task: asyncio.Task | None = None
        self.image_size: int | None = None
        hb = self.plan["heartbeat"]
        self.heartbeat = Heartbeat(
            pair=arts.pair,
            me=arts.host,
            paths=[HeartbeatPath(p["name"], p["local"], p["peer"]) for p in hb["paths"]],
            port=hb["port"],
            interval_ms=hb["interval_ms"],
            missed=hb["missed"],
            on_peer_update=self.wake.set,
        )
        self.interval = hb["interval_ms"] / 1000
        self.budget = self.interval * hb["missed"]

    # ----- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def stop() -> None:
            # Python 3.11's wait_for can swallow a cancel that races with its inner
            # future; the flag makes the loops notice on their next turn regardless.
            self.stop_requested = True
            self.wake.set()
            main.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        state = control.read_state(self.run_dir)
        server = None
        try:
            self._report(qemu="starting", image_size=None)
            await self.heartbeat.start()
            server = await control.serve_control(self.run_dir, self._control)
            adopted = await self._adopt_or_prepare(state)
            if not adopted:
                await self._run_steps()
            sd_notify(READY="1", STATUS=f"{self.role}, COLO {'on' if self.colo_active else 'off'}")
            return await self._watch()
        except asyncio.CancelledError:
            log.info("stopping: signal received")
            await self._shutdown()
            return EXIT_OK
        except Exception as exc:  # RunError, or a disk/network/QEMU check that failed
            log.error("%s", exc)
            log.debug("details", exc_info=True)
            await self._shutdown()
            return EXIT_FAILURE
        finally:
            if server:
                server.close()
                control.control_socket(self.run_dir).unlink(missing_ok=True)
            await self.heartbeat.stop()
            with contextlib.suppress(Exception):
                await self.qmp.disconnect()

    async def _adopt_or_prepare(self, state: dict[str, Any]) -> bool:
        """Adopt a QEMU already running for this host (a restarted runner); True if it
        is past setup so the steps can be skipped."""
        pid = self.qemu.find_running()
        if pid is None and self.attach:
            pid = await self._wait_for_unit_qemu()
        if pid is None:
            self._remove_stale_files()
            return False
        self.qemu.adopt(pid)
        await self._connect_qmp()
        colo = (await self._execute("query-colo-status"))["mode"]
        status = (await self._execute("query-status"))["status"]
        self.image_size = image_size(self.plan["disks"]["base"]["path"])
        log.info("adopted QEMU pid %d: %s, COLO mode %s", pid, status, colo)
        if colo in ("primary", "secondary"):
            self.role, self.colo_active = colo, True
        elif state.get("alone"):
            self.role, self.alone = state.get("role", self.role), True
        elif status in ("prelaunch", "inmigrate"):
            # Fresh QEMU (e.g. started by its systemd unit): run the QMP steps.
            self.done = ["check-qemu", "disks", "network", "qemu"]
            return False
        else:
            raise RunError(
                f"QEMU pid {pid} is {status} without COLO and this host never failed over: "
                "stop it and start the pair again"
            )
        self.done = [s["id"] for s in self.plan["steps"] if s["kind"] != "watch"]
        self._report(qemu="running", colo=colo, alone=self.alone, done=self.done)
        return True

    async def _wait_for_unit_qemu(self) -> int | None:
        """With --attach, QEMU comes from its systemd unit: wait until its pidfile shows."""
        deadline = time.monotonic() + QMP_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = self.qemu.find_running()
            if pid is not None:
                return pid
            await asyncio.sleep(0.05)
        raise RunError(
            f"no QEMU for {self.arts.host} appeared within {QMP_TIMEOUT_S} s "
            f"(--attach expects {self.plan['units']['qemu']} to start it)"
        )

    def _remove_stale_files(self) -> None:
        for name in ("qmp.sock", "qemu.pid", "console.sock", "compare0.sock", "compare_out.sock"):
            path = self.run_dir / name
            if path.exists() or path.is_symlink():
                log.info("removing stale %s from an earlier run", path)
                path.unlink()

    async def _shutdown(self) -> None:
        if self._probe_task:
            self._probe_task.cancel()
        if self.owns_qemu and self.qemu.alive:
            t0 = time.monotonic()
            with contextlib.suppress(QMPError, OSError, TimeoutError):
                await asyncio.wait_for(self.qmp.execute("quit"), 5)
            if not await self.qemu.wait_exit(STOP_TIMEOUT_S):
                log.warning("QEMU did not quit within %d s: killing it", STOP_TIMEOUT_S)
                self.qemu.kill()
                await self.qemu.wait_exit(5)
            log.info("QEMU stopped (%.0f ms)", elapsed_ms(t0))
        if not self.qemu.alive:
            # Tell the peer at once, so a stopped primary is taken over immediately.
            self._report(urgent=True, qemu="dead")
        if self.owns_qemu and self.created_links is not None:
            await asyncio.to_thread(
                run_network, "network_down", self.plan["network"], self.created_links
            )
            log.info("network: removed %s", ", ".join(self.created_links) or "nothing")

    # ----- QMP -------------------------------------------------------------------------

    async def _connect_qmp(self) -> None:
        sock = self.plan["qemu"]["qmp_socket"]
        deadline = time.monotonic() + QMP_TIMEOUT_S
        while True:
            try:
                await self.qmp.connect(sock)
                break
            except ConnectError as exc:
                if not self.qemu.alive or time.monotonic() > deadline:
                    raise RunError(f"cannot reach QEMU's QMP socket {sock}: {exc}") from None
                await asyncio.sleep(0.005)
        self.events = EventListener()
        self.qmp.register_listener(self.events)
        self._events_task = asyncio.create_task(self._read_events(), name="qmp-events")

    async def _read_events(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, QMPError):
            async for event in self.events:
                # STOP/RESUME come with every checkpoint: only --verbose shows them.
                quiet = event["event"] in ("STOP", "RESUME")
                log.log(logging.DEBUG if quiet else logging.INFO,
                        "QMP event %s %s", event["event"], event.get("data", {}))  # fmt: skip
                if event["event"] == "RESUME" and self.colo_active:
                    self.checkpoints += 1  # each checkpoint stops and resumes the VM
                if event["event"] in WAKE_EVENTS:
                    self.colo_exit_seen = self.colo_exit_seen or event["event"] == "COLO_EXIT"
                    self.wake.set()

    colo_exit_seen = False
    checkpoints = 0
    stop_requested = False

    async def _execute(self, name: str, arguments: dict | None = None, timeout: float = 30):
        t0 = time.monotonic()
        log.debug("QMP -> %s %s", name, arguments or "")
        try:
            result = await asyncio.wait_for(self.qmp.execute(name, arguments), timeout)
        except ExecuteError as exc:
            raise RunError(f"QMP {name} failed: {exc.error_class}: {exc}") from None
        except (QMPError, OSError, TimeoutError) as exc:
            raise RunError(f"QMP {name}: no answer from QEMU ({type(exc).__name__})") from None
        log.debug("QMP <- %s %s (%.1f ms)", name, result, elapsed_ms(t0))
        return result

    # ----- reporting -------------------------------------------------------------------

    def _report(self, urgent: bool = False, **fields: Any) -> None:
        fields.setdefault("role", self.role)
        self.heartbeat.update(urgent=urgent, **fields)

    def _save_state(self, role: str, failover: dict | None) -> None:
        state = control.read_state(self.run_dir)
        state.update(role=role, alone=True, qemu_pid=self.qemu.pid)
        if failover:
            state["last_failover"] = failover
        control.write_state(self.run_dir, state)

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return await self._status()
        if cmd == "qmp":
            # For operators and tests: one QMP command through the runner's connection
            # (QEMU's monitor takes one client at a time). Root-only socket, as QMP itself.
            try:
                result = await self._execute(request["execute"], request.get("arguments"))
            except (RunError, KeyError) as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "return": result}
        if cmd == "failover":
            if self.role == "secondary" and not request.get("force"):
                report = self.heartbeat.peer.report
                if self.heartbeat.alive_paths() and report.get("qemu") == "running":
                    return {"ok": False, "error": (
                        f"the primary {self.plan['peer']['name']} is alive: promoting this "
                        "secondary would make two primaries; stop the primary first, or run "
                        "`colospec failover` there to drop this secondary (--force overrides)"
                    )}  # fmt: skip
            return await self._failover("requested by the operator")
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _status(self) -> dict[str, Any]:
        colo = vm = None
        with contextlib.suppress(RunError):
            colo = (await self._execute("query-colo-status", timeout=2))["mode"]
            vm = (await self._execute("query-status", timeout=2))["status"]
        return {
            "role": self.role,
            "colo_mode": colo,
            "vm_status": vm,
            "qemu_pid": self.qemu.pid if self.qemu.alive else None,
            "peer": {
                "name": self.plan["peer"]["name"],
                "reachable": bool(self.heartbeat.alive_paths()),
                "paths": self.heartbeat.alive_paths(),
            },
            "last_failover": control.read_state(self.run_dir).get("last_failover"),
            "checkpoints": self.checkpoints,
        }
