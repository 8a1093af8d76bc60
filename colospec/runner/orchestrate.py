"""`colospec run`: one host of a COLO pair, from its plan to the end of its part in it.

The Runner wires its parts (QemuSession, PeerLink, BringUp, Watcher, StateStore) and owns
the lifecycle: one runner per host (a lock), adopt a QEMU already running for this host
or bring one up, watch, and stop. No error path quits a QEMU that has served the guest:
only an operator's stop does, or a fence decided by the rule table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from colospec.runner import control
from colospec.runner.artifacts import HostArtifacts
from colospec.runner.disks import image_size
from colospec.runner.diskstate import DisksDiffer, DiskState
from colospec.runner.errors import EXIT_FAILURE, EXIT_FENCED, EXIT_OK, RunError
from colospec.runner.hbauth import load_key
from colospec.runner.hoststate import HostState, StateStore, take_lock
from colospec.runner.machine import Act, Phase, protected
from colospec.runner.peer import PeerLink
from colospec.runner.qemu_session import QemuSession
from colospec.runner.quorum import QuorumWatch
from colospec.runner.sdnotify import sd_notify
from colospec.runner.steps import BringUp, JoinFailed, PeerServes, elapsed_ms, run_network
from colospec.runner.tlsfiles import check_tls_dir
from colospec.runner.watch import KILL_WAIT_S, STOP_TIMEOUT_S, Watcher

log = logging.getLogger("colospec.run")

UNIT_QEMU_WAIT_S = 30  # --attach: how long the qemu unit may take to write its pidfile
QUIT_TIMEOUT_S = 5
STALE_FILES = ("qmp.sock", "qemu.pid", "console.sock", "compare0.sock", "compare_out.sock")
# Steps a fresh QEMU started by its systemd unit has behind it.
UNIT_DONE_STEPS = ["check-qemu", "disks", "network", "qemu"]
STATUS_TIMEOUT_S = 2
SWITCHOVER_WAIT_S = 3.0  # the secondary takes over within ms of the word; past this, withdraw
SERVE_ALONE_LOOK_S = 3.0  # --force-primary listens this long for the peer first
JOIN_ATTEMPTS = 3
JOIN_BACKOFF_S = (2.0, 5.0)  # before the second attempt, and the third


class Runner:
    def __init__(
        self,
        arts: HostArtifacts,
        *,
        attach: bool = False,
        rejoin: bool = False,
        force_primary: bool = False,
    ):
        """rejoin: join a peer that serves alone even if the plan says manual. force_primary:
        this host's disk is the newest: serve from it without a secondary."""
        self.arts, self.plan, self.attach = arts, arts.plan, attach
        self.force_primary = force_primary
        self.state_dir = Path(self.plan["state_dir"])
        self.disk: DiskState | None = None  # read at the start of run()
        self.switching = False  # a switchover asked for: once fenced, join the new primary
        section = self.plan.get("rejoin")
        self.may_join = section is not None and (rejoin or bool(section.get("automatic")))
        self.run_dir = arts.run_dir
        self.wake = asyncio.Event()
        self.stop_requested = False
        self.qemu = QemuSession(self.plan, arts.host, on_event=self.wake.set)
        key = load_key(self.plan["heartbeat"]["key_file"])  # refused at once if unsafe
        check_tls_dir(self.plan.get("tls"))  # the same for the TLS certificates
        self.peer = PeerLink(self.plan, arts.pair, arts.host, key, on_update=self.wake.set)
        self.store = StateStore(
            self.run_dir, HostState(role=arts.role, layout=self.plan.get("layout", arts.role))
        )
        self.bringup = BringUp(arts, self.qemu, self.peer, attach=attach,
                               set_phase=self._set_phase, stopping=self._stopping)  # fmt: skip
        cluster = self.plan.get("cluster")
        self.quorum = QuorumWatch(cluster["peer_node"], self.wake.set) if cluster else None
        self.watcher = self._new_watcher()
        self.started_qemu = False  # this run started QEMU (it has not served before)

    def _new_watcher(self) -> Watcher:
        return Watcher(self.arts, self.qemu, self.peer, self.store, wake=self.wake,
                       stopping=self._stopping, quorum=self.quorum)  # fmt: skip

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
            if self.quorum:
                self.quorum.start()
            server = await control.serve_control(self.run_dir, self._control)
            return await self._run()
        finally:
            if server:
                server.close()
                control.control_socket(self.run_dir).unlink(missing_ok=True)
            await self.peer.stop()
            if self.quorum:
                await self.quorum.stop()
            await self.qemu.disconnect()
            os.close(lock)

    async def _run(self) -> int:
        try:
            self.disk = DiskState.load(self.state_dir)
            self.peer.report(urgent=True, disk=self.disk.report())
            adopted = await self._adopt()  # reads state.json first: nothing may write it before
            if self.store.state.epoch < self.disk.epoch:  # a reboot forgot the run state
                self.store.update(epoch=self.disk.epoch)
            if not adopted and self.force_primary:
                await self._serve_alone()
            elif not adopted:
                self.started_qemu = not self.attach
                self.bringup.disk = self.disk
                try:
                    await self.bringup.run()
                    self.store.update(phase=Phase.COLO, qemu_pid=self.qemu.process.pid)
                except PeerServes as exc:
                    if not self.may_join:
                        raise
                    log.warning("%s: joining it (re-protection)", exc)
                    await self._join()
            sd_notify(READY="1", STATUS=f"{self.store.state.role}, {self.store.state.phase.value}")
            # An adopted QEMU's past is unknown: look one budget before acting on it.
            code = await self.watcher.run(look_first=adopted)
            while code == EXIT_FENCED and (self.may_join or self.switching) and not self.attach:
                self.switching = False
                # Fenced: the peer serves alone, and this host's QEMU is stopped: join it.
                log.warning("fenced; joining %s (re-protection)", self.peer.name)
                await self._join()
                self.watcher = self._new_watcher()
                code = await self.watcher.run()
        except asyncio.CancelledError:
            log.info("stopping: signal received")
            await self._stop_qemu()
            await self._network_down()
            return EXIT_OK
        except (PeerServes, DisksDiffer) as exc:
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
            Phase.STARTING, Phase.WAITING_PEER, Phase.JOINING
        )  # fmt: skip
        if never_served and self.attach and self.store.state.phase is Phase.JOINING:
            unit = self.plan["units"]["qemu_join"]
            log.info("stopping %s: its QEMU never served", unit)
            await asyncio.to_thread(subprocess.run, ["systemctl", "stop", unit],
                                    capture_output=True, timeout=60, check=False)  # fmt: skip
        elif never_served:
            await self._stop_qemu()
            await self._network_down()
        elif self.qemu.process.alive:
            log.error("leaving QEMU pid %d running: it serves or has served the guest; "
                      "restart the runner to watch it again", self.qemu.process.pid)  # fmt: skip

    # ----- joining a peer that serves alone ---------------------------------------------------

    async def _join(self) -> None:
        """Start a fresh QEMU in this host's secondary layout and let the serving peer copy
        its disk to it and start COLO (resync.py). Nothing here has served: any failure
        stops this QEMU, and a later attempt starts afresh."""
        if self.attach and not self.plan["units"].get("qemu_join"):
            raise PeerServes(f"{self.peer.name} serves alone, and this plan has no unit to join it")
        for attempt in range(1, JOIN_ATTEMPTS + 1):
            await self._stop_qemu()  # --attach: then _start_join_unit stops its unit
            await self.qemu.disconnect()
            if not self.attach:
                self.qemu.process.forget()
            self.started_qemu = True
            token = secrets.token_hex(8)
            self.store.update(phase=Phase.JOINING, role="secondary", qemu_pid=None, intent=None)
            # Before the copy overwrites it: until the join completes, this disk is no one's.
            self._save_disk(DiskState(self.store.state.epoch, stale=True))
            # A new token and an empty list of done steps, at once: nothing of an earlier
            # attempt may be taken for this one's.
            self.peer.report(urgent=True, join=token, done=[], phase=Phase.JOINING.value,
                             role="secondary", alone=False, qemu="starting", colo=None)  # fmt: skip
            self.bringup = BringUp(self.arts, self.qemu, self.peer, attach=self.attach,
                                   set_phase=self._set_phase, stopping=self._stopping,
                                   join_token=token,
                                   start_unit=self._start_join_unit if self.attach else None)  # fmt: skip
            t0 = time.monotonic()
            try:
                await self.bringup.run()
            except (JoinFailed, RunError) as exc:
                log.warning("joining %s failed (attempt %d of %d): %s", self.peer.name, attempt,
                            JOIN_ATTEMPTS, exc)  # fmt: skip
                if attempt == JOIN_ATTEMPTS:
                    raise
                await asyncio.sleep(JOIN_BACKOFF_S[attempt - 1])
                continue
            view = self.peer.view()
            epoch = view.epoch if view else self.store.state.epoch
            self.store.update(phase=Phase.COLO, role="secondary", layout="secondary",
                              epoch=epoch, rank=0, qemu_pid=self.qemu.process.pid)  # fmt: skip
            self.peer.report(urgent=True, join=None, epoch=epoch, rank=0)
            self._save_disk(DiskState(epoch))
            log.warning("joined %s: COLO secondary again at epoch %d (%.0f ms)", self.peer.name,
                        epoch, elapsed_ms(t0))  # fmt: skip
            return

    async def _start_join_unit(self) -> str:
        """--attach: stop the QEMU the pair's target started and (re)start the unit of this
        host's joining QEMU; its ExecStartPre= makes fresh scratch disks, and while it runs
        the target's QEMU unit does not start (its condition)."""
        unit, process = self.plan["units"]["qemu_join"], self.qemu.process
        for action, name in (("stop", self.plan["units"]["qemu"]), ("restart", unit)):
            done = await asyncio.to_thread(
                subprocess.run, ["systemctl", action, name], capture_output=True, text=True,
                timeout=UNIT_QEMU_WAIT_S, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise RunError(f"systemctl {action} {name} failed: {done.stderr.strip()}")
        if process.pid is not None:
            if not await process.wait_exit(KILL_WAIT_S):
                raise RunError(f"QEMU pid {process.pid} still runs after {unit} started")
            process.forget()
        pid = await self._wait_for_unit_qemu()
        process.adopt(pid)
        return f"pid {pid} ({unit})"

    def _save_disk(self, disk: DiskState) -> None:
        disk.save(self.state_dir)
        self.disk = disk
        self.peer.report(urgent=True, disk=disk.report())

    # ----- serving alone from this host's disk ----------------------------------------------

    async def _serve_alone(self) -> None:
        """The operator says this host's disk is the newest: serve it without a secondary
        (its primary layout, colo-compare removed), at a new epoch; the peer may join."""
        section = self.plan.get("serve_alone")
        if section is None or self.attach:
            raise RunError("--force-primary needs a colo plan and no --attach")
        if self.disk.stale:
            raise DisksDiffer(
                "this host's disk is stale (it was fenced, or a join's copy onto it did not "
                f"finish): it must not serve; remove {self.state_dir}/disk.json only if you know "
                "it holds every write"
            )
        view = await self._look_for_peer(SERVE_ALONE_LOOK_S)
        peer_disk = self.peer.raw().get("disk") or {}
        if view is None:
            log.warning("serving alone without having heard %s for %.0f s: the operator says "
                        "it does not serve", self.peer.name, SERVE_ALONE_LOOK_S)  # fmt: skip
        elif view.alone or view.colo in ("primary", "secondary"):
            raise PeerServes(f"{self.peer.name} serves the guest: this host must not")
        elif int(peer_disk.get("epoch", 0)) > self.disk.epoch and not peer_disk.get("stale"):
            raise DisksDiffer(
                f"{self.peer.name}'s disk served at epoch {peer_disk['epoch']}, after this "
                f"host's ({self.disk.epoch}): serve from {self.peer.name} instead"
            )
        known = [self.disk.epoch, int(peer_disk.get("epoch", 0)), view.epoch if view else 0]
        epoch = max(known) + 1
        self.started_qemu = True
        self.store.update(phase=Phase.STARTING, role="primary", layout="primary", epoch=epoch,
                          rank=1, intent=None)  # fmt: skip
        self._save_disk(DiskState(epoch))  # before the guest runs and writes
        self.bringup = BringUp(self.arts, self.qemu, self.peer, attach=False,
                               set_phase=self._set_phase, stopping=self._stopping,
                               steps=self.plan["serve_alone"]["steps"])  # fmt: skip
        await self.bringup.run()
        self.store.update(phase=Phase.ALONE, qemu_pid=self.qemu.process.pid)
        self.peer.report(urgent=True, alone=True, epoch=epoch, rank=1, role="primary",
                         colo="none", phase=Phase.ALONE.value, qemu="running")  # fmt: skip
        log.warning("serving alone from this host's disk at epoch %d", epoch)

    async def _look_for_peer(self, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.peer.view() is not None and self.peer.heard():
                return self.peer.view()
            await self.peer.heartbeat.changed(0.1)
        return None

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
        never_served = (Phase.STARTING, Phase.WAITING_PEER, Phase.JOINING)
        if status in ("prelaunch", "inmigrate") and colo["mode"] == "none" and mine \
                and before.phase in never_served:  # fmt: skip
            # An earlier runner's bring-up or join, cut short: this QEMU never served.
            log.warning("QEMU pid %d never served (%s when its runner stopped): starting over",
                        pid, before.phase.value)  # fmt: skip
            self.started_qemu = True
            await self._stop_qemu()
            await self.qemu.disconnect()
            self.qemu.process.forget()
            self._remove_stale_files()
            self.store.update(qemu_pid=None, phase=Phase.STARTING, role=self.arts.role,
                              layout=self.plan.get("layout", self.arts.role))  # fmt: skip
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
        resync = self.plan.get("resync") or {}
        if "secondary_layout_object" in resync:
            # Which command line it started from (re-protection's filters depend on it).
            path = {"path": "/objects"}
            objects = {o["name"] for o in await self.qemu.execute("qom-list", path)}
            secondary = resync["secondary_layout_object"] in objects
            state = dataclasses.replace(state, layout="secondary" if secondary else "primary")
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
        if cmd == "switchover":
            return await self._switchover()
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

    async def _switchover(self) -> dict[str, Any]:
        """Planned role swap: stop the guest here, ask the secondary to take over (rule
        switchover-requested), and once it serves, this host is fenced and joins it. The
        guest stays stopped only until COLO's next checkpoint would resume it: the word
        must come within SWITCHOVER_WAIT_S, or the request is withdrawn."""
        st = self.store.state
        if st.phase is not Phase.COLO or st.role != "primary":
            return {"ok": False, "error": f"this host is {st.role}, {st.phase.value}: run it "
                                          "on the primary of a protected pair"}  # fmt: skip
        if not protected(self.watcher.evidence()):
            return {"ok": False, "error": "the pair is not protected now: a switchover would "
                                          "leave the guest on a secondary that may not be "
                                          "current (colospec status)"}  # fmt: skip
        t0 = time.monotonic()
        self.switching = True
        token = secrets.token_hex(8)
        # No rule of COLO applies while switching (none may drop the secondary: on 7.2 the
        # drop script would resume this guest beside the new primary); peer-took-over does.
        self.store.update(phase=Phase.SWITCHING)
        await self.qemu.execute("stop")
        self.peer.report(urgent=True, switchover=token, phase=Phase.SWITCHING.value)
        log.warning("switchover: guest stopped, asking %s to take over", self.peer.name)
        deadline = time.monotonic() + SWITCHOVER_WAIT_S
        while time.monotonic() < deadline:
            view = self.peer.view()
            if view is not None and view.alone:
                return {"ok": True, "took_ms": round(elapsed_ms(t0), 1),
                        "new_primary": self.peer.name}  # fmt: skip
            await self.peer.heartbeat.changed(0.05)
        self.peer.report(urgent=True, switchover=None)
        await asyncio.sleep(2 * self.peer.budget)  # a takeover under way announces itself
        view = self.peer.view()
        if view is not None and view.alone:
            return {"ok": True, "took_ms": round(elapsed_ms(t0), 1), "new_primary": self.peer.name}
        self.switching = False
        with contextlib.suppress(RunError):
            await self.qemu.execute("cont")
        if self.store.state.phase is Phase.SWITCHING:
            self.store.update(phase=Phase.COLO)
        return {"ok": False, "error": f"{self.peer.name} did not take over within "
                                      f"{SWITCHOVER_WAIT_S:.0f} s: switchover withdrawn, the "
                                      "guest runs on here"}  # fmt: skip

    async def _status(self) -> dict[str, Any]:
        colo = vm = None
        with contextlib.suppress(RunError):
            colo = (await self.qemu.execute("query-colo-status", timeout=STATUS_TIMEOUT_S))["mode"]
            vm = (await self.qemu.execute("query-status", timeout=STATUS_TIMEOUT_S))["status"]
        st = self.store.state
        in_watch = st.phase in (Phase.COLO, Phase.ALONE, Phase.RESYNCING)
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
            "last_resync": self.watcher.last_resync,
            "disk": self.disk.report() if self.disk else None,
            "phase": st.phase.value,
            "protected": in_watch and protected(self.watcher.evidence()),
            "epoch": st.epoch,
            "heartbeats_rejected": self.peer.heartbeat.rejected,
            "checkpoints": self.qemu.checkpoints,
            "quorum": self.quorum.view().report() if self.quorum else None,
        }
