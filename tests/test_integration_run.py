"""`colospec run` on a real COLO pair: two namespaces as hosts, Debian's QEMU, real QMP.

The guest is firmware only under KVM (this machine's KVM runs SeaBIOS but no OS), so
QEMU's COLO machinery (NBD replication, colo-compare, checkpoints, failover) is real;
a Linux guest under TCG comes with the proof-of-protection tests.
Deadlines in these tests guard against hangs; speed is measured by bench/, not here.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from netns import ip
from pairlab import PairLab

pytestmark = pytest.mark.integration


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


def qmp(lab: PairLab, h: str, execute: str, **arguments) -> object:
    reply = lab.ask(h, {"cmd": "qmp", "execute": execute, "arguments": arguments or None})
    assert reply["ok"], reply
    return reply["return"]


def checkpoints_after(lab: PairLab, h: str, n: int) -> None:
    lab.wait_for(f"{n} more checkpoints on {h}", lambda: status(lab, h)["checkpoints"] >= n)


@pytest.fixture
def pair():
    with PairLab(checkpoint_delay_ms=300) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        yield lab


def test_pair_reaches_colo_and_checkpoints(pair):
    for h, role in (("a", "primary"), ("b", "secondary")):
        s = pair.status(h)
        assert set(s) == {"role", "colo_mode", "vm_status", "qemu_pid", "peer", "last_failover",
                          "runner", "phase", "protected", "epoch",
                          "heartbeats_rejected", "last_resync", "disk", "quorum"}  # fmt: skip
        assert s["runner"] == "running"
        assert (s["phase"], s["protected"], s["epoch"]) == ("colo", True, 0)
        assert s["heartbeats_rejected"] == 0
        assert s["quorum"] is None  # no cluster manager
        assert s["disk"] == {"epoch": 0, "stale": False}
        assert (s["role"], s["colo_mode"]) == (role, role)
        assert s["vm_status"] in ("running", "colo")  # "colo" while a checkpoint is taken
        assert s["qemu_pid"] == pair.qemu_pid(h)
        assert s["peer"]["reachable"] is True
        assert sorted(s["peer"]["paths"]) == ["lan", "replication"]
        assert s["last_failover"] is None
    start = status(pair, "a")["checkpoints"]
    checkpoints_after(pair, "a", start + 2)
    checkpoints_after(pair, "b", 2)
    assert qmp(pair, "a", "query-migrate")["status"] == "colo"


def wait_promoted(lab: PairLab, h: str = "b") -> dict:
    lab.wait_for(f"{h} promoted", lambda: status(lab, h)["role"] == "primary"
                 and status(lab, h)["colo_mode"] == "none", timeout=30)  # fmt: skip
    return lab.status(h)


def test_kill_primary_qemu_promotes_secondary_and_keeps_the_data(pair):
    # Write through the primary's block layer, then let a checkpoint carry it over.
    qmp(pair, "a", "human-monitor-command",
        **{"command-line": 'qemu-io colo-disk0 "write -P 0x5a 0 64k"'})  # fmt: skip
    before = status(pair, "a")["checkpoints"]
    checkpoints_after(pair, "a", before + 1)
    assert "wrote 65536/65536 bytes" in pair.log_text("a")

    pair.kill_qemu("a")
    s = wait_promoted(pair)
    assert (s["role"], s["colo_mode"], s["vm_status"]) == ("primary", "none", "running")
    assert s["last_failover"]["from_role"] == "secondary"
    assert s["last_failover"]["failed_commands"] == []
    assert "QEMU" in s["last_failover"]["reason"]

    qmp(pair, "b", "human-monitor-command",
        **{"command-line": 'qemu-io colo-disk0 "read -P 0x5a 0 64k"'})  # fmt: skip
    pair.wait_for("the read-back", lambda: "read 65536/65536 bytes" in pair.log_text("b"))
    assert "Pattern verification failed" not in pair.log_text("b")
    # The old primary's runner saw its QEMU die and stopped; status shows no QEMU.
    pair.wait_for("runner a exits", lambda: pair.procs["a"].poll() is not None)
    assert pair.procs["a"].returncode == 3
    assert pair.status("a")["qemu_pid"] is None


def test_losing_the_primary_host_promotes_the_secondary(pair):
    pair.kill_host("a")  # every process in the primary's namespace
    s = wait_promoted(pair)
    assert (s["colo_mode"], s["vm_status"]) == ("none", "running")
    # Promotion beats the heartbeat budget (the refused probe says enough); the peer
    # shows as unreachable once its last heartbeat is older than the budget.
    pair.wait_for("a unreachable", lambda: status(pair, "b")["peer"]["reachable"] is False)


def test_kill_secondary_qemu_primary_drops_it_and_keeps_running(pair):
    pair.kill_qemu("b")
    pair.wait_for("a drops its secondary", lambda: status(pair, "a")["colo_mode"] == "none")
    s = pair.status("a")
    assert (s["role"], s["vm_status"]) == ("primary", "running")
    assert s["last_failover"]["from_role"] == "primary"
    assert s["last_failover"]["failed_commands"] == []
    # Still serving: the VM keeps running and answers QMP.
    time.sleep(0.5)
    assert qmp(pair, "a", "query-status")["status"] == "running"


def test_cut_replication_link_primary_serves_and_secondary_stands_down(pair):
    for h in ("a", "b"):
        ip("link", "set", "rep0", "down", netns=pair.ns[h])
    pair.expect_running.discard("b")  # the stale secondary stops on its own
    pair.wait_for("a serves alone", lambda: status(pair, "a")["colo_mode"] == "none", 30)
    assert status(pair, "a")["vm_status"] == "running"
    pair.wait_for("b stands down", lambda: pair.procs["b"].poll() is not None, 30)
    assert pair.procs["b"].returncode == 4  # fenced: it never became a second primary
    assert "promot" not in pair.log_text("b").lower().replace("not promoting", "")
    assert pair.status("b")["qemu_pid"] is None


def test_operator_failover_refuses_two_primaries_then_works_on_the_primary(pair):
    refused = pair.ask("b", {"cmd": "failover"})
    assert not refused["ok"] and "two primaries" in refused["error"]
    assert status(pair, "b")["colo_mode"] == "secondary"
    done = pair.ask("a", {"cmd": "failover"})
    assert done["ok"] and done["colo_mode"] == "none" and done["vm_status"] == "running"
    pair.expect_running.discard("b")
    pair.wait_for("b stands down", lambda: pair.procs["b"].poll() is not None, 30)
    assert pair.procs["b"].returncode == 4


def test_restarted_runner_adopts_its_qemu_and_the_pair_stays_protected(pair):
    pid = pair.qemu_pid("b")
    pair.expect_running.discard("b")
    pair.procs["b"].kill()  # the runner, not QEMU
    pair.procs["b"].wait()
    time.sleep(1.0)  # longer than the heartbeat budget: a's probe must see b's QEMU alive
    assert status(pair, "a")["colo_mode"] == "primary"
    pair.start("b")
    pair.wait_for("b's runner back", lambda: status(pair, "b")["colo_mode"] == "secondary")
    assert pair.qemu_pid("b") == pid
    assert "adopted QEMU pid" in pair.log_text("b")
    before = status(pair, "a")["checkpoints"]
    checkpoints_after(pair, "a", before + 2)
    pair.kill_qemu("a")  # and it still fails over
    wait_promoted(pair)


def test_sigterm_stops_qemu_cleans_up_and_the_peer_takes_over(pair):
    pair.expect_running.discard("a")
    pid = pair.qemu_pid("a")
    pair.procs["a"].send_signal(signal.SIGTERM)
    assert pair.procs["a"].wait(timeout=30) == 0
    assert not os.path.exists(f"/proc/{pid}")
    tap = f"tap-{pair.name}"
    assert ip("link", "show", tap, netns=pair.ns["a"], check=False).returncode != 0
    assert ip("link", "show", tap, netns=pair.ns["b"]).returncode == 0
    wait_promoted(pair)


def test_a_failing_qmp_command_is_reported_not_fatal(pair):
    reply = pair.ask("a", {"cmd": "qmp", "execute": "object-del", "arguments": {"id": "nope"}})
    assert reply["ok"] is False
    assert "object-del failed" in reply["error"] and "nope" in reply["error"]
    assert status(pair, "a")["colo_mode"] == "primary"  # the runner carries on
