"""Watching: gather the evidence, ask machine.decide(), carry out its answer.

Every decision that acts is logged with its rule and reason. Failover and fencing write
their intent to state.json before the first irreversible QMP command, so a runner killed
half-way resumes them instead of guessing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from colospec.runner.artifacts import HostArtifacts
from colospec.runner.diskstate import DiskState
from colospec.runner.errors import EXIT_FENCED, EXIT_QEMU_GONE, RunError
from colospec.runner.hoststate import StateStore
from colospec.runner.machine import (
    SERVING_ALONE,
    Act,
    Decision,
    Evidence,
    Phase,
    decide,
    protected,
)
from colospec.runner.peer import PeerLink
from colospec.runner.qemu_session import QemuSession
from colospec.runner.quorum import QuorumWatch
from colospec.runner.resync import Resync, ResyncFailed
from colospec.runner.sdnotify import sd_notify
from colospec.runner.silence import Sample, SilenceWatch, read_counters
from colospec.runner.steps import elapsed_ms

log = logging.getLogger("colospec.run")

STOP_TIMEOUT_S = 10  # QEMU's time to quit before it is killed
KILL_WAIT_S = 5
FAILOVER_COMMAND_TIMEOUT_S = 10
SETTLE_RUNNING_S = 5  # the VM leaves run state "colo" once the COLO thread is done
BLOCK_JOBS_TIMEOUT_S = 60  # the secondary's takeover commits its active disk
FAILOVER_ATTEMPTS = 2
# No checkpoint for this many checkpoint delays (plus a margin for a slow one) means COLO
# no longer checkpoints.
STALL_DELAYS, STALL_MARGIN_S = 3, 2.0
# A silent secondary shows over this many checkpoint delays (colo-compare then releases
# the primary's output only at checkpoints), plus a margin.
SILENT_DELAYS, SILENT_MARGIN_S = 2, 2.0
SAMPLE_EVERY_S = 1.0
POLL_S = 0.01


class Watcher:
    def __init__(
        self,
        arts: HostArtifacts,
        qemu: QemuSession,
        peer: PeerLink,
        store: StateStore,
        *,
        wake: asyncio.Event,
        stopping,
        quorum: QuorumWatch | None = None,
    ):
        self.arts, self.plan, self.qemu, self.peer, self.store = arts, arts.plan, qemu, peer, store
        self.wake, self.stopping = wake, stopping
        self.state_dir = Path(self.plan["state_dir"])
        self.budget = peer.budget
        self.interval = peer.interval
        delay = self.plan["watch"]["checkpoint_delay_ms"] / 1000
        self.stall_s = STALL_DELAYS * delay + STALL_MARGIN_S
        self.output = self.plan["watch"].get("secondary_output")
        self.silence = SilenceWatch(SILENT_DELAYS * delay + SILENT_MARGIN_S)
        self._sampler: asyncio.Task | None = None
        self.adopted_broken = False  # adopted a secondary whose stream broke unwatched
        self.paused = False  # this runner paused its guest (break-unwitnessed, no-quorum)
        self.paused_no_quorum = False  # ... because this node lost quorum
        self.quorum = quorum  # None: no cluster manager
        # Sticky: the primary said its stream or replication child broke. From then on this
        # secondary's disk may lack its writes, whatever the primary does next.
        self.peer_broke = False
        self.lock = asyncio.Lock()
        self._resync: asyncio.Task | None = None
        self._refused_join: str | None = None  # a join token whose re-protection failed
        self.unsaved_disk: DiskState | None = None  # a disk.json write that failed
        self.last_resync: dict[str, Any] | None = None
        self.started = self.last_tick = self.stall_at = time.monotonic()
        self._last_hold = ""

    # ----- the loop -----------------------------------------------------------------------

    async def run(self, look_first: bool = False) -> int:
        """Watch until this host's part ends; look_first: hold one budget before acting."""
        st = self.store.state
        log.info("watching: %s, %s, epoch %d", st.role, st.phase.value, st.epoch)
        self.started = self.last_tick = time.monotonic()
        self.stall_at = self.started if look_first else self.started - self.budget
        if st.intent in ("take-over", "drop"):
            await self._resume_failover(st.intent)
        self._start_sampler()
        try:
            return await self._loop()
        finally:
            for task in (self._sampler, self._resync):
                if task:
                    task.cancel()

    def _start_sampler(self) -> None:
        st = self.store.state
        if self.output and st.role == "primary" and st.phase is Phase.COLO:
            self.silence = SilenceWatch(self.silence.window_s)
            self._sampler = asyncio.create_task(self._sample_output(), name="silence")

    async def _loop(self) -> int:
        while True:
            if self.stopping():
                raise asyncio.CancelledError
            now = time.monotonic()
            if now - self.last_tick > self.budget:
                log.warning(
                    "this runner was not scheduled for %.0f ms", (now - self.last_tick) * 1000
                )
                self.stall_at = now
            self.last_tick = now
            if self.unsaved_disk is not None:
                self._disk(self.unsaved_disk)
            self.peer.maybe_probe(urgent=self._probe_owed())
            evidence = self.evidence(now)
            self.publish(evidence)
            decision = decide(evidence)
            code = await self.carry_out(decision)
            if code is not None:
                return code
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval / 2)

    async def _resume_failover(self, intent: str) -> None:
        """Finish a failover an earlier runner began (its QEMU has left COLO) at once; one
        still in COLO mode is resumed by the rule table after a look (resume-take-over,
        resume-drop), unless the peer serves by then."""
        mode = (await self.qemu.execute("query-colo-status"))["mode"]
        if mode == "none":
            act = Act.TAKE_OVER if intent == "take-over" else Act.DROP
            await self.failover(act, "resuming the failover an earlier runner began")
            return
        if intent == "take-over":
            # Announced before its first command: the primary may have stood down on that
            # word. The rule table resumes it after a look (unless the primary serves).
            log.warning("the take-over an earlier runner announced never began: resuming it "
                        "after a look")  # fmt: skip
            return
        # COLO mode says nothing here: the drop script's first commands (yank, removing the
        # replication child) are irreversible and leave it on. Finished after a look.
        log.warning("the drop an earlier runner recorded may have begun (COLO mode %s): "
                    "finishing it after a look", mode)  # fmt: skip

    async def _sample_output(self) -> None:
        tap, out = self.plan["network"]["tap"], self.output
        while self.store.state.phase is Phase.COLO:
            try:
                guest, secondary = await asyncio.to_thread(
                    read_counters, tap, out["address"], out["port"]
                )
            except Exception as exc:  # netlink trouble: no evidence, never a crash
                log.debug("cannot read the traffic counters: %s", exc)
            else:
                self.silence.add(Sample(time.monotonic(), guest, secondary))
                if self.silence.silent():
                    self.wake.set()
            await asyncio.sleep(SAMPLE_EVERY_S)

    def _probe_owed(self) -> bool:
        """A broken COLO stream asks the peer's QEMU directly, once."""
        if not self.qemu.colo_exit_error:
            return False
        probe = self.peer.probe
        return probe is None or probe[0] < (self.qemu.colo_exit_at or 0)

    # ----- evidence ---------------------------------------------------------------------

    def evidence(self, now: float | None = None) -> Evidence:
        now = time.monotonic() if now is None else now
        st, q = self.store.state, self.qemu
        own = "gone" if not q.process.alive else ("hung" if q.hung() else "running")
        view = self.peer.view()
        if view is not None and view.joining and self.peer.raw().get("join") == self._refused_join:
            view = dataclasses.replace(view, joining=False)  # it retries with a new token
        in_colo = st.phase is Phase.COLO
        broken = in_colo and q.colo_exit_error
        if in_colo and st.role == "secondary" and view is not None and view.colo_error:
            self.peer_broke = True
        stalled_checkpoints = (
            in_colo and q.last_checkpoint is not None and now - q.last_checkpoint > self.stall_s
        )
        return Evidence(
            phase=st.phase,
            role="primary" if st.phase in SERVING_ALONE else st.role,
            epoch=st.epoch,
            rank=st.rank,
            own_qemu=own,
            colo_exit_error=broken,
            replication_bad=in_colo and q.replication_error is not None,
            checkpoint_stalled=stalled_checkpoints,
            peer_deaf=self.peer.deaf_for() >= self.budget,
            secondary_silent=in_colo and self.silence.silent(),
            stalled=now - self.stall_at < self.budget,
            watching_for_s=now - self.started,
            budget_s=self.budget,
            paths=self.peer.paths,
            heard=self.peer.heard(),
            peer=view,
            stale=st.role == "secondary" and (self.adopted_broken or self.peer_broke),
            pending_take_over=st.intent == "take-over",
            pending_drop=st.intent == "drop",
            peer_fresh=self.peer.reported_since(q.broke_at()),
            break_unwitnessed=not self._witnessed(q.broke_at()),
            paused=self.paused,
            probe=self.peer.probe_result(),
            cluster=self.quorum.view() if self.quorum else None,
            paused_no_quorum=self.paused_no_quorum,
        )

    def _witnessed(self, broke_at: float | None) -> bool:
        """Could this runner have heard a takeover announced around that break? Only if it
        was watching (not stalled, not just adopted) and heard the peer within a budget."""
        if broke_at is None:
            return True
        heard = max(self.peer.heartbeat.peer.last_seen.values(), default=float("-inf"))
        return broke_at - self.stall_at >= self.budget and heard >= broke_at - self.budget

    def publish(self, e: Evidence) -> None:
        """This host's view, for the peer's decisions and for `status`."""
        colo = {Phase.COLO: e.role, Phase.SWITCHING: e.role, Phase.ALONE: "none",
                Phase.RESYNCING: "none"}.get(e.phase)  # fmt: skip
        self.peer.report(
            qemu="running" if e.own_qemu != "gone" else "dead",
            role=e.role,
            phase=e.phase.value,
            colo=colo,
            alone=e.phase in SERVING_ALONE,
            epoch=e.epoch,
            rank=e.rank,
            # Either break makes the secondary's disk stale: it must know at once.
            colo_error=e.colo_exit_error or e.replication_bad,
            protected=protected(e),
        )

    # ----- acting -----------------------------------------------------------------------

    async def carry_out(self, d: Decision) -> int | None:
        if d.act is Act.NONE:
            self._last_hold = ""
            return None
        if d.act is Act.HOLD:
            if d.reason != self._last_hold:
                log.warning("holding (%s): %s", d.rule, d.reason)
            self._last_hold = d.reason
            return None
        log.warning("decision %s (%s): %s", d.act.value, d.rule, d.reason)
        self._last_hold = ""
        if d.act is Act.RESYNC:
            self._start_resync(d.reason)
            return None
        if self._resync and not self._resync.done():
            self._resync.cancel()  # what follows (a fence, an exit) ends this QEMU's part
        if d.act is Act.EXIT:
            self.peer.report(urgent=True, qemu="dead")
            log.error("nothing left to protect here (%s)", self.qemu.process.exit_status())
            return EXIT_QEMU_GONE
        if d.act is Act.KILL_OWN:
            self.qemu.process.kill()
            await self.qemu.process.wait_exit(KILL_WAIT_S)
            self.peer.report(urgent=True, qemu="dead")
            return EXIT_QEMU_GONE
        if d.act is Act.FENCE:
            return await self.fence(d.reason)
        if d.act is Act.PAUSE:
            await self.qemu.execute("stop")  # reversible: `cont` once the peer's word comes
            self.paused = True
            self.paused_no_quorum = d.rule == "no-quorum"
            return None
        if d.act is Act.RESUME:
            await self.qemu.execute("cont")
            self.paused = self.paused_no_quorum = False
            sd_notify(STATUS=f"guest paused: {d.reason}")
            return None
        await self.failover(d.act, d.reason)
        self.last_tick = time.monotonic()
        return None

    def _disk(self, disk: DiskState) -> None:
        """Record which epoch this disk belongs to. A failover or a fence never waits on
        it: failing to write it is logged, reported and retried on every tick."""
        self.peer.report(urgent=True, disk=disk.report())
        try:
            disk.save(self.state_dir)
        except OSError as exc:
            if self.unsaved_disk is None:
                log.error("cannot record this disk's epoch in %s (%s): after a restart of "
                          "both hosts neither could tell which disk is current; retrying",
                          self.state_dir, exc)  # fmt: skip
            self.unsaved_disk = disk
            return
        if self.unsaved_disk is not None:
            log.warning("recorded this disk's epoch in %s at last", self.state_dir)
        self.unsaved_disk = None

    # ----- re-protection ------------------------------------------------------------------

    def _start_resync(self, reason: str) -> None:
        token = str(self.peer.raw().get("join"))
        layout = self.store.state.layout or self.plan.get("layout", self.store.state.role)
        self.store.update(phase=Phase.RESYNCING)
        sd_notify(STATUS=f"re-protecting: {reason}")
        work = Resync(self.arts, self.qemu, self.peer, token=token, layout=layout)
        self._resync = asyncio.create_task(self._resync_then_colo(work), name="resync")

    async def _resync_then_colo(self, work: Resync) -> None:
        t0 = time.monotonic()
        try:
            timings = await work.run()
        except Exception as exc:  # ResyncFailed, or an artifact that cannot be read
            if not isinstance(exc, ResyncFailed):
                log.error("re-protection: %s", exc)
                await work.rollback()
            log.error("%s", exc)
            self._refused_join = work.token
            self.store.update(phase=Phase.ALONE)
            self.peer.report(urgent=True, phase=Phase.ALONE.value, resync={
                "for": work.token, "stage": "failed"})  # fmt: skip
            self.wake.set()
            return
        self.qemu.colo_started()
        self.peer_broke = self.adopted_broken = False
        self.store.update(phase=Phase.COLO, role="primary", layout=work.layout)
        self.last_resync = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                            "took_ms": round(elapsed_ms(t0), 1), "stages_ms": timings}  # fmt: skip
        self.peer.report(urgent=True, phase=Phase.COLO.value, alone=False, colo="primary",
                         role="primary", resync={"for": work.token, "stage": "done"})  # fmt: skip
        sd_notify(STATUS="primary, colo (re-protected)")
        log.warning("re-protected: COLO runs again with %s as secondary (%.0f ms; %s)",
                    self.peer.name, elapsed_ms(t0), timings)  # fmt: skip
        self._start_sampler()
        self.wake.set()

    async def fence(self, reason: str) -> int:
        """Stop this host's guest for good: the peer serves it. EXIT_QEMU_GONE if the guest
        had already died (the peer's news came first), else EXIT_FENCED."""
        self.store.update(intent="fence")
        # The peer serves on without this host: its disk will lack those writes.
        self._disk(DiskState(self.store.state.epoch, stale=True))
        already_gone = False
        try:
            await self.qemu.execute("stop", timeout=2)  # output stops at once, then quit
        except RunError:
            already_gone = await self.qemu.process.wait_exit(0.05)
        with contextlib.suppress(RunError):
            await self.qemu.execute("quit", timeout=2)
        if not await self.qemu.process.wait_exit(STOP_TIMEOUT_S):
            self.qemu.process.kill()
            await self.qemu.process.wait_exit(KILL_WAIT_S)
        self.store.update(phase=Phase.FENCED, role="fenced", intent=None)
        self.peer.report(urgent=True, qemu="dead", role="fenced", phase=Phase.FENCED.value,
                         alone=False, protected=False)  # fmt: skip
        sd_notify(STATUS=f"fenced: {reason}")
        if already_gone:
            log.warning("fenced: this host's QEMU had died already (%s)", reason)
            return EXIT_QEMU_GONE
        log.warning("fenced: QEMU stopped (%s)", reason)
        return EXIT_FENCED

    async def failover(self, act: Act, reason: str) -> dict[str, Any]:
        """Take over (secondary) or drop the secondary (primary); serve alone."""
        async with self.lock:
            st = self.store.state
            if st.phase is not Phase.COLO and st.intent is None:
                return {"ok": False, "error": "not in COLO mode: nothing to fail over"}
            was = st.role
            view = self.peer.view()
            if st.intent is None:
                epoch = max(st.epoch, view.epoch if view else 0) + 1
            else:
                epoch = st.intent_epoch if st.intent_epoch is not None else st.epoch
            rank = 1 if was == "primary" else 0
            kind = "take-over" if was == "secondary" else "drop"
            # Recorded before the first irreversible command (a restarted runner resumes);
            # the epoch itself counts once the failover has begun.
            self.store.update(intent=kind, intent_epoch=epoch)
            if kind == "take-over":
                # Announced first: a primary that was only unreachable stops serving.
                self.peer.report(urgent=True, alone=True, epoch=epoch, rank=rank, role="primary")
            self._disk(DiskState(epoch))  # from now on this disk takes writes at this epoch
            how = self.plan["failover"]["as_primary" if was == "primary" else "as_secondary"]
            log.warning("FAILOVER as %s (epoch %d): %s — running %s", was, epoch, reason,
                        how["script"])  # fmt: skip
            t0 = time.monotonic()
            for attempt in range(1, FAILOVER_ATTEMPTS + 1):
                failed, promoted = await self._run_script(how, t0)
                if self.paused:  # the guest serves again, alone
                    await self.qemu.execute("cont")
                    self.paused = self.paused_no_quorum = False
                status, mode = await self._settled(was)
                if mode == "none" and status == "running":
                    break
                log.error("failover attempt %d left COLO mode %s, VM %s (failed: %s)",
                          attempt, mode, status, ", ".join(failed) or "-")  # fmt: skip
            else:
                self.store.update(phase=Phase.FAILED, intent=None)
                raise RunError(f"failover did not complete: COLO mode {mode}, VM {status}")
            took = elapsed_ms(t0)
            record = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "reason": reason, "from_role": was, "epoch": epoch,
                "took_ms": round(promoted or took, 1), "script_ms": round(took, 1),
                "failed_commands": failed,
            }  # fmt: skip
            self.qemu.in_colo = False
            self.store.update(phase=Phase.ALONE, role="primary", intent=None, intent_epoch=None,
                              epoch=epoch, rank=rank, last_failover=record)  # fmt: skip
            self.peer.report(urgent=True, alone=True, epoch=epoch, rank=rank, role="primary",
                             colo="none", phase=Phase.ALONE.value, protected=False)  # fmt: skip
            sd_notify(STATUS=f"primary (alone) after failover: {reason}")
            log.warning("failover done: serving alone after %.0f ms (script %.0f ms), VM %s",
                        record["took_ms"], took, status)  # fmt: skip
            return {"ok": True, "took_ms": record["took_ms"], "vm_status": status,
                    "colo_mode": mode}  # fmt: skip

    async def _run_script(self, how: dict, t0: float) -> tuple[list[str], float | None]:
        failed, promoted = [], None
        for command in self.arts.script(how["script"]):
            try:
                await self.qemu.execute(command["execute"], command.get("arguments"),
                                        timeout=FAILOVER_COMMAND_TIMEOUT_S)  # fmt: skip
            except RunError as exc:
                failed.append(command["execute"])
                log.warning("failover: %s (continuing)", exc)
            if command["execute"] == how.get("promoted_after") and promoted is None:
                promoted = elapsed_ms(t0)
        return failed, promoted

    async def _settled(self, was: str) -> tuple[str, str]:
        """(VM status, COLO mode) once the COLO thread is done and, on a former secondary,
        its disk's commit job has finished (before that its writes are not all on disk)."""
        deadline = time.monotonic() + SETTLE_RUNNING_S
        while True:
            status = (await self.qemu.execute("query-status"))["status"]
            if status != "colo" or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)
        if was == "secondary":
            deadline = time.monotonic() + BLOCK_JOBS_TIMEOUT_S
            while await self.qemu.execute("query-block-jobs"):
                if time.monotonic() > deadline:
                    log.error("the disk's block jobs still run after %d s", BLOCK_JOBS_TIMEOUT_S)
                    break
                await asyncio.sleep(POLL_S * 10)
        mode = (await self.qemu.execute("query-colo-status"))["mode"]
        return status, mode
