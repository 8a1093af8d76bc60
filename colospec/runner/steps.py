"""Bring-up: plan.json's steps, in order, up to COLO mode.

Consecutive preparation steps run together. While a step waits on the peer, the runner is
in phase WAITING_PEER (not protected); a peer that serves the guest alone ends bring-up
(this host must not start a second one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from colospec.runner import control
from colospec.runner.artifacts import HostArtifacts
from colospec.runner.disks import image_size, prepare_disks
from colospec.runner.diskstate import DiskState
from colospec.runner.diskstate import compare as compare_disks
from colospec.runner.errors import RunError
from colospec.runner.machine import Phase
from colospec.runner.peer import PeerLink
from colospec.runner.qemu_check import check_qemu_async
from colospec.runner.qemu_session import QemuSession
from colospec.versions import defects_for

log = logging.getLogger("colospec.run")

UNIT_STEPS = {"prepare-disks", "prepare-network", "start-qemu"}  # the units' job with --attach
INDEPENDENT = {"check-qemu", "prepare-disks", "prepare-network"}
WAIT_LOG_EVERY_S = 10
PEER_WAIT_S = 1.0  # longest sleep between looks at the peer's reports
POLL_S = 0.01  # QMP polls while waiting for QEMU itself
# Re-protection outlasts a heartbeat budget: a peer silent this long has left it.
JOIN_SILENCE_S = 5.0


class PeerServes(RunError):
    """The peer serves the guest alone: this host stands down instead of starting."""


class JoinFailed(RunError):
    """Joining the peer that serves alone failed; this host's QEMU never served."""


# The serving peer's re-protection stages (resync.py), in order.
RESYNC_STAGES = ("channels", "export", "mirror", "channels-connected", "attach", "colo")


