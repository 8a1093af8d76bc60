"""The watcher's actions with a fake QEMU and a fake peer: what it sends QEMU, in which
order, what it records before the first irreversible command, and what it tells the peer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from colospec.runner.diskstate import DiskState
from colospec.runner.errors import EXIT_FENCED, EXIT_QEMU_GONE, RunError
from colospec.runner.hoststate import HostState, StateStore
from colospec.runner.machine import Act, Decision, PeerView, Phase, decide
from colospec.runner.watch import Watcher

SCRIPTS = {
    "qmp/90-failover-as-primary.json": [
        {"execute": "yank", "arguments": {"instances": [{"type": "block-node", "node-name": "nbd0"}]}},
        {"execute": "x-blockdev-change", "arguments": {"parent": "colo-disk0", "child": "children.1"}},
        {"execute": "x-colo-lost-heartbeat"},
    ],
    "qmp/91-failover-as-secondary.json": [
        {"execute": "nbd-server-stop"},
        {"execute": "x-colo-lost-heartbeat"},
        {"execute": "announce-self", "arguments": {"initial": 50}},
    ],
}  # fmt: skip
PLAN = {
    "watch": {"checkpoint_delay_ms": 300, "replication_node": "replication0"},
    "failover": {
        "as_primary": {"script": "qmp/90-failover-as-primary.json",
                       "promoted_after": "x-colo-lost-heartbeat"},
        "as_secondary": {"script": "qmp/91-failover-as-secondary.json",
                         "promoted_after": "announce-self"},
    },
}  # fmt: skip


class Arts:
    def __init__(self, state_dir: Path):
        self.plan = {**PLAN, "state_dir": str(state_dir)}

    def script(self, rel: str):
        return SCRIPTS[rel]


class Process:
    def __init__(self):
        self.alive, self.pid, self.killed = True, 4242, False

    def kill(self):
        self.alive, self.killed = False, True

    async def wait_exit(self, timeout):
        return not self.alive

    def exit_status(self):
        return "signal SIGKILL"


class Qemu:
    """Answers QMP like QEMU 7.2; records every command with the state file at that moment."""

    def __init__(self, run_dir: Path, *, stuck_in_colo: bool = False):
        self.run_dir, self.stuck_in_colo = run_dir, stuck_in_colo
        self.process = Process()
        self.sent: list[tuple[str, dict]] = []
        self.mode = "secondary"
        self.in_colo, self.colo_exit_error, self.colo_exit_at = True, False, None
        self.replication_error, self.last_checkpoint = None, None

    def hung(self):
        return False

    def broke_at(self):
        return self.colo_exit_at

    async def execute(self, name, arguments=None, timeout=30):
        state = json.loads((self.run_dir / "state.json").read_text())
        disk = self.run_dir / "state" / "disk.json"
        state["disk"] = json.loads(disk.read_text()) if disk.exists() else None
        self.sent.append((name, state))
        if name == "x-colo-lost-heartbeat" and not self.stuck_in_colo:
            self.mode = "none"
        if name == "quit":
            self.process.alive = False
        return {
            "query-status": {"status": "running"},
            "query-colo-status": {"mode": self.mode, "reason": "none"},
            "query-block-jobs": [],
        }.get(name, {})


class Peer:
    budget, interval, name, paths = 0.3, 0.1, "peer", ("replication", "lan")

    def __init__(self):
        self.reports: list[tuple[bool, dict]] = []
        self.probe = None

    def report(self, urgent=False, **fields):
        self.reports.append((urgent, fields))

    def view(self):
        return PeerView(qemu="running", role="primary", colo="primary", alone=False, epoch=2,
                        rank=1, hears=self.paths)  # fmt: skip

    def heard(self):
        return self.paths

    def deaf_for(self):
        return 0.0

    heartbeat = SimpleNamespace(peer=SimpleNamespace(last_seen={}))  # PeerLink.heartbeat

    def probe_result(self):
        return None

    def reported_since(self, moment):
        return False

    def maybe_probe(self, urgent=False):
        pass


def watcher(tmp_path: Path, role: str, **qemu_kw) -> tuple[Watcher, Qemu, Peer, StateStore]:
    store = StateStore(tmp_path, HostState(qemu_pid=4242, phase=Phase.COLO, role=role))
    store.state.save(tmp_path)
    qemu, peer = Qemu(tmp_path, **qemu_kw), Peer()
    qemu.mode = role
    arts = Arts(tmp_path / "state")
    w = Watcher(arts, qemu, peer, store, wake=asyncio.Event(), stopping=lambda: False)
    return w, qemu, peer, store


def test_drop_runs_the_primary_script_in_order_after_recording_the_intent(tmp_path):
    w, qemu, peer, store = watcher(tmp_path, "primary")
    done = asyncio.run(w.failover(Act.DROP, "test"))
    assert done["ok"] and done["colo_mode"] == "none"
    script = [c["execute"] for c in SCRIPTS["qmp/90-failover-as-primary.json"]]
    assert [name for name, _ in qemu.sent[: len(script)]] == script
    yank_state = qemu.sent[0][1]
    # the epoch a failover serves at is recorded before its first command, counted after
    assert (yank_state["intent"], yank_state["intent_epoch"], yank_state["epoch"]) == ("drop", 3, 0)
    assert (store.state.phase, store.state.intent, store.state.epoch) == (Phase.ALONE, None, 3)
    assert store.state.rank == 1
    assert store.state.last_failover["from_role"] == "primary"
    # a primary announces serving alone only once it does (its secondary then stands down)
    alone = [i for i, (_, f) in enumerate(peer.reports) if f.get("alone")]
    assert alone and all(peer.reports[i][0] for i in alone)
    assert not any(f.get("alone") for _, f in peer.reports[: alone[0]])


def test_take_over_announces_before_the_first_command(tmp_path):
    w, qemu, peer, store = watcher(tmp_path, "secondary")
    asyncio.run(w.failover(Act.TAKE_OVER, "test"))
    script = [c["execute"] for c in SCRIPTS["qmp/91-failover-as-secondary.json"]]
    assert [name for name, _ in qemu.sent[: len(script)]] == script
    assert qemu.sent[0][1]["intent"] == "take-over"
    first = peer.reports[0]
    assert first[0] and first[1]["alone"] is True and first[1]["epoch"] == 3
    assert (store.state.phase, store.state.role) == (Phase.ALONE, "primary")
    # durable before the first command: this disk takes writes at epoch 3 from now on
    assert qemu.sent[0][1]["disk"] == {"epoch": 3, "stale": False}


def test_a_failover_that_leaves_colo_on_is_retried_then_reported_failed(tmp_path):
    w, qemu, _, store = watcher(tmp_path, "secondary", stuck_in_colo=True)
    with pytest.raises(RunError, match="failover did not complete"):
        asyncio.run(w.failover(Act.TAKE_OVER, "test"))
    assert [n for n, _ in qemu.sent].count("x-colo-lost-heartbeat") == 2
    assert store.state.phase is Phase.FAILED


def test_a_restarted_runner_resumes_a_failover_its_predecessor_began(tmp_path):
    w, qemu, _, store = watcher(tmp_path, "secondary")
    store.update(intent="take-over", intent_epoch=3)
    qemu.mode = "none"  # it had begun: x-colo-lost-heartbeat was done
    w.stopping = lambda: store.state.phase is Phase.ALONE  # stop once resumed
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(w.run(look_first=True))
    assert "x-colo-lost-heartbeat" in [n for n, _ in qemu.sent]
    assert (store.state.phase, store.state.epoch) == (Phase.ALONE, 3)  # no second bump


def test_fence_stops_the_vm_before_quitting_and_records_it(tmp_path):
    w, qemu, peer, store = watcher(tmp_path, "primary")
    code = asyncio.run(w.carry_out(Decision(Act.FENCE, "peer-took-over", "test", Phase.FENCED)))
    assert code == EXIT_FENCED
    assert [n for n, _ in qemu.sent] == ["stop", "quit"]
    assert qemu.sent[0][1]["intent"] == "fence"
    assert (store.state.phase, store.state.intent) == (Phase.FENCED, None)
    # the peer serves on: this disk is stale before the guest even stops
    assert qemu.sent[0][1]["disk"] == {"epoch": 0, "stale": True}
    assert peer.reports[-1] == (True, {"qemu": "dead", "role": "fenced", "phase": "fenced",
                                       "alone": False, "protected": False})  # fmt: skip


def test_a_hung_qemu_is_killed_and_the_peer_told(tmp_path):
    w, qemu, peer, _ = watcher(tmp_path, "primary")
    code = asyncio.run(w.carry_out(Decision(Act.KILL_OWN, "own-qemu-hung", "t", Phase.FAILED)))
    assert code == EXIT_QEMU_GONE and qemu.process.killed
    assert peer.reports[-1] == (True, {"qemu": "dead"})


def test_evidence_marks_a_secondary_stale_when_its_primary_ran_on(tmp_path):
    w, qemu, peer, _ = watcher(tmp_path, "secondary")
    qemu.colo_exit_error = True
    assert w.evidence().stale is False  # the primary has not said anything since
    peer.view = lambda: PeerView(qemu="running", role="primary", colo="primary", alone=False,
                                 epoch=0, rank=0, hears=(), colo_error=True)  # fmt: skip
    assert w.evidence().stale is True


def test_a_drop_cut_short_in_colo_mode_is_kept_and_finished_after_a_look(tmp_path):
    """Its first commands (yank, the replication child's removal) leave COLO mode on: the
    intent stays, and rule resume-drop finishes it once the runner has looked."""
    w, qemu, _, store = watcher(tmp_path, "primary")
    store.update(intent="drop", intent_epoch=1)
    w.stopping = lambda: True  # stop at the first look: nothing done before it
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(w.run(look_first=True))
    assert "x-colo-lost-heartbeat" not in [n for n, _ in qemu.sent]
    assert (store.state.intent, store.state.intent_epoch) == ("drop", 1)
    w.stall_at -= 10  # one budget later: the look is done
    e = w.evidence()
    assert e.pending_drop and decide(e).rule == "resume-drop"
    asyncio.run(w.carry_out(decide(e)))
    assert "x-colo-lost-heartbeat" in [n for n, _ in qemu.sent]
    assert (store.state.phase, store.state.intent, store.state.epoch) == (Phase.ALONE, None, 1)


def test_a_disk_record_that_cannot_be_written_never_stops_a_failover(tmp_path):
    w, _, peer, store = watcher(tmp_path, "secondary")
    (tmp_path / "state").write_text("a file where the directory should be")
    done = asyncio.run(w.failover(Act.TAKE_OVER, "test"))
    assert done["ok"] and store.state.phase is Phase.ALONE
    assert w.unsaved_disk == DiskState(3)
    # the peer hears of the new epoch all the same
    assert {"epoch": 3, "stale": False} in [f.get("disk") for _, f in peer.reports]
    (tmp_path / "state").unlink()
    w._disk(w.unsaved_disk)  # what every tick of the watch loop does until it works
    assert w.unsaved_disk is None
    assert DiskState.load(tmp_path / "state") == DiskState(3)
