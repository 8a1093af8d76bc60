"""The OCF actions of a colospec pair's resource agent, as decisions over one node's runner.

Pacemaker runs the pair as a promotable clone: one instance per host, promoted where the
guest is served. The pair's own runners decide failover (in milliseconds); Pacemaker
supervises (in seconds). So the agent never makes Pacemaker's view lead the runner's:

- monitor reports *unpromoted* until Pacemaker has promoted this instance, even while the
  runner serves; it sets the promotion score from what the runner does, so Pacemaker
  promotes where the guest already runs (a monitor answering "promoted" unasked makes
  Pacemaker mark the instance failed and recover it);
- promote acknowledges that the runner serves, waiting for it (a secondary whose primary
  died takes over by itself); only if the runner stays a COLO secondary does it ask it to
  take over, because Pacemaker has then demoted or lost the other instance;
- demote stops the runner (a COLO primary cannot become a secondary in place) and starts
  a fresh one that joins the peer as its secondary once the peer serves;
- start clears what an earlier instance left (the promoted mark) and starts the runner.

Pure: every effect goes through a Node (node.py is the real one; the tests fake it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

# OCF return codes (Pacemaker Explained, "OCF Return Codes").
OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_ARGS = 2
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7
OCF_RUNNING_PROMOTED = 8
OCF_FAILED_PROMOTED = 9

# Promotion scores: where the guest runs wins by far; an in-sync COLO secondary comes next
# (it could take over); anything else (joining, starting) must not be promoted.
SCORE_SERVING = 100
SCORE_SECONDARY = 10
SCORE_NONE = 0

POLL_S = 0.2
# promote: how long a COLO secondary gets to take over by itself before it is asked to.
TAKE_OVER_GRACE_S = 2.0
SERVING_PHASES = ("alone", "resyncing", "switching")
DEMOTE_STOP_RESERVE_S = 8.0  # demote: time kept for stopping the runner after waiting


class Node(Protocol):
    """This node's part of the pair, as the agent acts on it."""

    def runner_alive(self) -> bool: ...
    def status(self) -> dict[str, Any] | None: ...  # the runner's status; None: no answer
    def spawn(self) -> None: ...  # start `colospec run --rejoin` in the background
    def spawned_exit(self) -> int | None: ...  # the exit code of the runner spawn() started
    def stop_runner(self, timeout_s: float) -> bool: ...  # SIGTERM; True once it is gone
    def take_over(self) -> dict[str, Any]: ...  # the runner's reply to a forced failover
    def promoted(self) -> bool: ...
    def set_promoted(self, promoted: bool) -> None: ...
    def set_score(self, score: int | None) -> None: ...  # None: remove it
    def log(self, message: str) -> None: ...


