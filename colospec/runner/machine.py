"""The runner's state machine: phases, the evidence a runner has, and one table of rules.

Pure: no I/O, no clock. The watch loop gathers Evidence, decide() walks RULES in order and
returns the first row that matches the current phase and role; every row has a test.

What the rows protect, in this order:
1. never two hosts serving the guest: a secondary takes over only on strong evidence that
   its primary no longer serves (its runner says its QEMU died; or silence on every path
   for the whole budget and its host unreachable, or refusing with the COLO stream broken);
   a host that learns its peer serves alone with a newer epoch stops its own QEMU;
2. never lose a write the guest was told is done: a primary whose replication child failed
   drops its secondary before a checkpoint can make that secondary's disk lose the write;
3. never claim protection it does not have: every reason COLO no longer protects (a broken
   stream, stalled checkpoints, a deaf link) ends COLO on the primary, which is always safe:
   the primary keeps serving and its secondary stands down.

Re-protection (README, Re-protection): a host serving alone copies its disk to a peer that
asks to join (peer-joins: ALONE -> RESYNCING -> COLO, or back to ALONE on any failure); the
joiner is JOINING until both say COLO, and never serves before. A primary SWITCHING has
stopped its guest for a planned switchover: only its own QEMU's death and the secondary's
announcement that it serves (peer-took-over) move it.

Epochs: both hosts start at 0; a host that starts serving alone takes max(own, peer's) + 1
and announces it before it acts. Two hosts that both serve alone compare (epoch, rank),
rank 1 for the host that was COLO primary before: the lower one stops its QEMU.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from colospec.runner.quorum import ClusterView

Role = Literal["primary", "secondary"]
ProbeResult = Literal["alive", "dead", "unreachable"]
REPLICATION_PATH = "replication"


class Phase(enum.Enum):
    STARTING = "starting"  # bring-up steps before waiting on the peer
    WAITING_PEER = "waiting-peer"  # bring-up blocked on the peer (not protected)
    COLO = "colo"  # both QEMUs in COLO mode
    ALONE = "alone"  # serving without a partner (after a failover)
    RESYNCING = "resyncing"  # serving alone, copying the disk to a peer that joins
    JOINING = "joining"  # a fresh QEMU joining, as secondary, a peer that serves alone
    SWITCHING = "switching"  # primary: guest stopped for a switchover, its secondary asked
    FENCED = "fenced"  # stood down: QEMU stopped because the peer serves
    FAILED = "failed"  # an error left this host without a defined part in the pair
    STOPPING = "stopping"  # operator's stop


class Act(enum.Enum):
    NONE = "none"
    HOLD = "hold"  # nothing to do, but say why (logged once)
    TAKE_OVER = "take-over"  # secondary: run the takeover script, serve alone
    DROP = "drop"  # primary: drop the secondary, serve alone
    FENCE = "fence"  # stop this host's QEMU: the peer serves
    KILL_OWN = "kill-own"  # this host's QEMU is hung: kill it, then exit
    PAUSE = "pause"  # primary: stop the guest (reversibly) until the secondary's word
    EXIT = "exit"  # this host's QEMU is gone: tell the peer, exit
    RESYNC = "resync"  # serving alone: copy the disk to the joining peer, start COLO
    RESUME = "resume"  # cont: the guest this runner paused for lack of quorum runs again


# Where each action leaves the runner.
NEXT_PHASE = {
    Act.TAKE_OVER: Phase.ALONE,
    Act.DROP: Phase.ALONE,
    Act.FENCE: Phase.FENCED,
    Act.KILL_OWN: Phase.FAILED,
    Act.EXIT: Phase.FAILED,
    Act.RESYNC: Phase.RESYNCING,
}


@dataclass(frozen=True)
class PeerView:
    """The peer runner's latest report (its own view, sent in every heartbeat)."""

    qemu: str  # "starting" | "running" | "dead"
    role: str  # its role: "primary" | "secondary" | "fenced"
    colo: str | None  # its QEMU's COLO mode: "primary" | "secondary" | "none" | None
    alone: bool  # it serves the guest without a partner
    epoch: int
    rank: int  # 1 if it was COLO primary when it started serving alone
    hears: tuple[str, ...]  # the heartbeat paths it hears this host on
    colo_error: bool = False  # its QEMU's COLO stream broke (it saw COLO_EXIT, reason error)
    joining: bool = False  # it asks to join this host as its secondary (a fresh QEMU)
    switchover: bool = False  # the primary stopped its guest for a planned role swap


