"""The runner's rule table, row by row: each case is one situation and the row it must hit.

A case names the row it expects; the last test checks that every row of RULES is hit by
some case, so a new row comes with its test.
"""

from __future__ import annotations

import dataclasses

import pytest

from colospec.runner.machine import (
    RULES,
    Act,
    Evidence,
    PeerView,
    Phase,
    decide,
    peer_wins,
    protected,
)
from colospec.runner.quorum import ClusterView

PEER_SECONDARY = PeerView(
    qemu="running", role="secondary", colo="secondary", alone=False, epoch=0, rank=0,
    hears=("replication", "lan"),
)  # fmt: skip
PEER_PRIMARY = dataclasses.replace(PEER_SECONDARY, role="primary", colo="primary")
PEER_ALONE = dataclasses.replace(PEER_PRIMARY, colo="none", alone=True, epoch=1, rank=0)
PEER_JOINING = dataclasses.replace(PEER_SECONDARY, colo=None, joining=True, epoch=0)


def colo(role: str = "primary", **changes) -> Evidence:
    """A healthy COLO host of that role, one budget into watching, hearing both paths."""
    base = Evidence(
        phase=Phase.COLO, role=role, epoch=0, rank=0, own_qemu="running",
        colo_exit_error=False, replication_bad=False, checkpoint_stalled=False,
        peer_deaf=False, secondary_silent=False, stalled=False, watching_for_s=5.0, budget_s=0.3,
        paths=("replication", "lan"), heard=("replication", "lan"),
        peer=PEER_SECONDARY if role == "primary" else PEER_PRIMARY,
        stale=False, peer_fresh=True, break_unwitnessed=False, paused=False, pending_take_over=False,
        pending_drop=False, probe=None,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


SILENT = {"heard": ()}
QUORATE = ClusterView(quorate=True, peer_member=True)
NO_QUORUM = ClusterView(quorate=False, peer_member=True)
PEER_GONE = ClusterView(quorate=True, peer_member=False)

CASES = [
    # (id, evidence, expected rule, expected act)
    ("healthy primary", colo("primary"), "", Act.NONE),
    ("healthy secondary", colo("secondary"), "", Act.NONE),
    ("own qemu gone", colo(own_qemu="gone"), "own-qemu-gone", Act.EXIT),
    ("own qemu gone while alone", colo(phase=Phase.ALONE, own_qemu="gone"), "own-qemu-gone", Act.EXIT),
    ("own qemu hung", colo("secondary", own_qemu="hung"), "own-qemu-hung", Act.KILL_OWN),
    ("own qemu hung while serving alone: no one else could serve",
     colo(phase=Phase.ALONE, own_qemu="hung"), "own-qemu-hung-alone", Act.HOLD),
    ("own qemu hung while re-protecting (a blocking NBD connect)",
     colo(phase=Phase.RESYNCING, own_qemu="hung"), "own-qemu-hung-alone", Act.HOLD),
    ("secondary took over while this primary was away",
     colo("primary", peer=PEER_ALONE), "peer-took-over", Act.FENCE),
    ("primary dropped this secondary",
     colo("secondary", peer=dataclasses.replace(PEER_PRIMARY, alone=True, epoch=1, rank=1)),
     "primary-dropped-us", Act.FENCE),
    ("both alone, the peer newer",
     colo(phase=Phase.ALONE, epoch=1, rank=1, peer=dataclasses.replace(PEER_ALONE, epoch=2)),
     "peer-serves-newer", Act.FENCE),
    ("both alone, same epoch, the peer was primary",
     colo(phase=Phase.ALONE, epoch=1, rank=0, peer=dataclasses.replace(PEER_ALONE, rank=1)),
     "peer-serves-newer", Act.FENCE),
    ("both alone, this host outranks the peer",
     colo(phase=Phase.ALONE, epoch=1, rank=1, peer=PEER_ALONE), "", Act.NONE),
    ("starting while the peer serves alone",
     colo(phase=Phase.WAITING_PEER, peer=PEER_ALONE), "peer-serves-while-starting", Act.FENCE),
    ("stalled runner waits for fresh evidence",
     colo("secondary", stalled=True, probe="unreachable", **SILENT), "self-stalled", Act.HOLD),
    ("a takeover announced before the runner stopped is finished",
     colo("secondary", pending_take_over=True), "resume-take-over", Act.TAKE_OVER),
    ("the primary's runner reports its QEMU died",
     colo("secondary", peer=dataclasses.replace(PEER_PRIMARY, qemu="dead")),
     "peer-qemu-died", Act.TAKE_OVER),
    ("the secondary's runner reports its QEMU died",
     colo("primary", peer=dataclasses.replace(PEER_SECONDARY, qemu="dead")),
     "peer-qemu-died", Act.DROP),
    ("replication child failed a write", colo("primary", replication_bad=True),
     "replication-child-failed", Act.DROP),
    ("COLO stream broken, primary", colo("primary", colo_exit_error=True),
     "colo-stream-broken", Act.DROP),
    ("COLO stream broken, nothing from the secondary since",
     colo("primary", colo_exit_error=True, peer_fresh=False),
     "break-awaiting-word", Act.HOLD),
    ("replication child failed, nothing from the secondary since",
     colo("primary", replication_bad=True, peer_fresh=False),
     "break-awaiting-word", Act.HOLD),
    ("stream broke unwitnessed, the secondary silent: pause",
     colo("primary", colo_exit_error=True, peer_fresh=False, break_unwitnessed=True, heard=()),
     "break-unwitnessed", Act.PAUSE),
    ("paused, still no word", colo("primary", colo_exit_error=True, peer_fresh=False,
                                   break_unwitnessed=True, heard=(), paused=True),
     "paused-awaiting-word", Act.HOLD),
    ("paused, then the secondary's word: not serving", colo("primary", colo_exit_error=True,
     break_unwitnessed=True, paused=True), "colo-stream-broken", Act.DROP),
    ("paused, then the secondary's word: it serves", colo("primary", colo_exit_error=True,
     break_unwitnessed=True, paused=True, peer=PEER_ALONE), "peer-took-over", Act.FENCE),
    ("stream broken and the primary silent: never promoted",
     colo("secondary", colo_exit_error=True, probe="unreachable", heard=()),
     "stream-broken-silent", Act.HOLD),
    ("a secondary that serves alone at a lower epoch still stops a COLO primary",
     colo("primary", epoch=5, rank=1, peer=PEER_ALONE), "peer-took-over", Act.FENCE),
    ("COLO stream broken and the primary's port refuses",
     colo("secondary", colo_exit_error=True, probe="dead"),
     "stream-broken-port-refused", Act.TAKE_OVER),
    ("stream broken while the primary ran on: stale",
     colo("secondary", colo_exit_error=True, probe="dead", stale=True),
     "stale-secondary", Act.FENCE),
    ("silence, just started watching", colo("secondary", watching_for_s=0.1, **SILENT),
     "silence-just-started", Act.NONE),
    ("silence, probe under way", colo("secondary", **SILENT), "silence-probe-pending", Act.NONE),
    ("silence, the peer's QEMU answers", colo("secondary", probe="alive", **SILENT),
     "silence-qemu-answers", Act.HOLD),
    ("silence, refused, COLO stream intact (a firewall)",
     colo("secondary", probe="dead", **SILENT), "silence-refused-stream-alive", Act.HOLD),
    ("silence, the primary's host unreachable", colo("secondary", probe="unreachable", **SILENT),
     "peer-host-lost", Act.TAKE_OVER),
    ("silence, refused and stream broken",
     colo("secondary", probe="dead", colo_exit_error=True, **SILENT),
     "stream-broken-port-refused", Act.TAKE_OVER),
    ("silence, the secondary's host unreachable", colo("primary", probe="unreachable", **SILENT),
     "peer-host-lost", Act.DROP),
    ("silence, the secondary refuses", colo("primary", probe="dead", **SILENT),
     "peer-host-lost", Act.DROP),
    ("the secondary is deaf on the replication link", colo("primary", peer_deaf=True),
     "replication-deaf-one-way", Act.DROP),
    ("replication silent, LAN alive, secondary unreachable",
     colo("primary", heard=("lan",), probe="unreachable"), "replication-lost", Act.DROP),
    ("replication silent, LAN alive, secondary's QEMU answers",
     colo("primary", heard=("lan",), probe="alive"), "", Act.NONE),
    ("replication silent, LAN alive: the secondary never promotes",
     colo("secondary", heard=("lan",), probe="unreachable"), "replication-lost", Act.HOLD),
    ("checkpoints stalled", colo("primary", checkpoint_stalled=True),
     "checkpoints-stalled", Act.DROP),
    ("a drop cut short while still in COLO mode is finished",
     colo("primary", pending_drop=True), "resume-drop", Act.DROP),
    ("a drop cut short, but the secondary serves by now: stand down instead",
     colo("primary", pending_drop=True, peer=PEER_ALONE), "peer-took-over", Act.FENCE),
    ("a drop cut short is finished only after a look",
     colo("primary", pending_drop=True, stalled=True), "self-stalled", Act.HOLD),
    ("the secondary's guest is silent", colo("primary", secondary_silent=True),
     "secondary-silent", Act.DROP),
    ("stream broken, primary heard and running", colo("secondary", colo_exit_error=True),
     "stream-broken-primary-alive", Act.HOLD),
    ("a refused probe alone never promotes while heartbeats arrive",
     colo("secondary", probe="dead"), "", Act.NONE),
    ("alone and unchallenged", colo(phase=Phase.ALONE, epoch=1, rank=1, peer=None), "", Act.NONE),
    ("the primary asks for a switchover",
     colo("secondary", peer=dataclasses.replace(PEER_PRIMARY, switchover=True)),
     "switchover-requested", Act.TAKE_OVER),
    ("a switchover asked by an unheard primary is not acted on",
     colo("secondary", peer=dataclasses.replace(PEER_PRIMARY, switchover=True), **SILENT,
          probe="alive"), "silence-qemu-answers", Act.HOLD),
    ("a stale secondary never takes over, even when asked",
     colo("secondary", stale=True, peer=dataclasses.replace(PEER_PRIMARY, switchover=True)),
     "stale-secondary", Act.FENCE),
    ("switching, the secondary announces it serves: stand down",
     colo("primary", phase=Phase.SWITCHING, peer=PEER_ALONE), "peer-took-over", Act.FENCE),
    ("switching, checkpoints stalled: no drop (it would resume the guest beside the new one)",
     colo("primary", phase=Phase.SWITCHING, checkpoint_stalled=True, colo_exit_error=True),
     "", Act.NONE),
    ("switching, own QEMU gone", colo("primary", phase=Phase.SWITCHING, own_qemu="gone"),
     "own-qemu-gone", Act.EXIT),
    # ----- re-protection
    ("a fresh peer asks to join the host serving alone",
     colo(phase=Phase.ALONE, epoch=1, peer=PEER_JOINING), "peer-joins", Act.RESYNC),
    ("a joining peer that served later than this host: both served, no copy",
     colo(phase=Phase.ALONE, epoch=1, peer=dataclasses.replace(PEER_JOINING, epoch=2)),
     "joining-peer-newer", Act.HOLD),
    ("a joining peer that is not heard is not copied to",
     colo(phase=Phase.ALONE, epoch=1, peer=PEER_JOINING, **SILENT), "", Act.NONE),
    ("a joining peer whose QEMU died is not copied to",
     colo(phase=Phase.ALONE, epoch=1, peer=dataclasses.replace(PEER_JOINING, qemu="dead")),
     "", Act.NONE),
    ("a paused primary waits for its secondary's word before any copy",
     colo(phase=Phase.ALONE, epoch=1, peer=PEER_JOINING, paused=True), "", Act.NONE),
    ("re-protecting, the copy runs on", colo(phase=Phase.RESYNCING, epoch=1, peer=PEER_JOINING),
     "", Act.NONE),
    ("re-protecting while the peer serves alone at a newer epoch",
     colo(phase=Phase.RESYNCING, epoch=1, peer=dataclasses.replace(PEER_ALONE, epoch=2)),
     "peer-serves-newer", Act.FENCE),
    ("re-protecting, own QEMU gone", colo(phase=Phase.RESYNCING, own_qemu="gone"),
     "own-qemu-gone", Act.EXIT),
    ("joining: the peer serving alone is expected",
     colo("secondary", phase=Phase.JOINING, peer=PEER_ALONE), "", Act.NONE),
    # ----- under a cluster manager (README, Many pairs: Pacemaker)
    ("in the quorate partition, with the peer: nothing changes",
     colo("primary", cluster=QUORATE), "", Act.NONE),
    ("a killed primary's host refuses: take over at once, membership or not",
     colo("secondary", cluster=QUORATE, colo_exit_error=True, probe="dead", **SILENT),
     "stream-broken-port-refused", Act.TAKE_OVER),
    ("without quorum a secondary never takes over, even on its primary's word",
     colo("secondary", cluster=NO_QUORUM, peer=dataclasses.replace(PEER_PRIMARY, qemu="dead")),
     "no-quorum", Act.HOLD),
    ("a primary that lost quorum and hears no peer pauses its guest",
     colo("primary", cluster=NO_QUORUM, probe="unreachable", **SILENT), "no-quorum", Act.PAUSE),
    ("serving alone, quorum lost, peer silent: pause",
     colo(phase=Phase.ALONE, epoch=1, peer=None, cluster=NO_QUORUM, **SILENT), "no-quorum",
     Act.PAUSE),
    ("paused without quorum: stays paused, never drops the secondary",
     colo("primary", cluster=NO_QUORUM, paused=True, paused_no_quorum=True, checkpoint_stalled=True,
          **SILENT), "no-quorum", Act.HOLD),
    ("a primary without quorum that still hears its secondary keeps COLO, never drops it",
     colo("primary", cluster=NO_QUORUM, checkpoint_stalled=True), "no-quorum", Act.HOLD),
    ("quorum back, the secondary heard and not serving: the guest runs on",
     colo("primary", cluster=QUORATE, paused=True, paused_no_quorum=True), "quorum-regained",
     Act.RESUME),
    ("quorum back, the secondary serves at a newer epoch: stand down",
     colo("primary", cluster=QUORATE, paused=True, paused_no_quorum=True, peer=PEER_ALONE),
     "peer-took-over", Act.FENCE),
    ("silent peer still in the membership: wait for corosync, even with stalled checkpoints",
     colo("primary", cluster=QUORATE, probe="unreachable", checkpoint_stalled=True, **SILENT),
     "silence-peer-member", Act.HOLD),
    ("silent primary still in the membership: no takeover yet",
     colo("secondary", cluster=QUORATE, probe="unreachable", colo_exit_error=True, **SILENT),
     "silence-peer-member", Act.HOLD),
    ("silent primary dropped by corosync from this quorate partition: take over",
     colo("secondary", cluster=PEER_GONE, probe="unreachable", colo_exit_error=True, **SILENT),
     "peer-left-cluster", Act.TAKE_OVER),
    ("silent secondary dropped by corosync: drop it",
     colo("primary", cluster=PEER_GONE, probe="unreachable", **SILENT), "peer-left-cluster",
     Act.DROP),
]  # fmt: skip


@pytest.mark.parametrize("evidence, rule, act", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_row(evidence, rule, act):
    decision = decide(evidence)
    assert (decision.rule, decision.act) == (rule, act), decision.reason
    if act not in (Act.NONE,):
        assert decision.reason, "every decision that acts or holds says why"


def test_every_rule_row_has_a_case():
    hit = {c[2] for c in CASES}
    assert {r.name for r in RULES} <= hit


@pytest.mark.parametrize(
    "act, phase", [(Act.TAKE_OVER, Phase.ALONE), (Act.DROP, Phase.ALONE),
                   (Act.FENCE, Phase.FENCED), (Act.EXIT, Phase.FAILED),
                   (Act.RESYNC, Phase.RESYNCING)],
)  # fmt: skip
def test_actions_lead_to_their_phase(act, phase):
    evidence = next(c[1] for c in CASES if c[3] is act)
    assert decide(evidence).next_phase is phase


def test_the_secondary_never_takes_over_while_it_hears_a_running_primary():
    # Whatever else it sees: a refused probe, a broken stream, a lost replication path.
    for probe in (None, "alive", "dead", "unreachable"):
        for exit_error in (False, True):
            for heard in (("replication", "lan"), ("lan",), ("replication",)):
                e = colo("secondary", probe=probe, colo_exit_error=exit_error, heard=heard,
                         stale=exit_error)  # fmt: skip
                assert decide(e).act is not Act.TAKE_OVER, (probe, exit_error, heard)


def test_epoch_order_is_total_and_antisymmetric():
    for a in range(3):
        for b in range(3):
            for ra in (0, 1):
                for rb in (0, 1):
                    me = colo(phase=Phase.ALONE, epoch=a, rank=ra,
                              peer=dataclasses.replace(PEER_ALONE, epoch=b, rank=rb))  # fmt: skip
                    them = colo(phase=Phase.ALONE, epoch=b, rank=rb,
                                peer=dataclasses.replace(PEER_ALONE, epoch=a, rank=ra))  # fmt: skip
                    if (a, ra) != (b, rb):
                        assert peer_wins(me) != peer_wins(them)  # exactly one stops


def test_protected_only_with_every_fact():
    assert protected(colo("primary")) and protected(colo("secondary"))
    for change in ({"colo_exit_error": True}, {"replication_bad": True},
                   {"checkpoint_stalled": True}, {"secondary_silent": True}, {"heard": ()},
                   {"phase": Phase.ALONE}, {"phase": Phase.RESYNCING}, {"phase": Phase.JOINING},
                   {"phase": Phase.SWITCHING},
                   {"phase": Phase.WAITING_PEER}, {"peer": None}, {"peer": PEER_ALONE},
                   {"own_qemu": "hung"}):  # fmt: skip
        assert not protected(colo("primary", **change)), change
