"""`colospec run`: one host of a COLO pair, from its plan to the end of its part in it.

The Runner wires its parts (QemuSession, PeerLink, BringUp, Watcher, StateStore) and owns
the lifecycle: one runner per host (a lock), adopt a QEMU already running for this host
or bring one up, watch, and stop. No error path quits a QEMU that has served the guest:
only an operator's stop does, or a fence decided by the rule table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from colospec.runner import control
from colospec.runner.artifacts import HostArtifacts
from colospec.runner.disks import image_size
from colospec.runner.errors import EXIT_FAILURE, EXIT_FENCED, EXIT_OK, RunError
from colospec.runner.hbauth import load_key
from colospec.runner.hoststate import HostState, StateStore, take_lock
from colospec.runner.machine import Act, Phase, protected
from colospec.runner.peer import PeerLink
from colospec.runner.qemu_session import QemuSession
from colospec.runner.sdnotify import sd_notify
from colospec.runner.steps import BringUp, PeerServes, elapsed_ms, run_network
from colospec.runner.watch import KILL_WAIT_S, STOP_TIMEOUT_S, Watcher

log = logging.getLogger("colospec.run")

UNIT_QEMU_WAIT_S = 30  # --attach: how long the qemu unit may take to write its pidfile
QUIT_TIMEOUT_S = 5
STALE_FILES = ("qmp.sock", "qemu.pid", "console.sock", "compare0.sock", "compare_out.sock")
# Steps a fresh QEMU started by its systemd unit has behind it.
UNIT_DONE_STEPS = ["check-qemu", "disks", "network", "qemu"]
STATUS_TIMEOUT_S = 2


class Runner:
    def __init__(self, arts: HostArtifacts, *, attach: bool = False):
        self.arts, self.plan, self.attach = arts, arts.plan, attach
        self.run_dir = arts.run_dir
        self.wake = asyncio.Event()
        self.stop_requested = False
        self.qemu = QemuSession(self.plan, arts.host, on_event=self.wake.set)
        key = load_key(self.plan["heartbeat"]["key_file"])  # refused at once if unsafe
        self.peer = PeerLink(self.plan, arts.pair, arts.host, key, on_update=self.wake.set)
        self.store = StateStore(self.run_dir, HostState(role=arts.role))
        self.bringup = BringUp(arts, self.qemu, self.peer, attach=attach,
                               set_phase=self._set_phase, stopping=self._stopping)  # fmt: skip
        self.watcher = Watcher(arts, self.qemu, self.peer, self.store, wake=self.wake,
                               stopping=self._stopping)  # fmt: skip
        self.started_qemu = False  # this run started QEMU (it has not served before)

    def _stopping(self) -> bool:
        return self.stop_requested

    def _set_phase(self, phase: Phase) -> None:
        if self.store.state.phase is not phase:
            self.store.update(phase=phase)
            self.peer.report(urgent=True, phase=phase.value)

    # ----- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        lock = take_lock(self.run_dir)  # before anything that could touch the pair
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
        server = None
        try:
            self.peer.report(qemu="starting", image_size=None, role=self.arts.role,
                             phase=Phase.STARTING.value, epoch=0, rank=0, alone=False)  # fmt: skip
            await self.peer.start()
            server = await control.serve_control(self.run_dir, self._control)
            return await self._run()
        finally:
            if server:
                server.close()
                control.control_socket(self.run_dir).unlink(missing_ok=True)
            await self.peer.stop()
            await self.qemu.disconnect()
            os.close(lock)

    async def _run(self) -> int:
        try:
            adopted = await self._adopt()
            if not adopted:
                self.started_qemu = not self.attach
                await self.bringup.run()
                self.store.update(phase=Phase.COLO, qemu_pid=self.qemu.process.pid)
            sd_notify(READY="1", STATUS=f"{self.store.state.role}, {self.store.state.phase.value}")
            # An adopted QEMU's past is unknown: look one budget before acting on it.
            code = await self.watcher.run(look_first=adopted)
        except asyncio.CancelledError:
            log.info("stopping: signal received")
            await self._stop_qemu()
            await self._network_down()
            return EXIT_OK
        except PeerServes as exc:
            log.warning("standing down: %s", exc)
            await self._give_up()
            return EXIT_FENCED
        except Exception as exc:  # RunError, or a disk/network/QEMU check that failed
            log.error("%s", exc)
            log.debug("details", exc_info=True)
            await self._give_up()
            return EXIT_FAILURE
        await self._network_down()
        return code

    async def _give_up(self) -> None:
        """After an error: a QEMU that never served is stopped; one that has is left alone."""
        never_served = self.started_qemu and self.store.state.phase in (
            Phase.STARTING, Phase.WAITING_PEER
        )  # fmt: skip
        if never_served:
            await self._stop_qemu()
            await self._network_down()
        elif self.qemu.process.alive:
            log.error("leaving QEMU pid %d running: it serves or has served the guest; "
                      "restart the runner to watch it again", self.qemu.process.pid)  # fmt: skip

    async def _stop_qemu(self) -> None:
        """The operator's stop (or a bring-up that failed): quit QEMU, kill it if it will not."""
        process = self.qemu.process
        if self.attach or not process.alive:
            if not process.alive:
                self.peer.report(urgent=True, qemu="dead")
            return
        t0 = time.monotonic()
        with contextlib.suppress(RunError):
            await self.qemu.execute("quit", timeout=QUIT_TIMEOUT_S)
        if not await process.wait_exit(STOP_TIMEOUT_S):
            log.warning("QEMU did not quit within %d s: killing it", STOP_TIMEOUT_S)
            process.kill()
            await process.wait_exit(KILL_WAIT_S)
        log.info("QEMU stopped (%.0f ms)", elapsed_ms(t0))
        # Tell the peer at once, so a stopped primary is taken over immediately.
        self.peer.report(urgent=True, qemu="dead")

    async def _network_down(self) -> None:
        """The guest's tap goes with its QEMU (the network unit does it with --attach)."""
        if self.attach or self.qemu.process.alive:
            return
        created = self.bringup.created_links
        # An adopted QEMU's tap was made by an earlier runner: remove what the plan names.
        await asyncio.to_thread(run_network, "network_down", self.plan["network"],
                                created if created is not None else [self.plan["network"]["tap"]])  # fmt: skip
        log.info("network: removed the guest's tap")

    # ----- adopting a QEMU that already runs for this host ---------------------------------

    async def _adopt(self) -> bool:
        """Adopt a QEMU already running for this host; True if it is past bring-up."""
        process = self.qemu.process
        pid = process.find_running()
        if pid is None and self.attach:
            pid = await self._wait_for_unit_qemu()
        if pid is None:
            self._remove_stale_files()
            self.store.update(qemu_pid=None)  # a fresh run: nothing of an earlier one counts
            return False
        process.adopt(pid)
        await self.qemu.connect()
        colo = await self.qemu.execute("query-colo-status")
        status = (await self.qemu.execute("query-status"))["status"]
        self.bringup.image_size = image_size(self.plan["disks"]["base"]["path"])
        before = HostState.load(self.run_dir)
        mine = before.belongs_to(pid)
        log.info("adopted QEMU pid %d: %s, COLO mode %s (reason %s); state %s", pid, status,
                 colo["mode"], colo.get("reason"), before if mine else "of another QEMU")  # fmt: skip
        if status in ("prelaunch", "inmigrate") and colo["mode"] == "none" and not mine:
            # Fresh QEMU (e.g. started by its systemd unit): run the QMP steps.
            self.store.update(qemu_pid=pid)
            self.bringup.skip_done(UNIT_DONE_STEPS)
            return False
        kept = before if mine else HostState(role=self.arts.role)
        if mine and before.intent == "fence":
            self.store.replace(kept)
            await self.watcher.fence("finishing the fence an earlier runner began")
            raise PeerServes("this host had been fenced")  # its exit code says so
        if colo["mode"] in ("primary", "secondary"):
            state = HostState(qemu_pid=pid, phase=Phase.COLO, role=colo["mode"],
                              epoch=kept.epoch, rank=kept.rank, intent=kept.intent,
                              intent_epoch=kept.intent_epoch)  # fmt: skip
            self.qemu.colo_started()
            if colo.get("reason") == "error":
                # The stream broke while unwatched: only the peer's word from now on counts.
                self.qemu.colo_exit, self.qemu.colo_exit_at = {"reason": "error"}, time.monotonic()
                self.watcher.adopted_broken = colo["mode"] == "secondary"
        elif mine and (before.phase is Phase.ALONE or before.intent):
            state = before
        else:
            log.warning("QEMU pid %d runs without COLO and no state of this host says why: "
                        "watching it as serving alone at epoch 0", pid)  # fmt: skip
            state = HostState(qemu_pid=pid, phase=Phase.ALONE, role="primary")
        self.store.replace(state)
        self.bringup.skip_done([s["id"] for s in self.plan["steps"] if s["kind"] != "watch"])
        self.peer.report(urgent=True, qemu="running", done=self.bringup.done,
                         image_size=self.bringup.image_size)  # fmt: skip
        return True

    async def _wait_for_unit_qemu(self) -> int | None:
        """With --attach, QEMU comes from its systemd unit: wait until its pidfile shows."""
        deadline = time.monotonic() + UNIT_QEMU_WAIT_S
        while time.monotonic() < deadline:
            pid = self.qemu.process.find_running()
            if pid is not None:
                return pid
            await asyncio.sleep(0.05)
        raise RunError(
            f"no QEMU for {self.arts.host} appeared within {UNIT_QEMU_WAIT_S} s "
            f"(--attach expects {self.plan['units']['qemu']} to start it)"
        )

    def _remove_stale_files(self) -> None:
        for name in STALE_FILES:
            path = self.run_dir / name
            if path.exists() or path.is_symlink():
                log.info("removing stale %s from an earlier run", path)
                path.unlink()

    # ----- control socket ------------------------------------------------------------------

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return await self._status()
        if cmd == "qmp":
            # For operators and tests: one QMP command through the runner's connection
            # (QEMU's monitor takes one client at a time). Root-only socket, as QMP itself.
            try:
                result = await self.qemu.execute(request["execute"], request.get("arguments"))
            except (RunError, KeyError) as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "return": result}
        if cmd == "failover":
            return await self._operator_failover(bool(request.get("force")))
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _operator_failover(self, force: bool) -> dict[str, Any]:
        st = self.store.state
        if st.phase is not Phase.COLO:
            return {
                "ok": False,
                "error": f"not in COLO mode ({st.phase.value}): nothing to fail over",
            }
        if st.role == "secondary" and not force:
            view = self.peer.view()
            if self.peer.heard() and view is not None and view.qemu == "running":
                return {"ok": False, "error": (
                    f"the primary {self.peer.name} is alive: promoting this secondary would "
                    "make two primaries; stop the primary first, or run `colospec failover` "
                    "there to drop this secondary (--force overrides)"
                )}  # fmt: skip
        act = Act.TAKE_OVER if st.role == "secondary" else Act.DROP
        try:
            return await self.watcher.failover(act, "requested by the operator")
        except RunError as exc:
            return {"ok": False, "error": str(exc)}

    async def _status(self) -> dict[str, Any]:
        colo = vm = None
        with contextlib.suppress(RunError):
            colo = (await self.qemu.execute("query-colo-status", timeout=STATUS_TIMEOUT_S))["mode"]
            vm = (await self.qemu.execute("query-status", timeout=STATUS_TIMEOUT_S))["status"]
        st = self.store.state
        in_watch = st.phase in (Phase.COLO, Phase.ALONE)
        return {
            "role": st.role,
            "colo_mode": colo,
            "vm_status": vm,
            "qemu_pid": self.qemu.process.pid if self.qemu.process.alive else None,
            "peer": {
                "name": self.peer.name,
                "reachable": bool(self.peer.heard()),
                "paths": list(self.peer.heard()),
            },
            "last_failover": st.last_failover,
            "phase": st.phase.value,
            "protected": in_watch and protected(self.watcher.evidence()),
            "epoch": st.epoch,
            "heartbeats_rejected": self.peer.heartbeat.rejected,
            "checkpoints": self.qemu.checkpoints,
        }