@dataclass(frozen=True)
class Evidence:
    phase: Phase
    role: Role  # the COLO role; a host serving alone is "primary"
    epoch: int
    rank: int
    own_qemu: Literal["running", "gone", "hung"]
    colo_exit_error: bool  # this host's QEMU left COLO with reason "error"
    replication_bad: bool  # the primary's replication child reported an I/O error
    checkpoint_stalled: bool  # COLO on, but no checkpoint for far longer than the delay
    peer_deaf: bool  # the peer's reports have lacked the replication path for the budget
    secondary_silent: bool  # primary: its guest sends, the secondary's sends nothing
    stalled: bool  # this runner itself was not scheduled for longer than the budget
    watching_for_s: float
    budget_s: float
    paths: tuple[str, ...]  # every configured heartbeat path
    heard: tuple[str, ...]  # the paths the peer was heard on within the budget
    peer: PeerView | None  # None: not heard since this runner started
    # A secondary whose stream broke while its primary ran on (the primary said so, or this
    # runner did not watch the break): its disk may lack the primary's later writes.
    stale: bool
    # The peer's latest report arrived after this host's stream broke or its replication
    # child failed: what it says (alone or not) is news of after the break.
    peer_fresh: bool
    # The break came while this runner could not have heard a takeover announcement: it
    # was stalled or had just adopted its QEMU, or had not heard the peer for a budget.
    break_unwitnessed: bool
    paused: bool  # this runner paused its (primary) guest while it waits for that word
    pending_take_over: bool  # a takeover this host announced, interrupted before it began
    # A drop this host recorded, cut short while its QEMU is still in COLO mode: the drop
    # script's first commands (yank, the replication child's removal) leave COLO on.
    pending_drop: bool
    probe: ProbeResult | None  # a recent probe of the peer's QEMU (None: none, or under way)
    # Under a cluster manager (plan.json's cluster): this node's quorum and whether the
    # peer's node is in its membership (runner/quorum.py). None: no cluster manager.
    cluster: ClusterView | None = None
    paused_no_quorum: bool = False  # the guest is paused because this node lost quorum


@dataclass(frozen=True)
class Rule:
    name: str  # stable: logged with every decision, one test per row
    phases: frozenset[Phase]
    roles: frozenset[str]
    when: Callable[[Evidence], bool]
    act: Act
    why: Callable[[Evidence], str]


@dataclass(frozen=True)
class Decision:
    act: Act
    rule: str
    reason: str
    next_phase: Phase | None  # None: the phase stays


def peer_wins(e: Evidence) -> bool:
    """The peer serves alone and outranks this host (epoch, then former role)."""
    return e.peer is not None and e.peer.alone and (e.peer.epoch, e.peer.rank) > (e.epoch, e.rank)


def _silent(e: Evidence) -> bool:
    return not e.heard


def _joining(e: Evidence) -> bool:
    return (
        e.peer is not None and e.peer.joining and not e.peer.alone and e.peer.qemu != "dead"
        and bool(e.heard) and not e.paused
    )  # fmt: skip


def _no_quorum(e: Evidence) -> bool:
    return e.cluster is not None and not e.cluster.quorate


def _peer_left_cluster(e: Evidence) -> bool:
    """Corosync, in this quorate partition, has dropped the peer's node: it cannot serve."""
    return e.cluster is not None and e.cluster.quorate and not e.cluster.peer_member


def _paths(e: Evidence) -> str:
    return ", ".join(e.paths)


def _peer(e: Evidence, key: str, value: object) -> bool:
    return e.peer is not None and getattr(e.peer, key) == value


ACTIVE = frozenset({Phase.STARTING, Phase.WAITING_PEER, Phase.COLO, Phase.ALONE,
                    Phase.RESYNCING, Phase.JOINING, Phase.SWITCHING})  # fmt: skip