@dataclass
class Clock:
    """Time for the waiting actions; the tests replace it."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def quorum_lost(status: dict[str, Any]) -> bool:
    q = status.get("quorum")
    return isinstance(q, dict) and q.get("quorate") is False


def serving(status: dict[str, Any]) -> bool:
    """The runner serves the guest: COLO primary, or alone (and its node has quorum).

    From the runner's phase and role, never from QEMU's run state: the guest pauses at
    every checkpoint and while a re-protection attaches the peer, and stays served."""
    if quorum_lost(status):
        return False
    phase = status.get("phase")
    return phase in SERVING_PHASES or (phase == "colo" and status.get("role") == "primary")


def colo_secondary(status: dict[str, Any]) -> bool:
    return status.get("phase") == "colo" and status.get("role") == "secondary"


def score_for(status: dict[str, Any]) -> int:
    if serving(status):
        return SCORE_SERVING
    return SCORE_SECONDARY if colo_secondary(status) and status.get("protected") else SCORE_NONE


def monitor(node: Node) -> int:
    status = node.status()
    if status is None:
        if not node.runner_alive():
            node.set_score(None)
            return OCF_FAILED_PROMOTED if node.promoted() else OCF_NOT_RUNNING
        # Alive but not answering (busy starting): judge it at the next monitor.
        return OCF_RUNNING_PROMOTED if node.promoted() else OCF_SUCCESS
    if status.get("phase") == "failed":
        node.log(f"the runner failed (phase failed, role {status.get('role')})")
        return OCF_FAILED_PROMOTED if node.promoted() else OCF_ERR_GENERIC
    node.set_score(score_for(status))
    if not node.promoted():
        return OCF_SUCCESS
    if serving(status):
        return OCF_RUNNING_PROMOTED
    node.log(f"promoted, but the runner no longer serves (phase {status.get('phase')}, "
             f"role {status.get('role')}, quorum {status.get('quorum')})")  # fmt: skip
    return OCF_FAILED_PROMOTED


def start(node: Node, deadline: float, clock: Clock) -> int:
    node.set_promoted(False)  # an earlier instance's mark is not this one's
    if node.runner_alive():
        return OCF_SUCCESS
    return _spawn_answering(node, deadline, clock, "start")


def _spawn_answering(node: Node, deadline: float, clock: Clock, action: str) -> int:
    """Start a runner and wait until it answers: the next action must find it."""
    node.spawn()
    while clock.now() < deadline:
        if node.status() is not None:
            return OCF_SUCCESS
        if (code := node.spawned_exit()) is not None:
            node.log(f"{action}: the runner exited at once (exit code {code}); see its log")
            return OCF_ERR_GENERIC
        clock.sleep(POLL_S)
    node.log(f"{action}: the runner did not answer before the timeout")
    return OCF_ERR_GENERIC


def stop(node: Node, deadline: float, clock: Clock) -> int:
    node.set_promoted(False)
    node.set_score(None)
    if node.runner_alive() and not node.stop_runner(max(deadline - clock.now(), 1.0)):
        node.log("the runner did not stop before the stop timeout")
        return OCF_ERR_GENERIC
    return OCF_SUCCESS


def promote(node: Node, deadline: float, clock: Clock) -> int:
    if not node.runner_alive():
        node.log("promote: no runner runs here")
        return OCF_ERR_GENERIC
    asked = False
    secondary_since: float | None = None
    while clock.now() < deadline:
        status = node.status()
        if status is not None and serving(status):
            node.set_promoted(True)
            node.set_score(SCORE_SERVING)
            return OCF_SUCCESS
        if status is not None and colo_secondary(status) and not quorum_lost(status):
            secondary_since = secondary_since if secondary_since is not None else clock.now()
            if not asked and clock.now() - secondary_since >= TAKE_OVER_GRACE_S:
                # Pacemaker promotes here only once the other instance is demoted (stopped)
                # or outside the quorate partition: the primary no longer counts.
                reply = node.take_over()
                node.log(f"promote: asked the runner to take over: {reply}")
                asked = True
        else:
            secondary_since = None
        clock.sleep(POLL_S)
    node.log("promote: the runner did not serve before the promote timeout")
    return OCF_ERR_GENERIC


def demote(node: Node, deadline: float, clock: Clock) -> int:
    if not node.promoted():
        return OCF_SUCCESS  # never promoted, or demoted already: nothing serves by our word
    node.set_promoted(False)
    node.set_score(None)
    # A peer being copied to cannot take over yet: stopping now would leave no host that
    # serves and two disks of different epochs. Let the copy finish first (bounded).
    while clock.now() < deadline - DEMOTE_STOP_RESERVE_S:
        status = node.status()
        if status is None or status.get("phase") != "resyncing":
            break
        clock.sleep(POLL_S)
    if node.runner_alive() and not node.stop_runner(max(deadline - clock.now(), 1.0)):
        node.log("demote: the runner did not stop before the demote timeout")
        return OCF_ERR_GENERIC
    # A fresh runner joins the peer as its secondary once the peer serves.
    return _spawn_answering(node, deadline, clock, "demote")


def notify(node: Node, kind: str, operation: str) -> int:
    """Re-protection needs no command: the runner started on the peer asks to join, and
    a runner that serves alone copies its disk to it (rule peer-joins)."""
    if (kind, operation) == ("post", "start"):
        status = node.status()
        if status is not None and serving(status) and status.get("phase") != "colo":
            node.log("a peer instance started: it joins this host, which serves alone")
    return OCF_SUCCESS
