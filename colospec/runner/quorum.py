"""Under a cluster manager (plan.json's `cluster`): is this node in the quorate partition,
and is the peer's node still in its membership? Asked of corosync, polled.

The two runners alone cannot tell a dead peer from a partition that cut both their
networks; Corosync's quorum can. The rule table (machine.py) uses the view so that a
node outside the quorate partition never serves, and so that silence alone promotes no
one while the peer's node is still a member (Corosync has not yet decided which side
the peer is on).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("colospec.quorum")

QUORUM_TOOL = ("corosync-quorumtool", "-s")
POLL_S = 0.25
TOOL_TIMEOUT_S = 2.0
# A view older than this is not trusted: the tool hangs or fails when corosync is gone,
# and a node whose corosync is gone is in no quorate partition.
STALE_S = 2.0
# The peer's node counts as a member until it has been out for this long. A node cut off
# from the others loses quorum when they lose it (the same token timeout), then needs one
# poll and a QMP `stop` to pause its guest; this side acts on its absence only after that.
# (Fencing would make this unnecessary; without it, this is the guarantee.)
SETTLE_S = 1.0


@dataclass(frozen=True)
class ClusterView:
    quorate: bool
    peer_member: bool

    def report(self) -> dict[str, bool]:
        return {"quorate": self.quorate, "peer_member": self.peer_member}


# What a node whose cluster cannot be asked knows: no quorum, and nothing about the peer.
UNKNOWN = ClusterView(quorate=False, peer_member=True)


def parse_quorumtool(text: str, peer_node: str) -> ClusterView | None:
    """`corosync-quorumtool -s` output: "Quorate: Yes|No", then the membership table
    (Nodeid, Votes, Name). None if the text has no Quorate line."""
    quorate, members, in_table = None, set(), False
    for line in text.splitlines():
        words = line.split()
        if line.startswith("Quorate:"):
            quorate = words[-1] == "Yes"
        elif words[:3] == ["Nodeid", "Votes", "Name"]:
            in_table = True
        elif in_table and len(words) >= 3 and words[0].isdigit():
            members.add(words[2])
    return None if quorate is None else ClusterView(quorate, peer_node in members)


class QuorumWatch:
    def __init__(self, peer_node: str, on_change: Callable[[], None]):
        self.peer_node, self.on_change = peer_node, on_change
        self._view: ClusterView | None = None
        self._at = 0.0
        self._peer_left_at: float | None = None  # when corosync first showed it gone
        self._task: asyncio.Task | None = None

    def view(self) -> ClusterView:
        now = time.monotonic()
        if self._view is None or now - self._at > STALE_S:
            return UNKNOWN
        left = self._peer_left_at
        if not self._view.peer_member and (left is None or now - left < SETTLE_S):
            return dataclasses.replace(self._view, peer_member=True)
        return self._view

    def _record(self, view: ClusterView) -> None:
        self._view, self._at = view, time.monotonic()
        if view.peer_member:
            self._peer_left_at = None
        elif self._peer_left_at is None:
            self._peer_left_at = self._at

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="quorum")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def ask(self) -> ClusterView | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *QUORUM_TOOL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
        except OSError:
            return None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), TOOL_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        return parse_quorumtool(out.decode(errors="replace"), self.peer_node)

    async def _poll(self) -> None:
        before = None
        while True:
            if self._peer_left_at is not None:
                self.on_change()  # the settle time may have passed: decide again
            view = await self.ask()
            if view is not None:
                self._record(view)
            now = self.view()
            if now != before:
                log.warning("cluster: %s, the peer's node %s %s", "quorate" if now.quorate
                            else "NOT quorate (never serves)", self.peer_node,
                            "is a member" if now.peer_member else "left the membership")  # fmt: skip
                before = now
                self.on_change()
            await asyncio.sleep(POLL_S)