SERVING_ALONE = frozenset({Phase.ALONE, Phase.RESYNCING})
BOTH = frozenset({"primary", "secondary"})
COLO = frozenset({Phase.COLO})
P, S = frozenset({"primary"}), frozenset({"secondary"})

RULES: tuple[Rule, ...] = (
    # ----- this host's own QEMU, in every live phase
    Rule("own-qemu-gone", ACTIVE, BOTH, lambda e: e.own_qemu == "gone", Act.EXIT,
         lambda e: "this host's QEMU is gone"),
    # Serving alone, no peer could take the guest over: killing it would only lose it.
    Rule("own-qemu-hung-alone", SERVING_ALONE, BOTH, lambda e: e.own_qemu == "hung", Act.HOLD,
         lambda e: "this host's QEMU stopped answering QMP, and no peer could serve the guest "
                   "instead: waiting for it (an operator may kill it)"),
    Rule("own-qemu-hung", ACTIVE, BOTH, lambda e: e.own_qemu == "hung", Act.KILL_OWN,
         lambda e: "this host's QEMU stopped answering QMP: killing it so the peer can serve"),
    # ----- a peer that serves alone
    Rule("peer-took-over", frozenset({Phase.COLO, Phase.SWITCHING}), P,
         lambda e: _peer(e, "alone", True), Act.FENCE,
         lambda e: f"the secondary serves alone (epoch {e.peer.epoch}): it took over while "
                   "this host was unreachable, so this host stops serving"),
    Rule("primary-dropped-us", COLO, S, lambda e: _peer(e, "alone", True), Act.FENCE,
         lambda e: "the primary dropped this secondary and serves alone"),
    Rule("stale-secondary", COLO, S, lambda e: e.stale, Act.FENCE,
         lambda e: "the primary's stream or replication child broke (it said so, or it happened "
                   "while no runner watched here): this secondary's disk may lack its writes, "
                   "so it can never take over"),
    Rule("peer-serves-newer", SERVING_ALONE, BOTH, peer_wins, Act.FENCE,
         lambda e: f"both hosts serve alone; the peer's epoch {e.peer.epoch} "
                   f"(rank {e.peer.rank}) outranks this host's {e.epoch} (rank {e.rank})"),
    Rule("peer-serves-while-starting", frozenset({Phase.STARTING, Phase.WAITING_PEER}), BOTH,
         lambda e: _peer(e, "alone", True), Act.FENCE,
         lambda e: "the peer serves the guest alone: this host must not start a second one"),
    # ----- under a cluster manager: only the quorate partition serves (README, Many pairs)
    Rule("no-quorum", COLO, S, _no_quorum, Act.HOLD,
         lambda e: "this node is outside the cluster's quorate partition: it never takes over"),
    Rule("no-quorum", COLO | SERVING_ALONE, P,
         lambda e: _no_quorum(e) and not e.heard and not e.paused, Act.PAUSE,
         lambda e: "this node lost quorum and its peer is silent: the quorate partition may "
                   "promote the peer, so this guest is paused"),
    Rule("no-quorum", COLO | SERVING_ALONE, P, _no_quorum, Act.HOLD,
         lambda e: "this node is outside the cluster's quorate partition: it never serves "
                   "alone"),
    Rule("quorum-regained", COLO | SERVING_ALONE, P,
         lambda e: e.paused_no_quorum and (bool(e.heard) or _peer_left_cluster(e))
         and not peer_wins(e), Act.RESUME,
         lambda e: "quorum is back, and the peer does not serve: the guest runs on"),
    Rule("silence-peer-member", COLO, BOTH,
         lambda e: e.cluster is not None and _silent(e) and e.cluster.peer_member
         and e.probe != "dead", Act.HOLD,
         lambda e: "the peer is silent, but its node is still in the cluster's membership: "
                   "waiting for corosync to decide which side it is on"),
    Rule("peer-left-cluster", COLO, S, lambda e: _silent(e) and _peer_left_cluster(e),
         Act.TAKE_OVER,
         lambda e: "the primary is silent and corosync dropped its node from this quorate "
                   "partition: it cannot serve"),
    Rule("peer-left-cluster", COLO, P, lambda e: _silent(e) and _peer_left_cluster(e),
         Act.DROP,
         lambda e: "the secondary is silent and corosync dropped its node from this quorate "
                   "partition"),
    # ----- evidence gathered before this runner stalled is stale: look again first
    Rule("self-stalled", ACTIVE, BOTH, lambda e: e.stalled, Act.HOLD,
         lambda e: "this runner was not scheduled for longer than the heartbeat budget: "
                   "waiting one budget for fresh evidence before acting"),
    # ----- a takeover this host announced before its runner stopped: finish it
    Rule("resume-take-over", COLO, S, lambda e: e.pending_take_over, Act.TAKE_OVER,
         lambda e: "resuming the takeover this host announced before its runner stopped"),
    Rule("resume-drop", COLO, P, lambda e: e.pending_drop, Act.DROP,
         lambda e: "finishing the drop an earlier runner recorded: its first commands may "
                   "have removed the replication child already, so the secondary may lack "
                   "writes"),
    # ----- the peer's QEMU died, by its own runner's word
    Rule("peer-qemu-died", COLO, S, lambda e: _peer(e, "qemu", "dead"), Act.TAKE_OVER,
         lambda e: "the primary's runner reports its QEMU died"),
    Rule("peer-qemu-died", COLO, P, lambda e: _peer(e, "qemu", "dead"), Act.DROP,
         lambda e: "the secondary's runner reports its QEMU died"),
    # ----- a planned switchover: the primary stopped its guest and asks this secondary to
    # take over (`colospec switchover`); it stands down once this host announces it serves
    Rule("switchover-requested", COLO, S,
         lambda e: _peer(e, "switchover", True) and bool(e.heard), Act.TAKE_OVER,
         lambda e: "the primary asks for a switchover (its guest is stopped)"),
    # ----- what this host's own QEMU reports (primary). A secondary's takeover breaks the
    # stream and its export too: drop only on the secondary's own word after the break
    # that it does not serve (it would have said alone, and peer-took-over fenced us).
    Rule("replication-child-failed", COLO, P, lambda e: e.replication_bad and e.peer_fresh,
         Act.DROP, lambda e: "the replication child failed a write: the secondary's disk "
                             "misses it, so it must not be checkpointed or promoted"),
    Rule("colo-stream-broken", COLO, P, lambda e: e.colo_exit_error and e.peer_fresh,
         Act.DROP, lambda e: "the COLO stream to the secondary broke (COLO_EXIT, reason error)"),
    Rule("break-unwitnessed", COLO, P,
         lambda e: (e.replication_bad or e.colo_exit_error) and e.break_unwitnessed
         and not e.heard and not e.paused, Act.PAUSE,
         lambda e: "the COLO stream broke while this runner could not have heard a takeover, "
                   "and the secondary is silent: it may serve; pausing this guest until its "
                   "word (an operator may drop it: colospec failover)"),
    Rule("paused-awaiting-word", COLO, P, lambda e: e.paused and not e.peer_fresh, Act.HOLD,
         lambda e: "the guest stays paused until the secondary's next report"),
    Rule("break-awaiting-word", COLO, P,
         lambda e: (e.replication_bad or e.colo_exit_error) and bool(e.heard), Act.HOLD,
         lambda e: "the COLO stream or the replication child broke: waiting for the "
                   "secondary's next report (did it take over?)"),
    # ----- the COLO stream broke and the peer's QEMU port refuses: its QEMU is gone
    Rule("stream-broken-port-refused", COLO, S,
         lambda e: e.colo_exit_error and e.probe == "dead", Act.TAKE_OVER,
         lambda e: "the COLO stream broke and the primary's host refuses connections to its "
                   "QEMU: it is gone"),
    # ----- silence on every path
    Rule("silence-just-started", COLO, BOTH,
         lambda e: _silent(e) and e.watching_for_s < e.budget_s, Act.NONE, lambda e: ""),
    Rule("silence-probe-pending", COLO, BOTH, lambda e: _silent(e) and e.probe is None,
         Act.NONE, lambda e: ""),
    Rule("silence-qemu-answers", COLO, BOTH, lambda e: _silent(e) and e.probe == "alive",
         Act.HOLD, lambda e: "the peer's runner is silent but its QEMU answers: waiting"),
    Rule("silence-refused-stream-alive", COLO, S,
         lambda e: _silent(e) and e.probe == "dead" and not e.colo_exit_error, Act.HOLD,
         lambda e: "the primary is silent and refuses the probe, yet the COLO stream from its "
                   "QEMU is intact: a firewall rejecting the probe? not promoting"),
    Rule("stream-broken-silent", COLO, S, lambda e: _silent(e) and e.colo_exit_error,
         Act.HOLD, lambda e: "the COLO stream broke and the primary is silent: it may have "
                             "dropped this secondary and served on, so it is never promoted"),
    Rule("peer-host-lost", COLO, S, _silent, Act.TAKE_OVER,
         lambda e: f"no heartbeat from the primary on any path ({_paths(e)}) for "
                   f"{e.budget_s * 1000:.0f} ms, and its QEMU does not answer ({e.probe})"),
    Rule("peer-host-lost", COLO, P, _silent, Act.DROP,
         lambda e: f"no heartbeat from the secondary on any path ({_paths(e)}) for "
                   f"{e.budget_s * 1000:.0f} ms, and its QEMU does not answer ({e.probe})"),
    # ----- the replication link, from either side's view (the peer's view comes with it)
    Rule("replication-deaf-one-way", COLO, P,
         lambda e: REPLICATION_PATH in e.heard and e.peer_deaf, Act.DROP,
         lambda e: "the secondary does not hear this host on the replication link "
                   "(one-way loss): COLO cannot checkpoint"),
    Rule("replication-lost", COLO, P,
         lambda e: REPLICATION_PATH in e.paths and REPLICATION_PATH not in e.heard
         and e.probe == "unreachable", Act.DROP,
         lambda e: f"replication link lost (the secondary is still heard on "
                   f"{', '.join(e.heard)}): dropping it"),
    Rule("replication-lost", COLO, S,
         lambda e: REPLICATION_PATH in e.paths and REPLICATION_PATH not in e.heard,
         Act.HOLD, lambda e: f"replication link lost, primary alive on {', '.join(e.heard)}: "
                             "not promoting"),
    Rule("checkpoints-stalled", COLO, P, lambda e: e.checkpoint_stalled, Act.DROP,
         lambda e: "no checkpoint for far longer than the checkpoint delay: COLO no longer "
                   "protects"),
    Rule("secondary-silent", COLO, P, lambda e: e.secondary_silent, Act.DROP,
         lambda e: "the secondary's guest sends nothing while this host's guest does: its "
                   "NIC is silent (README, Known limits) and it protects nothing"),
    Rule("stream-broken-primary-alive", COLO, S, lambda e: e.colo_exit_error, Act.HOLD,
         lambda e: "the COLO stream broke; waiting for the primary's next report"),
    # ----- re-protection: a fresh QEMU asks to join the host that serves alone
    Rule("joining-peer-newer", frozenset({Phase.ALONE}), BOTH,
         lambda e: _joining(e) and e.peer.epoch > e.epoch, Act.HOLD,
         lambda e: f"the peer asks to join, but it served at epoch {e.peer.epoch}, later than "
                   f"this host's {e.epoch}: both served at once, and copying this disk over "
                   "its would lose its writes; an operator decides (README, Re-protection)"),
    Rule("peer-joins", frozenset({Phase.ALONE}), BOTH, _joining, Act.RESYNC,
         lambda e: "the peer's fresh QEMU asks to join: copying this disk to it and starting "
                   "COLO again"),
)  # fmt: skip


def decide(e: Evidence) -> Decision:
    for rule in RULES:
        if e.phase in rule.phases and e.role in rule.roles and rule.when(e):
            reason = rule.why(e)
            return Decision(rule.act, rule.name, reason, NEXT_PHASE.get(rule.act))
    return Decision(Act.NONE, "", "", None)


def protected(e: Evidence) -> bool:
    """Whether the pair protects the guest right now, from facts only."""
    return (
        e.phase is Phase.COLO
        and e.own_qemu == "running"
        and e.peer is not None
        and e.peer.qemu == "running"
        and e.peer.colo in ("primary", "secondary")
        and e.peer.colo != e.role
        and not e.peer.alone
        and bool(e.heard)
        and not (e.colo_exit_error or e.replication_bad or e.checkpoint_stalled)
        and not e.secondary_silent
    )