class BringUp:
    def __init__(
        self,
        arts: HostArtifacts,
        qemu: QemuSession,
        peer: PeerLink,
        *,
        attach: bool,
        set_phase: Callable[[Phase], None],
        stopping: Callable[[], bool],
        join_token: str | None = None,
        steps: list[dict] | None = None,
        disk: DiskState | None = None,
        start_unit: Callable[[], Awaitable[str]] | None = None,
    ):
        """join_token: run plan.json's rejoin steps, joining the peer that serves alone.
        steps: other steps than the plan's bring-up (serve-alone). disk: this host's disk
        state, compared with the peer's before a normal bring-up goes on."""
        self.arts, self.plan, self.qemu, self.peer = arts, arts.plan, qemu, peer
        self.join_token, self.disk = join_token, disk
        self.start_unit = start_unit  # --attach: start-qemu starts this QEMU's systemd unit
        if steps is None:
            steps = arts.plan["rejoin"]["steps"] if join_token else arts.plan["steps"]
        self.steps = steps
        self.attach, self.set_phase, self.stopping = attach, set_phase, stopping
        self.done: list[str] = []
        self.created_links: list[str] | None = None
        self.image_size: int | None = None
        self._kinds: dict[str, Callable[[dict], Awaitable[str]]] = {
            "check-qemu": self._check_qemu,
            "prepare-disks": self._prepare_disks,
            "prepare-network": self._prepare_network,
            "start-qemu": self._start_qemu,
            "connect-qmp": self._connect_qmp,
            "qmp": self._qmp,
            "wait-peer": self._wait_peer,
            "wait-resync": self._wait_resync,
            "probe-peer": self._probe_peer,
            "wait-chardevs": self._wait_chardevs,
            "wait-colo": self._wait_colo,
        }

    async def run(self) -> None:
        todo = [
            s for s in self.steps
            if s["id"] not in self.done and s["kind"] != "watch"
            and not (self.attach and s["kind"] in UNIT_STEPS
                     and not (s["kind"] == "start-qemu" and self.start_unit))
        ]  # fmt: skip
        while todo:
            batch = [todo.pop(0)]
            while batch[0]["kind"] in INDEPENDENT and todo and todo[0]["kind"] in INDEPENDENT:
                batch.append(todo.pop(0))
            await asyncio.gather(*(self._run_step(step) for step in batch))

    def skip_done(self, through: list[str]) -> None:
        self.done = list(through)

    async def _run_step(self, step: dict) -> None:
        await self._check()  # a peer that serves alone ends bring-up before any step
        t0 = time.monotonic()
        detail = await self._kinds[step["kind"]](step)
        log.info("step %s: %s (%.0f ms)", step["id"], detail or "done", elapsed_ms(t0))
        self.done.append(step["id"])
        # At once: the peer may be waiting for exactly this step.
        self.peer.report(urgent=True, done=self.done)

    # ----- preparation ------------------------------------------------------------------

    async def _check_qemu(self, step: dict) -> str:
        q = self.plan["qemu"]
        cache = self.arts.run_dir / "qemu-check.json"
        st = os.stat(q["binary"]) if os.path.exists(q["binary"]) else None
        # The same binary (inode, size, mtime) against the same requirements passed before.
        key = [q["binary"], st and [st.st_ino, st.st_size, st.st_mtime_ns], q["requires"]]
        cached = control.read_json(cache)
        if cached.get("key") == key:
            version, build, how = cached["version"], cached.get("build", ""), "checked before"
        else:
            facts = await check_qemu_async(q)
            version, build, how = facts.version, facts.build, "has what the plan uses"
            control.write_json(cache, {"key": key, "version": version, "build": build})
        for defect in defects_for(version, q["accel"], build):
            log.warning("known QEMU defect %s: %s — %s", defect.id, defect.summary, defect.fix)
        return f"{q['binary']} {version} {how}"

    async def _prepare_disks(self, step: dict) -> str:
        disks = {
            "rejoin": self.plan.get("rejoin", {}).get("disks"),
            "alone": {"base": self.plan["disks"]["base"], "scratch": None},
        }.get(step.get("disks"), self.plan["disks"])
        self.image_size = await asyncio.to_thread(prepare_disks, disks)
        scratch = disks["scratch"]
        made = f", created {scratch['active']} and {scratch['hidden']}" if scratch else ""
        return f"base image {self.image_size} bytes{made}"

    async def _prepare_network(self, step: dict) -> str:
        self.created_links = await asyncio.to_thread(
            run_network, "network_up", self.plan["network"]
        )
        net = self.plan["network"]
        return f"{net['tap']} on {net['bridge']} (created: {', '.join(self.created_links) or '-'})"

    async def _start_qemu(self, step: dict) -> str:
        # Variables QEMU needs beyond ours, e.g. vm-ft's RDMA-Paxos membership (the qemu
        # unit gets the same from its EnvironmentFile=).
        extra = self.plan["qemu"].get("env")
        env = {**os.environ, **extra} if extra else None
        if self.start_unit is not None:
            return await self.start_unit()
        args_file = step.get("args_file", self.plan["qemu"]["args_file"])
        pid = self.qemu.process.start(self.arts.argv(args_file), env=env)
        return f"pid {pid} ({args_file})"

    # ----- QMP --------------------------------------------------------------------------

    async def _connect_qmp(self, step: dict) -> str:
        if not self.qemu.connected:
            await self.qemu.connect()
        if self.image_size is None:
            self.image_size = image_size(self.plan["disks"]["base"]["path"])
        status = (await self.qemu.execute("query-status"))["status"]
        self.peer.report(urgent=True, qemu="running", image_size=self.image_size)
        return f"QEMU {status}"

    async def _qmp(self, step: dict) -> str:
        commands = self.arts.script(step["script"])
        for command in commands:
            result = await self.qemu.execute(command["execute"], command.get("arguments"))
            if command["execute"] == "human-monitor-command" and result.strip() not in ("", "OK"):
                # HMP reports failures as text in a successful QMP reply.
                raise RunError(f"{step['script']}: HMP {command['arguments']['command-line']!r}"
                               f" failed: {result.strip()}")  # fmt: skip
        return f"{step['script']}: {len(commands)} commands"

    # ----- waiting on the peer and on COLO ----------------------------------------------

    async def _wait_peer(self, step: dict) -> str:
        want, name = step["step"], self.plan["peer"]["name"]
        self.set_phase(Phase.WAITING_PEER)
        waited = time.monotonic()
        while want not in self.peer.raw().get("done", []):
            await self._check()
            if time.monotonic() - waited > WAIT_LOG_EVERY_S:
                log.info("still waiting for %s to finish %s", name, want)
                waited = time.monotonic()
            await self.peer.heartbeat.changed(PEER_WAIT_S)
        if self.image_size is None:
            self.image_size = image_size(self.plan["disks"]["base"]["path"])
        peer_size = self.peer.raw().get("image_size")
        if peer_size != self.image_size:
            raise RunError(
                f"the disk images differ in size: {self.image_size} bytes here, {peer_size} "
                f"on {name} — give both hosts identical copies"
            )
        return f"{name} finished {want}; both images {peer_size} bytes"

    async def _wait_resync(self, step: dict) -> str:
        """Joining: the serving peer has reached this stage of re-protection for us."""
        want = RESYNC_STAGES.index(step["stage"])
        self.set_phase(Phase.JOINING)
        while True:
            await self._check()
            stage = self._resync_stage()
            if stage is not None and RESYNC_STAGES.index(stage) >= want:
                return f"{self.peer.name} re-protects: {stage}"
            await self.peer.heartbeat.changed(PEER_WAIT_S)

    def _resync_stage(self) -> str | None:
        r = self.peer.raw().get("resync") or {}
        if r.get("for") != self.join_token:
            return None
        if r.get("stage") == "failed":
            raise JoinFailed(f"{self.peer.name} rolled its re-protection back")
        return r.get("stage") if r.get("stage") in RESYNC_STAGES else None

    async def _probe_peer(self, step: dict) -> str:
        """The peer's QEMU port must answer now: failover decisions rely on it later."""
        result = await self.peer.probe_now()
        where = f"{self.peer.target['address']}:{self.peer.target['port']}"
        if result == "dead":
            raise RunError(
                f"{self.peer.name}'s QEMU port {where} refuses this host's connections although "
                "its QEMU runs: a firewall rejects them? open it (README, Firewall) — "
                "failover decisions depend on it"
            )
        if result == "unreachable":
            raise RunError(
                f"{self.peer.name}'s QEMU port {where} does not answer: a firewall drops "
                "this host's connections? open it (README, Firewall) — failover decisions "
                "depend on it"
            )
        return f"{self.peer.name}'s QEMU answers at {where}"

    async def _wait_chardevs(self, step: dict) -> str:
        wanted = set(step["chardevs"])
        self.set_phase(Phase.WAITING_PEER)
        while True:
            await self._check()
            devs = {c["label"]: c["filename"] for c in await self.qemu.execute("query-chardev")}
            # A connected socket chardev's filename reads "tcp:A:P,server=on <-> B:Q".
            if all("<->" in devs.get(label, "") for label in wanted):
                return f"{', '.join(sorted(wanted))} connected"
            await asyncio.sleep(POLL_S)

    async def _wait_colo(self, step: dict) -> str:
        self.set_phase(Phase.JOINING if self.join_token else Phase.WAITING_PEER)
        while True:
            await self._check()
            mode = (await self.qemu.execute("query-colo-status"))["mode"]
            # Joining: COLO counts once the peer says so too; until then it reports serving
            # alone, and this secondary would take that for having been dropped.
            view = self.peer.view()
            peer_in_colo = view is not None and not view.alone and view.colo == "primary"
            if mode == step["mode"] and (not self.join_token or peer_in_colo):
                self.qemu.colo_started()
                return f"COLO mode {mode}"
            await asyncio.sleep(POLL_S)

    async def _check(self) -> None:
        if self.stopping():
            raise asyncio.CancelledError
        process = self.qemu.process
        if process.pid is not None and not process.alive:
            self.peer.report(urgent=True, qemu="dead")
            raise RunError(f"QEMU exited ({process.exit_status()}) during bring-up")
        view = self.peer.view()
        if self.join_token:
            self._check_joining(view)
            return
        if view is not None and view.alone:
            raise PeerServes(
                f"{self.peer.name} serves the guest alone (epoch {view.epoch}): this host must "
                "not start a second one"
            )
        if self.disk is not None and "disk" in self.peer.raw():
            # Before COLO could copy one disk's gaps onto the other (README, Re-protection).
            compare_disks(self.disk, self.peer.raw()["disk"], self.peer.name)

    def _check_joining(self, view) -> None:
        self._resync_stage()  # raises once the peer rolled back
        if self.peer.silent_for() > JOIN_SILENCE_S:
            raise JoinFailed(f"{self.peer.name} went silent")
        if view is None or view.qemu == "dead":
            raise JoinFailed(f"{self.peer.name}'s QEMU is gone")
        if not view.alone and view.colo != "primary":
            raise JoinFailed(f"{self.peer.name} no longer serves alone ({view.role})")


def run_network(action: str, *args: Any) -> Any:
    # pyroute2 takes a tenth of a second to import; this runs in a worker thread, in
    # parallel with the other preparation steps, and its sync API keeps off our loop.
    from colospec.runner import network

    return getattr(network, action)(*args)


def elapsed_ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000
