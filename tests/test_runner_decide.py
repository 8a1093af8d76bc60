"""The failover decision table, row by row."""

from __future__ import annotations

import pytest

from colospec.runner.decide import Situation, decide

BASE = dict(
    role="secondary", colo_active=True, own_qemu_alive=True, peer_qemu="running",
    peer_alone=False, peer_probe=None, paths=("replication", "lan"),
    alive_paths=("replication", "lan"), watching_for_s=10.0, budget_s=0.3,
)  # fmt: skip


def act(**changes):
    return decide(Situation(**{**BASE, **changes}))


def test_healthy_pair_does_nothing():
    assert act().kind == "none"
    assert act(role="primary").kind == "none"


def test_own_qemu_gone_means_exit():
    assert act(own_qemu_alive=False).kind == "exit"


def test_nothing_to_do_when_already_alone():
    assert act(colo_active=False, alive_paths=(), peer_qemu="dead").kind == "none"


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_peer_reports_its_qemu_died(role):
    a = act(role=role, peer_qemu="dead")
    assert a.kind == "failover" and "reports its QEMU died" in a.reason


def test_refused_probe_means_the_peer_qemu_is_gone():
    a = act(peer_probe="dead")
    assert a.kind == "failover" and "refuses connections" in a.reason


def test_total_silence_fails_over_once_the_probe_finds_nobody():
    assert act(alive_paths=(), watching_for_s=0.1, peer_probe="unreachable").kind == "none"
    assert act(alive_paths=(), peer_probe=None).kind == "none"  # the probe is still out
    a = act(alive_paths=(), peer_probe="unreachable")
    assert a.kind == "failover" and "300 ms" in a.reason


def test_silent_runner_with_a_live_qemu_is_waited_for():
    a = act(alive_paths=(), peer_probe="alive")
    assert a.kind == "none" and "runner is silent" in a.reason


def test_cut_replication_link_primary_drops_secondary_secondary_holds():
    cut = dict(alive_paths=("lan",), peer_probe="unreachable")
    primary = act(role="primary", **cut)
    assert primary.kind == "failover" and "replication link lost" in primary.reason
    secondary = act(role="secondary", **cut)
    assert secondary.kind == "none" and "not promoting" in secondary.reason


@pytest.mark.parametrize("probe", [None, "alive"])
def test_late_replication_heartbeats_on_a_working_link_change_nothing(probe):
    assert act(role="primary", alive_paths=("lan",), peer_probe=probe).kind == "none"


def test_secondary_fences_itself_when_the_primary_serves_alone():
    assert act(peer_alone=True).kind == "fence"
    assert act(role="primary", peer_alone=True).kind == "none"


def test_single_path_pair_treats_replication_silence_as_total():
    a = act(paths=("replication",), alive_paths=(), peer_probe="unreachable")
    assert a.kind == "failover"
