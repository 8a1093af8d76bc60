"""The watching half of the runner: the decision loop and the failover itself.

A mixin of Runner (orchestrate.py), which owns the state these methods use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from qemu.qmp import QMPError

from colospec.runner.decide import Action, Situation, decide
from colospec.runner.errors import EXIT_FENCED, EXIT_QEMU_GONE, RunError
from colospec.runner.probe import probe_qemu
from colospec.runner.sdnotify import sd_notify
from colospec.runner.steps import elapsed_ms

log = logging.getLogger("colospec.run")

STOP_TIMEOUT_S = 10


class Watch:
    async def _watch(self) -> int:
        log.info("watching: %s, COLO %s", self.role, "on" if self.colo_active else "off (alone)")
        started = time.monotonic()
        while True:
            if self.stop_requested:
                raise asyncio.CancelledError
            # A late datagram or two is normal; longer silence (or a broken COLO stream)
            # asks the peer's QEMU directly.
            if self.heartbeat.longest_path_silence() > 1.5 * self.interval or self.colo_exit_seen:
                self._start_probe()
            situation = self._situation(time.monotonic() - started)
            action = decide(situation)
            if action.kind != "none":
                code = await self._act(action)
                if code is not None:
                    return code
            elif action.reason and action.reason != getattr(self, "_last_hold", None):
                log.warning("holding: %s", action.reason)
            self._last_hold = action.reason
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval / 2)
            if self.qemu.exited.is_set():
                continue

    def _situation(self, watching_for: float) -> Situation:
        report = self.heartbeat.peer.report
        probe = None
        if self.probe and time.monotonic() - self.probe[0] < self.budget:
            probe = self.probe[1]
        return Situation(
            role=self.role,
            colo_active=self.colo_active,
            own_qemu_alive=self.qemu.alive,
            peer_qemu=report.get("qemu"),
            peer_alone=bool(report.get("alone")),
            peer_probe=probe,
            paths=tuple(p.name for p in self.heartbeat.paths),
            alive_paths=tuple(self.heartbeat.alive_paths()),
            watching_for_s=watching_for,
            budget_s=self.budget,
        )

    def _start_probe(self) -> None:
        if self._probe_task and not self._probe_task.done():
            return
        if (
            self.probe
            and time.monotonic() - self.probe[0] < self.interval
            and not self.colo_exit_seen
        ):
            return  # one probe per interval is plenty; each costs QEMU a connection
        target = self.plan["heartbeat"]["peer_qemu_probe"]

        async def run() -> None:
            # A QEMU busy loading a checkpoint can take a moment to greet.
            result = await probe_qemu(target["address"], target["port"], self.budget / 2)
            if not self.probe or self.probe[1] != result:
                log.info("probe of the peer's QEMU at %s:%s: %s", *target.values(), result)
            self.probe = (time.monotonic(), result)
            self.wake.set()

        self._probe_task = asyncio.create_task(run(), name="probe")

    async def _act(self, action: Action) -> int | None:
        if action.kind == "exit":
            self._report(urgent=True, qemu="dead")
            log.error(
                "%s (%s): nothing left to protect here", action.reason, self.qemu.exit_status()
            )
            return EXIT_QEMU_GONE
        if action.kind == "fence":
            log.warning("fencing: %s", action.reason)
            self.colo_active = False
            with contextlib.suppress(QMPError, OSError, TimeoutError, RunError):
                await self._execute("quit", timeout=5)
            await self.qemu.wait_exit(STOP_TIMEOUT_S)
            self.qemu.kill()
            self._save_state(role="fenced", failover=None)
            self._report(urgent=True, qemu="dead", role="fenced")
            return EXIT_FENCED
        await self._failover(action.reason)
        return None

    async def _failover(self, reason: str) -> dict[str, Any]:
        async with self.failover_lock:
            if not self.colo_active:
                return {"ok": False, "error": "not in COLO mode: nothing to fail over"}
            was = self.role
            how = self.plan["failover"]["as_primary" if was == "primary" else "as_secondary"]
            log.warning("FAILOVER as %s: %s — running %s", was, reason, how["script"])
            t0 = time.monotonic()
            failed, promoted, promoted_at = [], None, None
            for command in self.arts.script(how["script"]):
                try:
                    await self._execute(command["execute"], command.get("arguments"), timeout=10)
                except RunError as exc:
                    failed.append(command["execute"])
                    log.warning("failover: %s (continuing)", exc)
                if command["execute"] == how.get("promoted_after") and promoted is None:
                    promoted, promoted_at = elapsed_ms(t0), datetime.now(UTC)
            took = elapsed_ms(t0)
            promoted, promoted_at = promoted or took, promoted_at or datetime.now(UTC)
            status = await self._wait_running()
            mode = (await self._execute("query-colo-status"))["mode"]
            self.role, self.alone, self.colo_active = "primary", True, False
            self._save_state(role="primary", failover={
                "time": promoted_at.isoformat(timespec="milliseconds"),
                "reason": reason, "from_role": was, "took_ms": round(promoted, 1),
                "script_ms": round(took, 1), "failed_commands": failed,
            })  # fmt: skip
            self._report(urgent=True, role="primary", colo=mode, alone=True)
            sd_notify(STATUS=f"primary (alone) after failover: {reason}")
            log.warning(
                "failover done: serving alone after %.0f ms (script %.0f ms), VM %s, COLO mode %s",
                promoted, took, status, mode,
            )  # fmt: skip
            return {
                "ok": True,
                "took_ms": round(promoted, 1),
                "vm_status": status,
                "colo_mode": mode,
            }

    async def _wait_running(self, timeout: float = 5) -> str:
        """The VM's run state once it leaves "colo" (a checkpoint the COLO thread finishes
        after x-colo-lost-heartbeat), or whatever it is after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = (await self._execute("query-status"))["status"]
            if status != "colo" or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.01)
