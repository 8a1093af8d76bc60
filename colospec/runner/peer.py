"""The peer as this runner knows it: heartbeats on every path, its reported view, and probes
of its QEMU.

A probe connects to the peer QEMU's NBD port (probe.py): it is asked when heartbeats run
late (at most once per interval) or when this host's COLO stream broke, and its answer
counts for one heartbeat budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from colospec.runner.heartbeat import Heartbeat, HeartbeatPath
from colospec.runner.machine import REPLICATION_PATH, PeerView, ProbeResult
from colospec.runner.probe import probe_qemu

log = logging.getLogger("colospec.run")

LATE_AFTER_INTERVALS = 1.5  # a late datagram or two is normal; later than this, probe


class PeerLink:
    def __init__(
        self,
        plan: dict[str, Any],
        pair: str,
        host: str,
        key: bytes,
        on_update: Callable[[], None],
    ):
        hb = plan["heartbeat"]
        self.name = plan["peer"]["name"]
        self.interval = hb["interval_ms"] / 1000
        self.budget = self.interval * hb["missed"]
        self.heartbeat = Heartbeat(
            pair=pair,
            me=host,
            paths=[HeartbeatPath(p["name"], p["local"], p["peer"]) for p in hb["paths"]],
            port=hb["port"],
            interval_ms=hb["interval_ms"],
            missed=hb["missed"],
            key=key,
            on_peer_update=self._updated,
        )
        self.target = hb["peer_qemu_probe"]
        self.on_update = on_update
        self.probe: tuple[float, ProbeResult] | None = None  # (time, result) of the latest
        self.deaf_since: float | None = None  # the peer's reports lack the replication path
        self._probe_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.heartbeat.start()

    async def stop(self) -> None:
        if self._probe_task:
            self._probe_task.cancel()
        await self.heartbeat.stop()

    def report(self, urgent: bool = False, **fields: Any) -> None:
        """Change what this runner tells the peer; urgent changes go out at once."""
        self.heartbeat.update(urgent=urgent, **fields)

    # ----- what is known of the peer ---------------------------------------------------------

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.heartbeat.paths)

    def heard(self) -> tuple[str, ...]:
        return tuple(self.heartbeat.alive_paths())

    def silent_for(self) -> float:
        """Seconds since the peer was last heard on any path (inf: never)."""
        return self.heartbeat.silence()

    def raw(self) -> dict[str, Any]:
        return self.heartbeat.peer.report

    def reported_since(self, moment: float | None) -> bool:
        """A report of the peer's arrived after that (monotonic) moment."""
        at = self.heartbeat.peer.report_at
        return moment is not None and at is not None and at > moment

    def view(self) -> PeerView | None:
        r = self.heartbeat.peer.report
        if not r:
            return None
        return PeerView(
            qemu=str(r.get("qemu", "starting")),
            role=str(r.get("role", "")),
            colo=r.get("colo"),
            alone=bool(r.get("alone")),
            epoch=int(r.get("epoch", 0)),
            rank=int(r.get("rank", 0)),
            hears=tuple(r.get("hears", ())),
            colo_error=bool(r.get("colo_error")),
            joining=bool(r.get("join")) and r.get("phase") == "joining",
            switchover=bool(r.get("switchover")),
        )

    def deaf_for(self) -> float:
        """Seconds the peer's reports have lacked the replication path (0 if they have it)."""
        return 0.0 if self.deaf_since is None else time.monotonic() - self.deaf_since

    def _updated(self) -> None:
        hears = self.heartbeat.peer.report.get("hears", ())
        if REPLICATION_PATH in self.paths and REPLICATION_PATH not in hears:
            self.deaf_since = self.deaf_since or time.monotonic()
        else:
            self.deaf_since = None
        self.on_update()

    # ----- probes ----------------------------------------------------------------------------

    def probe_result(self) -> ProbeResult | None:
        if self.probe and time.monotonic() - self.probe[0] < self.budget:
            return self.probe[1]
        return None

    def maybe_probe(self, urgent: bool = False) -> None:
        """Probe the peer's QEMU if heartbeats run late (or urgent), at most once an interval."""
        if self._probe_task and not self._probe_task.done():
            return
        late = self.heartbeat.longest_path_silence() > LATE_AFTER_INTERVALS * self.interval
        recent = self.probe and time.monotonic() - self.probe[0] < self.interval
        if not (late or urgent) or recent:
            return
        self._probe_task = asyncio.create_task(self._probe(), name="probe")

    async def probe_now(self) -> ProbeResult:
        return await probe_qemu(self.target["address"], self.target["port"], self.budget)

    async def _probe(self) -> None:
        # A QEMU busy loading a checkpoint can take a moment to greet.
        result = await probe_qemu(self.target["address"], self.target["port"], self.budget / 2)
        if not self.probe or self.probe[1] != result:
            log.info("probe of %s's QEMU at %s:%s: %s", self.name, *self.target.values(), result)
        self.probe = (time.monotonic(), result)
        self.on_update()
