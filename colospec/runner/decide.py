"""The failover decision, as a pure function of what this runner knows right now.

Kept free of I/O so every row of the decision table is unit-tested. Rules:
- our own QEMU gone: tell the peer at once and stop (nothing here to protect);
- the peer's runner says its QEMU died, or the peer's host refuses connections to its
  QEMU: act at once (no heartbeat timeout needed);
- silence on every path for the whole budget: the peer host is lost; act — unless the
  peer's QEMU still answers a probe (only its runner died; it will be restarted);
- only the replication path lost while the peer still speaks on another path: the
  primary drops its secondary and keeps serving; the secondary never promotes (that
  would make two primaries);
- a secondary whose primary serves alone stops its now stale QEMU ("fence").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ActionKind = Literal["none", "failover", "fence", "exit"]


@dataclass(frozen=True)
class Situation:
    role: str  # "primary" | "secondary" (current, after any failover)
    colo_active: bool  # query-colo-status mode is primary/secondary
    own_qemu_alive: bool
    peer_qemu: str | None  # the peer's own report: "running", "dead", ... (None: never heard)
    peer_alone: bool  # the peer reports it serves alone (it failed over)
    peer_probe: str | None  # recent probe of the peer's QEMU: "alive", "dead", "unreachable"
    paths: tuple[str, ...]  # every configured heartbeat path
    alive_paths: tuple[str, ...]  # paths the peer was heard on within the budget
    watching_for_s: float  # time since watching began
    budget_s: float  # interval × missed


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str = ""


def decide(s: Situation) -> Action:
    if not s.own_qemu_alive:
        return Action("exit", "this host's QEMU is gone")
    if not s.colo_active:
        return Action("none")  # already alone: nothing left to fail over
    if s.peer_qemu == "dead":
        return Action("failover", "the peer's runner reports its QEMU died")
    if s.peer_probe == "dead":
        return Action("failover", "the peer's host refuses connections to its QEMU: it is gone")
    if s.peer_alone and s.role == "secondary":
        return Action("fence", "the primary dropped this secondary and serves alone")
    if not s.alive_paths:
        if s.watching_for_s < s.budget_s:
            return Action("none")  # give a just-started watch one full budget
        if s.peer_probe == "alive":
            return Action("none", "the peer's runner is silent but its QEMU answers: waiting")
        if s.peer_probe is None:
            return Action("none")  # a probe is under way: a loaded host's heartbeats run late
        return Action(
            "failover",
            f"no heartbeat from the peer on any path ({', '.join(s.paths)}) "
            f"for {s.budget_s * 1000:.0f} ms, and its QEMU does not answer",
        )
    if "replication" in s.paths and "replication" not in s.alive_paths:
        others = ", ".join(s.alive_paths)
        if s.peer_probe != "unreachable":
            # Heartbeats queue behind checkpoint traffic on a busy link; a link that still
            # carries a connection to the peer's QEMU is not lost.
            return Action("none")
        if s.role == "primary":
            return Action(
                "failover", f"replication link lost (peer still heard on {others}): drop it"
            )
        return Action("none", f"replication link lost, primary alive on {others}: not promoting")
    return Action("none")
