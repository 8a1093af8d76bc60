"""Heartbeats between the two runners of a pair, over every path the plan names.

Each runner sends a small JSON datagram to its peer on each path every interval, and
at once whenever its own state changes (so "my QEMU just died" reaches the peer in
well under a millisecond instead of after missed heartbeats). The peer counts as
lost on a path after `missed` intervals without a datagram there.

Two paths (the replication network and the LAN) let a secondary tell "the primary is
dead" from "only the replication link is cut": only the first justifies promotion.
Every datagram is authenticated and checked for replay (hbauth.py); anything else is
counted and dropped, never acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from colospec.runner.hbauth import ReplayGuard, seal, unseal

log = logging.getLogger("colospec.heartbeat")
# 2: every report carries the sender's view (hears, role, colo, alone, epoch, rank).
PROTOCOL = 2
IP_FREEBIND = 15  # linux/in.h; Python's socket module lacks the name
REJECT_LOG_EVERY_S = 10.0  # a flood of forged datagrams makes one log line per period


@dataclass(frozen=True)
class HeartbeatPath:
    name: str  # "replication" or "lan"
    local: str  # address to bind on this host
    peer: str  # the peer runner's address on this path


@dataclass
class PeerState:
    last_seen: dict[str, float] = field(default_factory=dict)  # path -> monotonic time
    report: dict[str, Any] = field(default_factory=dict)  # the peer's latest report
    report_at: float | None = None  # when the latest report arrived


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: Heartbeat, path: HeartbeatPath):
        self.owner, self.path = owner, path
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data: bytes, addr):
        self.owner._received(self.path, data, addr)

    def error_received(self, exc: Exception):
        # ICMP errors for an unreachable peer: expected while it is down.
        log.debug("%s path: %s", self.path.name, exc)


class Heartbeat:
    def __init__(
        self,
        pair: str,
        me: str,
        paths: list[HeartbeatPath],
        port: int,
        interval_ms: int,
        missed: int,
        key: bytes,
        on_peer_update: Callable[[], None] | None = None,
    ):
        self.pair, self.me, self.paths, self.port, self.key = pair, me, paths, port, key
        self.interval = interval_ms / 1000
        self.timeout = self.interval * missed
        self.on_peer_update = on_peer_update
        self.peer = PeerState()
        self.report: dict[str, Any] = {}
        self._seq = 0
        self._boot = os.urandom(6).hex()  # tells a restarted peer's seq 1 from a stale one
        self._endpoints: list[_Endpoint] = []
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._warned_version = False
        self._guard = ReplayGuard()
        self.rejected = 0  # datagrams dropped as unauthentic or replayed
        self._rejected_since_log, self._logged_at = 0, float("-inf")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for path in self.paths:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Bind even before the address is configured (a link still coming up).
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((path.local, self.port))
            _, proto = await loop.create_datagram_endpoint(
                lambda p=path: _Endpoint(self, p), sock=sock
            )
            self._endpoints.append(proto)
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for ep in self._endpoints:
            if ep.transport:
                ep.transport.close()
        self._endpoints.clear()

    def update(self, urgent: bool = False, **fields: Any) -> None:
        """Change what this runner reports; urgent changes go out immediately."""
        self.report.update(fields)
        if urgent:
            self.send()

    def send(self) -> None:
        self._seq += 1
        message = {
            "v": PROTOCOL, "pair": self.pair, "from": self.me, "boot": self._boot, "seq": self._seq,
            "ts": time.time(),  # the receiver's replay window
            # This runner's view of the peer travels with every heartbeat, so a one-way
            # loss is seen by both sides.
            "hears": self.alive_paths(),
        }  # fmt: skip
        data = seal(
            self.key, json.dumps({**self.report, **message}, separators=(",", ":")).encode()
        )
        for ep in self._endpoints:
            if ep.transport:
                try:
                    ep.transport.sendto(data, (ep.path.peer, self.port))
                except OSError as exc:
                    log.debug("%s path: send failed: %s", ep.path.name, exc)

    def path_alive(self, name: str) -> bool:
        seen = self.peer.last_seen.get(name)
        return seen is not None and time.monotonic() - seen < self.timeout

    def alive_paths(self) -> list[str]:
        return [p.name for p in self.paths if self.path_alive(p.name)]

    def longest_path_silence(self) -> float:
        """Seconds since the peer was last heard on its quietest path (inf if never)."""
        now = time.monotonic()
        return max(now - self.peer.last_seen.get(p.name, float("-inf")) for p in self.paths)

    def silence(self) -> float:
        """Seconds since the peer was last heard on any path (inf if never)."""
        if not self.peer.last_seen:
            return float("inf")
        return time.monotonic() - max(self.peer.last_seen.values())

    async def changed(self, timeout: float) -> None:
        """Wait until a peer datagram arrives or timeout passes."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _received(self, path: HeartbeatPath, data: bytes, addr) -> None:
        payload = unseal(self.key, data)
        if payload is None:
            self._reject(path, addr, "not signed with this pair's key")
            return
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict) or msg.get("pair") != self.pair or msg.get("from") == self.me:
            return
        if msg.get("v") != PROTOCOL:
            if not self._warned_version:
                log.warning("ignoring %s's heartbeats: protocol %s, this runner speaks %s — "
                            "run the same colospec on both hosts", msg.get("from"), msg.get("v"),
                            PROTOCOL)  # fmt: skip
                self._warned_version = True
            return
        if addr[0] != path.peer:
            self._reject(path, addr, "signed, but from another address than the peer's")
            return
        try:
            why = self._guard.fresh(path.name, str(msg["boot"]), int(msg["seq"]), float(msg["ts"]))
        except (KeyError, TypeError, ValueError):
            why = "incomplete"
        if why:
            self._reject(path, addr, why)
            return
        self.peer.last_seen[path.name] = time.monotonic()
        old = self.peer.report
        if old.get("boot") == msg.get("boot") and old.get("seq", 0) >= msg.get("seq", 0):
            return  # the same report (or an older one) arriving over the other path
        self.peer.report, self.peer.report_at = msg, time.monotonic()
        self._changed.set()
        if self.on_peer_update:
            self.on_peer_update()

    def _reject(self, path: HeartbeatPath, addr, why: str) -> None:
        self.rejected += 1
        self._rejected_since_log += 1
        now = time.monotonic()
        if now - self._logged_at >= REJECT_LOG_EVERY_S:
            log.warning("dropped %d heartbeat datagram(s) on the %s path, the latest from %s: %s",
                        self._rejected_since_log, path.name, addr[0], why)  # fmt: skip
            self._rejected_since_log, self._logged_at = 0, now

    async def _run(self) -> None:
        while True:
            self.send()
            await asyncio.sleep(self.interval)
