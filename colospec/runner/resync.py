"""Re-protection, on the host that serves alone: copy its disk to the peer that joins, then
start COLO again (plan.json's resync section; README, Re-protection).

Each stage is reported to the joining peer in heartbeats as resync = {"for": its join token,
"stage": ...}:
  channels  the two listeners its redirectors dial, made anew            (70)
  mirror    once its NBD export is up: copy the whole disk while the
            guest runs                                                  (71) -> BLOCK_JOB_READY
  attach    once its redirectors are connected: the replication child,
            stop the guest, cancel the mirror in step: the copy is exact (72) -> COMPLETED
  colo      colo-compare and its filters, migrate                        (73) -> COLO primary
Any error, a stage that takes too long, or the peer leaving (silent, its QEMU dead, another
token) runs the rollback (79, every command allowed to fail, ending in `cont`): the guest
serves alone as before, and the peer may try again. The guest pauses only from `stop` in
stage attach until COLO's first checkpoint resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from colospec.runner.artifacts import HostArtifacts
from colospec.runner.errors import RunError
from colospec.runner.peer import PeerLink
from colospec.runner.qemu_session import QemuSession
from colospec.runner.steps import JOIN_SILENCE_S, elapsed_ms

log = logging.getLogger("colospec.run")

PEER_EXPORT_TIMEOUT_S = 120  # the joining peer prepares its disks and starts its QEMU
CHARDEVS_TIMEOUT_S = 30
MIRROR_STALL_S = 30  # the copy has no time limit, but must make progress
CANCEL_TIMEOUT_S = 60  # the mirror's last writes after `stop`
COLO_TIMEOUT_S = 300  # the first checkpoint carries the whole RAM
# `stop` drains the guest's I/O, and blocks while the peer's NBD link hangs: past this, the
# NBD nodes are yanked out of band (yank is allowed then) and the stage fails.
STOP_TIMEOUT_S = 2.0
YANK_NODES = ("resync0", "nbd0")
POLL_S = 0.05
RESUME_TIMEOUT_S = 60.0  # a rollback's wait for the guest to run again


class ResyncFailed(RunError):
    """A re-protection attempt failed and was rolled back: the guest serves alone."""


class Resync:
    def __init__(
        self,
        arts: HostArtifacts,
        qemu: QemuSession,
        peer: PeerLink,
        *,
        token: str,
        layout: str,
    ):
        self.arts, self.qemu, self.peer = arts, qemu, peer
        self.section: dict[str, Any] = arts.plan["resync"]
        self.token, self.layout = token, layout
        self.job = self.section["job"]
        self.timings: dict[str, float] = {}

    async def run(self) -> dict[str, float]:
        """Stages in order; returns their durations (ms). On failure: rollback, then raise."""
        t0 = time.monotonic()
        try:
            await self._stages()
        except RunError as exc:
            self._report("failed")
            await self.rollback()
            raise ResyncFailed(f"re-protection failed and was rolled back: {exc}") from None
        self.timings["total"] = elapsed_ms(t0)
        return self.timings

    async def _stages(self) -> None:
        s = self.section
        await self._stage("channels", self._script(s["channels"]))
        await self._stage("export", self._wait(self._peer_exported, PEER_EXPORT_TIMEOUT_S,
                                                "the joining peer's NBD export"))  # fmt: skip
        self.qemu.job_events.pop(self.job, None)
        await self._stage("mirror", self._mirror())
        await self._stage("channels-connected", self._wait(
            self._chardevs_connected, CHARDEVS_TIMEOUT_S, "the peer's redirectors"))  # fmt: skip
        await self._stage("attach", self._attach())
        await self._stage("colo", self._colo())

    async def _stage(self, name: str, work) -> None:
        t0 = time.monotonic()
        self._report(name)
        await work
        self.timings[name] = round(elapsed_ms(t0), 1)
        log.info("re-protection: %s done (%.0f ms)", name, self.timings[name])

    def _report(self, stage: str) -> None:
        self.peer.report(urgent=True, resync={"for": self.token, "stage": stage})

    # ----- the stages -------------------------------------------------------------------

    async def _script(self, relpath: str, skip: tuple[str, ...] = ()) -> None:
        for command in self.arts.script(relpath):
            if command["execute"] in skip:
                continue
            await self.qemu.execute(command["execute"], command.get("arguments"))

    async def _mirror(self) -> None:
        await self._script(self.section["mirror"])
        progress = {"offset": -1, "at": time.monotonic()}

        async def ready() -> Any:
            event = self._job_event("BLOCK_JOB_READY")
            if event:
                return event
            jobs = await self.qemu.execute("query-block-jobs")
            offset = next((j["offset"] for j in jobs if j.get("device") == self.job), None)
            now = time.monotonic()
            if offset is not None and offset != progress["offset"]:
                progress.update(offset=offset, at=now)
            elif now - progress["at"] > MIRROR_STALL_S:
                raise RunError(f"the disk copy made no progress for {MIRROR_STALL_S} s "
                               f"(at {progress['offset']} bytes)")  # fmt: skip
            return None

        await self._wait(ready, None, "the disk copy")

    async def _attach(self) -> None:
        for command in self.arts.script(self.section["attach"]):
            name, args = command["execute"], command.get("arguments")
            if name == "stop":
                await self._stop_guest()
            else:
                await self.qemu.execute(name, args)
        done = await self._wait(lambda: self._job_event("BLOCK_JOB_COMPLETED"), CANCEL_TIMEOUT_S,
                                "the disk copy's last writes")  # fmt: skip
        if done.get("error") or done.get("offset") != done.get("len"):
            raise RunError(f"the disk copy ended incomplete: {done}")

    async def _stop_guest(self) -> None:
        stop = asyncio.ensure_future(self.qemu.execute("stop"))
        done, _ = await asyncio.wait({stop}, timeout=STOP_TIMEOUT_S)
        if done:
            stop.result()
            return
        log.warning("re-protection: `stop` blocks on the peer's NBD link: yanking it")
        for node in YANK_NODES:
            try:
                await self.qemu.execute("yank", {"instances": [
                    {"type": "block-node", "node-name": node}]}, timeout=5)  # fmt: skip
            except RunError as exc:
                log.info("re-protection: yank %s: %s", node, exc)
        with contextlib.suppress(RunError, TimeoutError):
            await asyncio.wait_for(stop, STOP_TIMEOUT_S * 5)
        raise RunError("the peer's NBD link hung while the guest stopped")

    async def _colo(self) -> None:
        await self._script(self.section["colo"][self.layout])

        async def colo_mode() -> Any:
            status = (await self.qemu.execute("query-migrate")).get("status")
            if status in ("failed", "cancelled"):
                raise RunError(f"the migration to the peer {status}")
            mode = (await self.qemu.execute("query-colo-status"))["mode"]
            return mode == "primary" or None

        await self._wait(colo_mode, COLO_TIMEOUT_S, "COLO to start")

    # ----- what is awaited ----------------------------------------------------------------

    def _job_event(self, wanted: str) -> dict[str, Any] | None:
        event = self.qemu.job_events.get(self.job)
        if event is None:
            return None
        if event["event"] == wanted:
            return event
        if event["event"] in ("BLOCK_JOB_ERROR", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"):
            raise RunError(f"the disk copy failed: {event}")
        return None

    def _peer_exported(self) -> bool:
        return "join-nbd-export" in self.peer.raw().get("done", [])

    async def _chardevs_connected(self) -> bool:
        devs = {c["label"]: c["filename"] for c in await self.qemu.execute("query-chardev")}
        # A connected socket chardev's filename reads "tcp:A:P,server=on <-> B:Q".
        return all("<->" in devs.get(label, "") for label in self.section["chardevs"])

    def _check_peer(self) -> None:
        r = self.peer.raw()
        if r.get("join") != self.token or r.get("qemu") == "dead":
            raise RunError(f"{self.peer.name} no longer joins (its QEMU stopped or it restarted)")
        if self.peer.silent_for() > JOIN_SILENCE_S:
            raise RunError(f"{self.peer.name} went silent")
        if not self.qemu.process.alive:
            raise RunError("this host's QEMU is gone")

    async def _wait(self, ready, timeout: float | None, what: str) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_peer()
            got = ready()
            if asyncio.iscoroutine(got):
                got = await got
            if got:
                return got
            if deadline is not None and time.monotonic() > deadline:
                raise RunError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(POLL_S)

    # ----- undoing ------------------------------------------------------------------------

    async def rollback(self) -> None:
        t0 = time.monotonic()
        failed = []
        for command in self.arts.script(self.section["rollback"]):
            try:
                await self.qemu.execute(command["execute"], command.get("arguments"), timeout=10)
            except RunError:
                failed.append(command["execute"])
        await self._resume_guest()
        log.warning("re-protection rolled back in %.0f ms (commands with nothing to undo: %s)",
                    elapsed_ms(t0), ", ".join(failed) or "-")  # fmt: skip

    async def _resume_guest(self) -> None:
        """Until the guest runs again. A migration cancelled in its last stage keeps the VM
        in finish-migrate (`cont` refuses: "Migration is not finalized yet") until its
        thread lets go, which the yank in the rollback hastens: keep cancelling, then
        `cont`. Seen when the joiner was cut off mid-migration: one `cont` left the
        serving guest paused for good."""
        deadline, status, error = time.monotonic() + RESUME_TIMEOUT_S, None, None
        while True:
            try:
                status = (await self.qemu.execute("query-status"))["status"]
                if status == "running":
                    return
                if status == "finish-migrate":
                    await self.qemu.execute("migrate_cancel")
                else:
                    await self.qemu.execute("cont")
            except RunError as exc:
                error = exc
            if time.monotonic() > deadline:
                log.error("re-protection rollback: the guest does not run (%s) after %.0f s: %s",
                          status, RESUME_TIMEOUT_S, error)  # fmt: skip
                return
            await asyncio.sleep(POLL_S * 2)
