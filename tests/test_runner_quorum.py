"""runner/quorum.py: corosync-quorumtool's output read, and what an unknown view means."""

from __future__ import annotations

from colospec.runner import quorum
from colospec.runner.quorum import UNKNOWN, ClusterView, QuorumWatch, parse_quorumtool

# corosync 3.1.7, node n1 of three, as the cluster tests see it
QUORATE = """Quorum information
------------------
Date:             Wed Dec  2 00:09:05 2026
Quorum provider:  corosync_votequorum
Nodes:            3
Node ID:          1
Ring ID:          1.9
Quorate:          Yes

Votequorum information
----------------------
Expected votes:   3
Highest expected: 3
Total votes:      3
Quorum:           2
Flags:            Quorate

Membership information
----------------------
    Nodeid      Votes Name
         1          1 n1 (local)
         2          1 n2
         3          1 n3
"""
ISOLATED = """Quorum information
------------------
Quorate:          No

Membership information
----------------------
    Nodeid      Votes Name
         1          1 n1 (local)
"""


def test_quorate_with_the_peer():
    assert parse_quorumtool(QUORATE, "n2") == ClusterView(quorate=True, peer_member=True)


def test_a_peer_outside_the_membership():
    assert parse_quorumtool(QUORATE, "n4") == ClusterView(quorate=True, peer_member=False)


def test_isolated():
    assert parse_quorumtool(ISOLATED, "n2") == ClusterView(quorate=False, peer_member=False)


def test_the_local_node_is_matched_by_name():
    assert parse_quorumtool(ISOLATED, "n1").peer_member


def test_no_answer_is_no_view():
    assert parse_quorumtool("Cannot initialize QUORUM service\n", "n2") is None
    assert parse_quorumtool("", "n2") is None


def test_unknown_or_stale_views_never_let_a_node_serve():
    watch = QuorumWatch("n2", lambda: None)
    assert watch.view() == UNKNOWN and not UNKNOWN.quorate and UNKNOWN.peer_member
    watch._record(ClusterView(True, True))
    assert watch.view() == ClusterView(True, True)
    watch._at -= quorum.STALE_S + 0.1
    assert watch.view() == UNKNOWN


def test_the_peer_counts_as_gone_only_once_it_has_been_out_for_the_settle_time():
    watch = QuorumWatch("n2", lambda: None)
    watch._record(ClusterView(True, False))
    assert watch.view() == ClusterView(True, True)  # the cut-off side is still pausing
    watch._peer_left_at -= quorum.SETTLE_S
    assert watch.view() == ClusterView(True, False)
    watch._record(ClusterView(True, False))  # still out: the first time counts
    assert watch.view() == ClusterView(True, False)
    watch._record(ClusterView(True, True))
    watch._record(ClusterView(True, False))
    assert watch.view() == ClusterView(True, True)  # back, then out again: a new wait
